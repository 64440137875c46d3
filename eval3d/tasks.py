"""The three tasks, each with its original protocol (on a fixed step budget) and its baselines.

NCC  LUNA16 nodule false-positive reduction (Models Genesis' NCC): candidates.csv cubes, class 1 = nodule;
     binary cross-entropy on one logit; test AUC. Trivial: chance (0.5); raw: the linear probe
     (shared.probe.probe_scores) on the cube average-pooled to 4^3 (shared.demo.raw_features).
NCS  nodule segmentation (Models Genesis' NCS on LIDC-IDRI): the Genesis soft Dice loss on the sigmoid;
     on the cubes that hold a nodule the pooled voxel Dice and IoU, on the empty ones the false-positive rate
     (any voxel predicted). Trivial: predict nothing (Dice 0, IoU 0, no false positive); raw: the per-voxel
     logistic regression on raw intensities and local means (shared.demo.raw_segmentation).
     Real data: --ncs_data <folder> of {train,val,test}_x.npy (N x 64 x 64 x 32 cubes, HU [-1000, 1000] scaled
     to [0, 1]) and _y.npy (0/1 masks of the same shape, LIDC-IDRI's nodule masks); without it, masks are
     LUNA16 annotations.csv spheres around each nodule (the sample data has no LIDC masks).
BTCV 13-organ segmentation (VoCo's BTCV fine-tuning): DiceCE loss, patches of --roi around labelled voxels
     half the time, MONAI sliding-window inference on whole test volumes; mean Dice over the organs present.
     Trivial: predict background everywhere (Dice 0); raw: a multinomial logistic regression per voxel on the
     windowed intensity and its local means (a seeded draw of voxels balanced over the classes).
"""

import numpy as np
import torch
import torch.nn.functional as F

from eval3d import data
from eval3d.runtime import CPU
from shared.demo import CHANCE_AUROC, local_mean_features, raw_features, raw_segmentation
from shared.genesis.finetune import mask_scores, roc_auc
from shared.losses import dice_coef_loss

BTCV_ORGANS = 13


class Task:
    name = kind = ""
    n_class = 1
    metrics = ()            # (name, lower is better)
    primary = ""
    trivial = {}

    def split(self, args, seed):
        raise NotImplementedError

    def positive(self, split):
        """Which training items count as positives for the label fractions."""
        raise NotImplementedError


# -------------------------------------------------------------------------------------------------- cubes

class CubeTask(Task):
    def batch(self, split, idx, arch, rng, batch_size, args):
        pick = rng.choice(idx, size=min(batch_size, len(idx)), replace=False)
        return data.to_tensor(data.cubes_for(arch, split.train_x[pick])), torch.as_tensor(split.train_y[pick])

    @torch.no_grad()
    def predict(self, model, x, arch, batch_size, runtime=CPU):
        """fp32 logits of every test cube on the CPU, in fixed batches (UNet3D's BatchNorm uses the batch's
        statistics)."""
        model.eval()
        out = []
        for i in range(0, len(x), batch_size):
            with runtime.autocast():
                logits = model(runtime.put(data.to_tensor(data.cubes_for(arch, x[i:i + batch_size]))))
            out.append(logits.float())
        return torch.cat(out).cpu()


class NCC(CubeTask):
    name, kind = "ncc", "classification"
    metrics = (("AUC", False),)
    primary = "AUC"
    trivial = {"AUC": CHANCE_AUROC}

    def split(self, args, seed):
        return data.luna16_split(str(args.luna16), tuple(args.cube), seed, False, args.neg_per_pos)

    def positive(self, split):
        return split.train_y > 0.5

    def loss(self, logits, y):
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), y.float())

    def evaluate(self, model, split, arch, args, runtime=CPU):
        logits = self.predict(model, split.test_x, arch, args.batch_size, runtime)
        return {"AUC": roc_auc(logits[:, 0].numpy(), split.test_y)}

    def raw(self, split, idx, seed):
        from shared.probe import probe_scores

        train, test = raw_features(data.to_tensor(split.train_x[idx]), 4), raw_features(data.to_tensor(split.test_x), 4)
        return {"AUC": float(probe_scores(train, split.train_y[idx].astype(int), test, split.test_y.astype(int),
                                          seed=seed)["linear_auroc"])}


class NCS(CubeTask):
    name, kind = "ncs", "segmentation"
    metrics = (("Dice", False), ("IoU", False), ("FP rate", True))
    primary = "Dice"
    trivial = {"Dice": 0.0, "IoU": 0.0, "FP rate": 0.0}

    def split(self, args, seed):
        if args.ncs_data:
            return data.cube_folder_split(str(args.ncs_data))
        return data.luna16_split(str(args.luna16), tuple(args.cube), seed, True, args.neg_per_pos)

    def positive(self, split):
        return split.train_y.reshape(len(split.train_y), -1).max(1) > 0

    def loss(self, logits, y):
        return dice_coef_loss(y.float(), torch.sigmoid(logits[:, 0].float()))

    def evaluate(self, model, split, arch, args, runtime=CPU):
        logits = self.predict(model, split.test_x, arch, args.batch_size, runtime)
        return mask_scores(logits[:, 0] > 0, split.test_y)

    def raw(self, split, idx, seed):
        def dice(pred, target):
            return mask_scores(torch.as_tensor(pred), torch.as_tensor(target))["Dice"]
        pred = raw_segmentation(split.train_x[idx], split.train_y[idx], split.test_x, dice, seed=seed)
        return mask_scores(torch.as_tensor(pred), split.test_y)


# -------------------------------------------------------------------------------------------------- BTCV

def organ_dice(pred, label, n_organs=BTCV_ORGANS):
    """Dice of each organ 1..n (NaN where the organ is absent from the label)."""
    out = []
    for c in range(1, n_organs + 1):
        p, t = pred == c, label == c
        out.append(float(2 * (p & t).sum() / (p.sum() + t.sum())) if t.any() else float("nan"))
    return out


class BTCV(Task):
    name, kind = "btcv", "segmentation"
    n_class = BTCV_ORGANS + 1
    metrics = (("mean Dice", False),)
    primary = "mean Dice"
    trivial = {"mean Dice": 0.0}

    def __init__(self):
        from monai.losses import DiceCELoss
        self._loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def split(self, args, seed):
        return data.btcv_split(str(args.btcv), args.btcv_json, tuple(args.spacing), seed)

    def positive(self, split):
        return np.ones(len(split.train_x), dtype=bool)  # every case is labelled

    def loss(self, logits, y):
        return self._loss(logits.float(), y.unsqueeze(1))

    def batch(self, split, idx, arch, rng, batch_size, args):
        xs, ys = [], []
        for _ in range(batch_size):
            i = idx[rng.integers(len(idx))]
            x, y = data.random_patch(split.train_x[i], split.train_y[i], args.roi, rng)
            xs.append(data.window(x, arch))
            ys.append(y)
        return data.to_tensor(np.stack(xs)), torch.as_tensor(np.stack(ys))

    @torch.no_grad()
    def evaluate(self, model, split, arch, args, runtime=CPU):
        """Whole test volumes on the device: windows and the fp32 sum of their logits stay there (sw_device,
        device); only the argmax comes back."""
        from monai.inferers import sliding_window_inference

        model.eval()
        per_case = []
        for volume, label in zip(split.test_x, split.test_y):
            x = runtime.put(data.to_tensor(data.window(volume, arch)[None]))
            with runtime.autocast():
                logits = sliding_window_inference(x, tuple(args.roi), args.sw_batch_size, model,
                                                  overlap=args.overlap, sw_device=runtime.device,
                                                  device=runtime.device)
            per_case.append(np.nanmean(organ_dice(logits.argmax(1)[0].cpu().numpy(), label)))
        return {"mean Dice": float(np.mean(per_case))}

    def raw(self, split, idx, seed, per_class=2000):
        from sklearn.linear_model import LogisticRegression

        def features(volume):
            return local_mean_features(data.window(volume, "swinunetr")[None])
        x = np.concatenate([features(split.train_x[i]) for i in idx])
        y = np.concatenate([split.train_y[i].reshape(-1) for i in idx])
        rng = np.random.default_rng(seed)
        draw = np.concatenate([rng.choice(np.flatnonzero(y == c), min(per_class, (y == c).sum()), replace=False)
                               for c in np.unique(y)])
        clf = LogisticRegression(max_iter=500).fit(x[draw], y[draw])
        dice = [np.nanmean(organ_dice(clf.predict(features(v)).reshape(v.shape), lab))
                for v, lab in zip(split.test_x, split.test_y)]
        return {"mean Dice": float(np.mean(dice))}


TASKS = {"ncc": NCC, "ncs": NCS, "btcv": BTCV}
