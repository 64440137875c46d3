"""The measurements of `make demo-voco` (voco/demo.py runs them): the pretext on held-out volumes (v1 and v2),
the organ-patch probe under per-patch intensity jitter, and a per-voxel head on the frozen encoder.

Every function takes the pre-trained network and a `build(seed)` for the random-init one, so both arms see the
same crops, patches, folds and voxel draws.
"""

import numpy as np
import torch
import torch.nn.functional as F

from shared.demo import raw_segmentation, voxel_segmentation
from voco.losses import online_assign

LIVER = 6  # BTCV label value


# ------------------------------------------------------------------------------------------ pretext

def overlap_scores(predict, drawn):
    """(MAE between predicted and true overlap over every (random crop, base crop) pair, top-1 rate of the
    most-overlapping base crop) of `predict(random_crops, base_crops) -> S x K` over the drawn volumes."""
    errors, hits = [], []
    with torch.no_grad():
        for d in drawn:
            predicted = predict(d["image"], d["crops"]).double()
            errors.append((predicted - d["labels"]).abs().mean())
            hits.append((predicted.argmax(1) == d["labels"].argmax(1)).double().mean())
    return float(torch.stack(errors).mean()), float(torch.stack(hits).mean())


def v1_predictor(branch):
    """v1's overlap prediction: ReLU-cosine of the branch's embeddings of a random and a base crop, all crops of
    a volume in one batch (the head's BatchNorm uses that batch's statistics, as in pre-training)."""
    def predict(rand, bases):
        branch.train()  # batch statistics, as the pretext saw them; no gradient (overlap_scores)
        emb = branch(torch.cat([rand, bases]))
        return online_assign(emb[:len(rand)], emb[len(rand):])
    return predict


def v2_predictor(model):
    """v2's intra-volume prediction: ReLU-cosine of the student head's random-crop and the teacher head's
    base-crop embeddings of the shared backbone (VoCoV2.embed without its EMA update and dropout)."""
    def predict(rand, bases):
        model.eval()  # no feature dropout; the heads' BatchNorm keeps batch statistics (no running ones)
        emb = model.backbone(torch.cat([rand, bases]))
        return online_assign(model.student(emb)[:len(rand)], model.teacher(emb)[len(rand):])
    return predict


def pretext_scores(volumes, crops, pretrained, build, predictor, seeds):
    """Per seed, on held-out working volumes: the seed draws the crops (the same for both arms) and the
    random-init network (build(seed)). Returns {"mae_pretrained", "mae_random", "mae_zero", "top1_pretrained",
    "top1_random"} lists and "chance" (top-1 by chance) and "n_volumes"."""
    out = {k: [] for k in ("mae_pretrained", "mae_random", "mae_zero", "top1_pretrained", "top1_random")}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        drawn = [crops(v, rng) for v in volumes]
        for name, net in (("pretrained", pretrained), ("random", build(seed))):
            mae, top1 = overlap_scores(predictor(net), drawn)
            out[f"mae_{name}"].append(mae)
            out[f"top1_{name}"].append(top1)
        out["mae_zero"].append(float(np.mean([d["labels"].abs().mean() for d in drawn])))
    return {**out, "chance": 1.0 / crops.num_crops ** 2, "n_volumes": len(volumes)}


# -------------------------------------------------------------------------------------------- probe

def jitter_intensity(x, rng, scale=0.3, shift=0.2):
    """Per patch (first dim), one random contrast and brightness: x * a + b with a ~ U(1 - scale, 1 + scale),
    b ~ U(-shift, shift) on the [0, 1] intensity scale, clipped to [0, 1]; uint8 patches stay uint8 (0..255).
    Why: every organ of the sample CT has its own HU, so a patch's mean intensity names the organ and raw voxels
    need no encoder; after the jitter only shape, texture and context do."""
    n = len(x)
    shape = (n,) + (1,) * (x.dim() - 1)
    a = torch.from_numpy(rng.uniform(1 - scale, 1 + scale, n)).float().view(shape)
    b = torch.from_numpy(rng.uniform(-shift, shift, n)).float().view(shape)
    is_uint8 = x.dtype == torch.uint8
    y = ((x.float() / 255.0 if is_uint8 else x.float()) * a + b).clamp(0, 1)
    return (y * 255).round().to(torch.uint8) if is_uint8 else y


# ------------------------------------------------------------------------------ frozen-encoder head

def dense_features(branch, volume, size):
    """The frozen encoder's four finer maps (encoder1..4 of SwinUNETR: full, 1/2, 1/4, 1/8 resolution; 8F
    channels) upsampled to `size`, per voxel: 1 x X x Y x Z -> (voxels, 8F) float32, in the order of a
    (X, Y, Z) array's reshape(-1). The 1/32 map is left out: at 96x96x32 it is 3x3x1."""
    x = volume[None].float()
    with torch.no_grad():
        hs = branch.swinViT(x, getattr(branch, "normalize", True))
        maps = [branch.encoder1(x), branch.encoder2(hs[0]), branch.encoder3(hs[1]), branch.encoder4(hs[2])]
        up = [F.interpolate(m, size=tuple(size), mode="trilinear", align_corners=False) for m in maps]
    return torch.cat(up, 1)[0].flatten(1).T.numpy()


def mean_dice(pred, target):
    """Mean over volumes (first dim) of the Dice of boolean masks; 0 for an empty prediction of a present
    organ (no smoothing, so predicting nothing scores 0)."""
    pred, target = np.asarray(pred, bool), np.asarray(target) > 0
    inter = (pred & target).reshape(len(pred), -1).sum(1)
    total = pred.reshape(len(pred), -1).sum(1) + target.reshape(len(pred), -1).sum(1)
    return float(np.mean(np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)))


def standardize(train, test):
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def frozen_head_scores(train_volumes, train_labels, test_volumes, test_labels, pretrained, build, seeds,
                       max_samples=20000):
    """Liver segmentation by a per-voxel logistic head (shared.demo.voxel_segmentation) on frozen encoder features
    (dense_features, standardized), at half the working volume's resolution, trained on train_volumes and scored by
    liver Dice on test_volumes; per seed: the seed draws the training voxels (the same for every arm) and the
    random-init encoder (build(seed)). Baselines: predict nothing (Dice 0) and raw_segmentation (the same head on
    each voxel's raw value and its local means). Volumes: N x 1 x X x Y x Z tensors; labels: N x X x Y x Z."""
    size = [s // 2 for s in train_volumes.shape[2:]]

    def half(v):  # the raw volumes at the features' resolution
        return F.adaptive_avg_pool3d(v.float(), size)[:, 0].numpy()

    def target(labels):  # nearest-neighbour labels at half resolution, liver or not
        return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].numpy() == LIVER
    y_train, y_test = target(train_labels), target(test_labels)

    def features(branch):
        branch.eval()
        return [np.concatenate([dense_features(branch, v, size) for v in vs]) for vs in (train_volumes, test_volumes)]

    def head(train_f, test_f, seed):
        train_f, test_f = standardize(train_f, test_f)
        pred = voxel_segmentation(train_f, y_train, test_f, mean_dice, seed, max_samples)
        return mean_dice(pred.reshape(y_test.shape), y_test)

    pre = features(pretrained)
    out = {"pretrained": [], "random": [], "raw": [], "trivial": [], "seeds": list(seeds)}
    for seed in seeds:
        out["pretrained"].append(head(*pre, seed))
        out["random"].append(head(*features(build(seed)), seed))
        out["raw"].append(mean_dice(raw_segmentation(half(train_volumes), y_train, half(test_volumes), mean_dice,
                                                     seed, max_samples), y_test))
        out["trivial"].append(mean_dice(np.zeros_like(y_test), y_test))
    return out

