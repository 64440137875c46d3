"""Fine-tuning the Models Genesis family's 3D U-Net (Semantic Genesis, TransVW, Models Genesis weights).

The two uses the originals' READMEs show, with their defects fixed:

- classification: the pre-trained encoder, global average pooling of the bottleneck and a Linear
  layer giving logits, trained with BCEWithLogits (one class) or cross-entropy (several). The README's
  TargetNet ran the whole U-Net and put a ReLU before the sigmoid, so it never predicted below 0.5;
- segmentation: the pre-trained U-Net's sigmoid output trained with the READMEs' flattened soft Dice.

Weights load through `shared.weights.load_pretrained`, which strips DataParallel's `module.`, drops
`projection_head`/`prototypes` keys and prints the match report. Data: a folder of
`{train,val,test}_x.npy` (N x X x Y x Z in [0, 1]) and `{train,val,test}_y.npy` (N labels, or N x X x Y x Z
masks), or `--luna16 <root>` to cut nodule cubes from a LUNA16 tree (annotations.csv, candidates.csv).

Runs as one process (CPU or one GPU) or under torchrun (DDP, `--batch_size` per process, each process
drawing its share of the training cubes through a DistributedSampler). Validation and test sets are small
here, so every process scores them whole: the numbers, and so the early-stopping decision, are the same on
every rank without any communication; only rank 0 writes logs and checkpoints. `--amp` runs the forward
pass under bf16 autocast (on by default on a GPU); losses are computed in fp32.
"""

import argparse
import csv
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm import tqdm

from shared.checkpoint import (
    load_checkpoint,
    load_state,
    rng_state,
    save_atomic,
    set_generator_state,
    set_rng_state,
)
from shared.distributed import barrier, cleanup, init_distributed, seed_everything
from shared.genesis.amp import amp_guard, use_amp
from shared.guards import LossWatch, inject_nan
from shared.losses import dice_coef_loss, dice_score
from shared.runfolder import check_checkpoint_run, claim_run_folder, run_file
from shared.runlog import RunLogger
from shared.startup import check_shared_memory, cudnn_autotune
from shared.timing import StepTimer
from shared.unet3d import UNet3D
from shared.weights import load_pretrained

SPLITS = ("train", "val", "test")


class TargetNet(nn.Module):
    """Pre-trained encoder -> global average pool -> Linear(16w -> n_class): N x n_class logits."""

    def __init__(self, base_model, n_class=1):
        super().__init__()
        self.base_model = base_model
        channels = base_model.down_tr512.ops[1].conv1.out_channels  # 512 at the original width
        self.dense_1 = nn.Linear(channels, n_class)

    def forward(self, x):
        features = self.base_model.encode(x)                                  # N x 16w x X/8 x Y/8 x Z/8
        return self.dense_1(torch.flatten(F.adaptive_avg_pool3d(features, 1), 1))  # N x n_class


def roc_auc(scores, labels):
    """Area under the ROC curve by the rank-sum statistic (ties get average ranks)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ------------------------------------------------------------------------------------------ data

def _crop(volume, centre, size):
    """size cube of `volume` centred at voxel `centre`, zero (air) outside the volume."""
    out = np.zeros(size, dtype=np.float32)
    start = [int(round(c)) - s // 2 for c, s in zip(centre, size)]
    src = tuple(slice(max(0, a), min(d, a + s)) for a, s, d in zip(start, size, volume.shape))
    dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, start))
    out[dst] = volume[src]
    return out


def _read_csv(path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (a LUNA16 root holds annotations.csv and candidates.csv)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def patient_splits(series, splits, rng):
    """{series uid: "train" | "val" | "test"}: the patient split of luna16_nodule_cubes (`rng`: a numpy Generator,
    np.random.default_rng(seed) for the split of that seed)."""
    series = sorted(series)
    n_train = max(1, int(round(splits[0] * len(series))))
    n_val = max(1, int(round(splits[1] * len(series))))
    return {series[i]: "train" if k < n_train else "val" if k < n_train + n_val else "test"
            for k, i in enumerate(rng.permutation(len(series)))}


def luna16_nodule_cubes(root, size=(64, 64, 32), neg_per_pos=1, splits=(0.6, 0.2, 0.2), seed=0,
                        masks=False, with_series=False):
    """{split: (x, y)} nodule-presence cubes cut from a LUNA16 tree, split by patient.

    Positives: every candidates.csv row of class 1; negatives: `neg_per_pos` class-0 candidates per
    positive (at least one per scan). With `masks`, y is the N x X x Y x Z sphere mask of every
    annotations.csv nodule inside the cube (the segmentation target) instead of the class. With
    `with_series`, each split is (x, y, series uid of every cube): the patient groups of a grouped K-fold.
    """
    import SimpleITK as sitk

    from shared.genesis.ct_volumes import VolumeReadError, check_mhd, normalize_hu

    root = Path(root)
    candidates = _read_csv(root / "candidates.csv")
    annotations = _read_csv(root / "annotations.csv")
    files = {p.name[:-4]: p for p in sorted(root.glob("subset*/*.mhd"))}
    if not files:
        raise FileNotFoundError(f"{root}: no subset*/*.mhd scans")
    rng = np.random.default_rng(seed)
    series = sorted(files)
    split_of = patient_splits(series, splits, rng)  # the same rng then draws the negatives
    out = {s: ([], [], []) for s in SPLITS}
    skipped = []
    for uid in tqdm(series, desc="LUNA16 nodule cubes", leave=False):
        rows = [r for r in candidates if r["seriesuid"] == uid]
        pos = [r for r in rows if int(float(r["class"])) == 1]
        neg = [r for r in rows if int(float(r["class"])) == 0]
        if not rows:
            continue
        try:
            check_mhd(files[uid])
            image = sitk.ReadImage(str(files[uid]))
            array = sitk.GetArrayFromImage(image).astype(np.float32)
            if not np.isfinite(array).all():
                raise VolumeReadError(f"{files[uid]}: volume holds NaN or infinite values")
        except (RuntimeError, VolumeReadError) as err:
            text = str(err).strip().splitlines()[-1]
            warnings.warn(f"skipping unreadable {files[uid]}: {text}" if str(files[uid]) not in text
                          else f"skipping {text}", stacklevel=2)
            skipped.append(files[uid].name)
            continue
        volume = normalize_hu(array.transpose(2, 1, 0))  # (x, y, z) in [0, 1]
        spacing = np.asarray(image.GetSpacing())
        nodules = [(np.asarray(image.TransformPhysicalPointToContinuousIndex(
            [float(a["coordX"]), float(a["coordY"]), float(a["coordZ"])])), float(a["diameter_mm"]))
            for a in annotations if a["seriesuid"] == uid]
        n_neg = min(len(neg), max(1, neg_per_pos * len(pos)))
        picked = pos + [neg[i] for i in rng.choice(len(neg), n_neg, replace=False)] if neg else pos
        for r in picked:
            centre = np.asarray(image.TransformPhysicalPointToContinuousIndex(
                [float(r["coordX"]), float(r["coordY"]), float(r["coordZ"])]))
            cube = _crop(volume, centre, size)
            if masks:
                grid = np.stack(np.meshgrid(*[np.arange(s) - s // 2 for s in size], indexing="ij"), -1)
                mask = np.zeros(size, dtype=np.float32)
                for c, diam in nodules:
                    offset = (grid + np.round(centre) - c) * spacing  # mm from the nodule centre
                    mask[np.linalg.norm(offset, axis=-1) <= diam / 2] = 1.0
                label = mask
            else:
                label = int(float(r["class"]))
            out[split_of[uid]][0].append(cube)
            out[split_of[uid]][1].append(label)
            out[split_of[uid]][2].append(uid)
    if skipped:
        print(f"LUNA16 nodule cubes: skipped {len(skipped)} of {len(series)} scans: {', '.join(skipped)}")
    result = {}
    for s, (xs, ys, uids) in out.items():
        if not xs:
            raise ValueError(f"{root}: no cubes for the {s} split ({len(series)} scans); use more scans")
        result[s] = (np.stack(xs), np.asarray(ys, dtype=np.float32)) + ((np.asarray(uids),) if with_series else ())
    return result


def load_split_arrays(data_dir):
    """{split: (x, y)} from <data_dir>/<split>_x.npy and <split>_y.npy."""
    data_dir = Path(data_dir)
    result = {}
    for s in SPLITS:
        xp, yp = data_dir / f"{s}_x.npy", data_dir / f"{s}_y.npy"
        for p in (xp, yp):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing (expected {{train,val,test}}_{{x,y}}.npy in {data_dir})")
        x, y = _read_array(xp), _read_array(yp)
        if x.ndim != 4 or len(y) != len(x):
            raise ValueError(f"{xp}: expected N x X x Y x Z cubes with N labels in {yp}, got {x.shape} and {y.shape}")
        if len(x) == 0:
            raise ValueError(f"{xp}: no cubes (an empty array)")
        for path, array in ((xp, x), (yp, y)):
            bad = ~np.isfinite(array)
            if bad.any():
                raise ValueError(f"{path}: {int(bad.sum())} NaN or infinite values (first in row "
                                 f"{int(np.argwhere(bad)[0][0])}); clean the array before fine-tuning")
        result[s] = (x, y)
    return result


def _read_array(path):
    """A whole .npy as float32, or a ValueError naming the file (truncated, corrupt, not numeric)."""
    try:
        return np.array(np.load(path, mmap_mode="r", allow_pickle=False), dtype=np.float32)
    except (ValueError, OSError, TypeError) as err:  # e.g. "mmap length is greater than file size"
        size = path.stat().st_size
        raise ValueError(f"{path}: not a readable .npy array ({size} bytes; truncated or corrupt? {err})") from err


def check_labels(data, task, n_class=1):
    """Refuse labels that do not fit the task: a mask per cube of the cube's shape (segmentation), or one
    class index per cube below n_class (classification). Errors name the <split>_y array."""
    for split, (x, y) in data.items():
        name = f"{split}_y"
        if task == "segmentation" and y.shape != x.shape:
            raise ValueError(f"{name}.npy: masks of shape {y.shape} for cubes of shape {x.shape} "
                             f"({split}_x.npy); segmentation needs one mask of the cube's shape per cube")
        if task == "classification":
            if y.ndim != 1:
                raise ValueError(f"{name}.npy: labels of shape {y.shape}; classification needs one label per "
                                 f"cube (shape ({len(x)},))")
            top = 1 if n_class == 1 else n_class - 1
            if y.min() < 0 or y.max() > top or np.any(y != np.round(y)):
                raise ValueError(f"{name}.npy: labels must be integers 0..{top} for --n_class {n_class}, "
                                 f"got values in [{y.min():g}, {y.max():g}]")


# ----------------------------------------------------------------------------------------- engine

def build_parser(description, task, weights_name):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_dir", help="folder of {train,val,test}_x.npy and _y.npy")
    src.add_argument("--luna16", help="LUNA16 root: cut nodule cubes around candidates/annotations")
    p.add_argument("--weights", default=None,
                   help=f"pre-trained checkpoint ({weights_name}, Genesis_Chest_CT.pt, ...); none = random init")
    p.add_argument("--trusted", action="store_true", help="unpickle --weights with weights_only=False")
    p.add_argument("--input_rows", type=int, default=64)
    p.add_argument("--input_cols", type=int, default=64)
    p.add_argument("--input_deps", type=int, default=32)
    if task == "classification":
        p.add_argument("--n_class", type=int, default=1, help="1: BCE on one logit; more: cross-entropy")
        p.add_argument("--neg_per_pos", type=int, default=1, help="--luna16: negatives per positive")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--persistent_workers", action="store_true",
        help="keep the loader workers alive between epochs (persistent_workers; off as the original)")
    p.add_argument("--nb_epoch", type=int, default=100)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="the READMEs: SGD, momentum 0.9, no weight decay")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--standard_bn", action="store_true", help="BatchNorm with running statistics in eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default=f"runs/finetune_{task}")
    p.add_argument("--exp_name", default=f"{Path(weights_name).stem}_{task}",
                   help="the run's files in --output_dir are <exp_name>.* (best.pt, last.pt, metrics.csv, ...)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from a checkpoint ('auto': <output_dir>/<exp_name>.last.pt)")
    p.add_argument("--device", default=None)
    p.add_argument("--amp", default="auto", choices=["auto", "on", "off"], help="bf16 autocast (auto: on GPU)")
    return p


def finetune_identity(args, task):
    """The task and settings a resumed fine-tuning run must share with the first part."""
    keys = ("weights", "data_dir", "luna16", "n_class", "width", "standard_bn", "input_rows", "input_cols",
            "input_deps", "optimizer", "lr", "batch_size", "seed")
    return {"method": f"genesis_finetune_{task}", **{k: getattr(args, k, None) for k in keys}}


def build_model(task, args):
    base = UNet3D(n_class=1, width=args.width, always_batch_stats=not args.standard_bn)
    if args.weights:
        print(f"loading {args.weights}:")
        load_pretrained(base, args.weights, trusted=args.trusted)  # prints the match report
    return TargetNet(base, args.n_class) if task == "classification" else base


def _loss(task, out, y, n_class):
    out = out.float()  # fp32 loss under autocast
    if task == "segmentation":
        return dice_coef_loss(y, out)
    if n_class == 1:
        return F.binary_cross_entropy_with_logits(out[:, 0], y)
    return F.cross_entropy(out, y.long())


@torch.no_grad()
def mask_scores(pred, target):
    """{"Dice", "IoU"}: pooled over the voxels of the cubes that hold a nodule (NaN without one); "FP rate": the
    fraction of empty cubes with any voxel predicted (NaN without one). pred, target: N x ... of 0/1. The per-cube
    mean Dice with smoothing rewards predicting nothing on the empty cubes; these scores separate the cases."""
    pred, target = torch.as_tensor(pred).flatten(1).float(), torch.as_tensor(target).flatten(1).float()
    positive = target.sum(1) > 0
    nan = float("nan")
    dice = iou = nan
    if positive.any():
        p, t = pred[positive], target[positive]
        inter, total = float((p * t).sum()), float(p.sum() + t.sum())  # total >= the true voxels > 0
        dice, iou = 2 * inter / total, inter / (total - inter)
    fp = float((pred[~positive].sum(1) > 0).float().mean()) if (~positive).any() else nan
    return {"Dice": dice, "IoU": iou, "FP rate": fp}


def positive_dice_and_empty_fp(pred, target):
    """(voxel Dice on the nodule cubes, false-positive rate on the empty ones): see mask_scores."""
    scores = mask_scores(pred, target)
    return scores["Dice"], scores["FP rate"]


@torch.no_grad()
def predicted_and_true_voxels(pred, target):
    """Mean voxels per cube: {"predicted_empty", "predicted_positive", "true_positive"} (empty: cubes without a
    nodule; positive: cubes with one): whether false positives on empty cubes are a few stray voxels or a
    model that paints every cube (NaN where a kind of cube is missing)."""
    pred, target = torch.as_tensor(pred).flatten(1).float(), torch.as_tensor(target).flatten(1).float()
    positive = target.sum(1) > 0

    def mean(values):
        return float(values.mean()) if len(values) else float("nan")
    return {"predicted_empty": mean(pred[~positive].sum(1)), "predicted_positive": mean(pred[positive].sum(1)),
            "true_positive": mean(target[positive].sum(1))}


@torch.no_grad()
def predict_masks(model, loader, device, amp=False):
    """(hard predictions, targets) of a segmentation loader, both N x X x Y x Z on the CPU."""
    model.eval()
    preds, targets = [], []
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x.to(device)).float()
        preds.append((out[:, 0] > 0.5).cpu())
        targets.append(y)
    return torch.cat(preds), torch.cat(targets)


@torch.no_grad()
def evaluate(model, loader, task, n_class, device, amp=False, split=None):
    """(mean loss, metric): AUC (binary) / accuracy (multi-class) / mean hard Dice (segmentation)."""
    model.eval()
    losses, scores, labels, dice = [], [], [], []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x).float()
        losses.append(_loss(task, out, y, n_class).item() * len(x))
        if task == "segmentation":
            dice.append(dice_score((out > 0.5).float(), y.unsqueeze(1)).squeeze(1).cpu())
        elif n_class == 1:
            scores.append(torch.sigmoid(out[:, 0]).cpu())
            labels.append(y.cpu())
        else:
            scores.append((out.argmax(1) == y.long()).float().cpu())
    n = len(loader.dataset)
    if task == "segmentation":
        metric = float(torch.cat(dice).mean())
    elif n_class == 1:
        truth = torch.cat(labels).numpy()
        metric = roc_auc(torch.cat(scores).numpy(), truth)
        if not np.isfinite(metric):
            warnings.warn(f"AUC is undefined (nan) on the {split or 'evaluated'} split: all its {len(truth)} "
                          f"cubes are of class {int(truth[0]) if len(truth) else '-'}; the loss still counts",
                          stacklevel=2)
    else:
        metric = float(torch.cat(scores).mean())
    return sum(losses) / n, metric


def run(args, task, info=None):
    """Fine-tune and test; returns {'val_loss', 'test_loss', 'test_metric', 'metric'}."""
    info = info or init_distributed(device=args.device)
    amp = use_amp(args.amp, info.device)
    with amp_guard(info.device, amp):  # CPU bf16: oneDNN off (see shared/genesis/amp.py)
        return _run(args, task, info, amp)


def _run(args, task, info, amp):
    device = info.device
    cudnn_autotune(device)  # fixed-size cubes: cuDNN picks its fastest 3D convolutions once
    seed_everything(args.seed)  # the same on every rank: one split, one initialisation
    size = (args.input_rows, args.input_cols, args.input_deps)
    if args.luna16:
        data = luna16_nodule_cubes(args.luna16, size, getattr(args, "neg_per_pos", 1), seed=args.seed,
                                   masks=task == "segmentation")
    else:
        data = load_split_arrays(args.data_dir)
    n_class = getattr(args, "n_class", 1)
    check_labels(data, task, n_class)
    check_shared_memory(args.num_workers, 2 * 4 * args.batch_size * size[0] * size[1] * size[2],
                        "--num_workers")  # a batch of float32 cubes and their labels/masks
    loaders, sampler = {}, None
    for s, (x, y) in data.items():
        ds = TensorDataset(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y))
        gen = torch.Generator().manual_seed(args.seed)
        if s == "train" and info.distributed:
            sampler = DistributedSampler(ds, info.world_size, info.rank, shuffle=True, seed=args.seed)
        loaders[s] = DataLoader(ds, batch_size=args.batch_size, shuffle=s == "train" and sampler is None,
                                sampler=sampler if s == "train" else None, generator=gen,
                                drop_last=s == "train" and len(ds) > args.batch_size * info.world_size,
                                num_workers=args.num_workers,
                                persistent_workers=args.persistent_workers and args.num_workers > 0)
    metric_name = "dice" if task == "segmentation" else ("auc" if n_class == 1 else "accuracy")
    if info.is_main:
        print(f"{task}: " + ", ".join(f"{s} {len(d[0])}" for s, d in data.items()) + f" cubes of {size}")

    model = build_model(task, args).to(device)
    net = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=0.9, weight_decay=0.0, nesterov=False)
    else:
        optimizer = torch.optim.Adam(model.parameters(), args.lr)
    out_dir = Path(args.output_dir)
    identity = finetune_identity(args, task)
    claim_run_folder(out_dir, args.exp_name, identity, resume=bool(args.resume), enabled=info.is_main)
    barrier()  # rank 0 may have renamed an earlier layout's files, which --resume reads
    logger = RunLogger(out_dir, config=vars(args), enabled=info.is_main, name=args.exp_name)
    start, best, bad, step = 0, float("inf"), 0, 0
    last, best_path = run_file(out_dir, args.exp_name, "last.pt"), run_file(out_dir, args.exp_name, "best.pt")
    if args.resume:
        path = last if args.resume == "auto" else Path(args.resume)
        if path.is_file():
            ckpt = load_checkpoint(path, map_location=device)
            if "optimizer_state_dict" not in ckpt or "rng_state" not in ckpt:
                raise ValueError(f"{path}: not a fine-tuning last.pt (keys {sorted(ckpt)[:8]}); --resume takes "
                                 "the last.pt of an earlier fine-tuning run, --weights a pre-trained model")
            check_checkpoint_run(ckpt, identity, path)
            load_state(model, ckpt["state_dict"], path)
            load_state(optimizer, ckpt["optimizer_state_dict"], path, "optimizer state")
            start, best, bad, step = ckpt["epoch"], ckpt["best_loss"], ckpt["num_epoch_no_improvement"], ckpt["step"]
            set_rng_state(ckpt["rng_state"])
            set_generator_state(loaders["train"].generator, ckpt["loader_generator"])
            logger.truncate(step)  # rows logged after the checkpoint come again
        elif args.resume != "auto":
            raise FileNotFoundError(f"--resume {path}: no such checkpoint")
    loss_watch = LossWatch(device, parameters=model.parameters())  # no scaler: bf16 or fp32
    for epoch in range(start, args.nb_epoch):
        t0 = time.time()
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        total, count, timer = torch.zeros((), device=device), 0, StepTimer(device)
        bar = tqdm(loaders["train"], desc=f"epoch {epoch + 1}", leave=False, disable=not info.is_main)
        for x, y in timer.wrap(bar):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = net(x)
            loss = inject_nan(_loss(task, out, y, n_class), step + 1)
            loss_watch.observe(loss, step + 1, f"epoch {epoch + 1}")  # CPU: stops before backward
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total, count = total + loss.detach() * len(x), count + len(x)  # summed on the device: no sync
        loss_watch.check()  # once per epoch (the logging interval), before this epoch's checkpoints
        total = float(total)
        timing = timer.lap()
        val_loss, val_metric = evaluate(model, loaders["val"], task, n_class, device, amp, "val")
        logger.log(step, epoch=epoch + 1, train_loss=total / max(count, 1), val_loss=val_loss,
                   **{f"val_{metric_name}": val_metric}, **timing)
        if info.is_main:
            print(f"epoch {epoch + 1}: train {total / max(count, 1):.4f} val {val_loss:.4f} "
                  f"{metric_name} {val_metric:.4f} ({time.time() - t0:.1f}s)")
        if val_loss < best:
            best, bad = val_loss, 0
            if info.is_main:
                save_atomic({"epoch": epoch + 1, "state_dict": model.state_dict(), "best_loss": float(best),
                             f"val_{metric_name}": float(val_metric)}, best_path)
        else:
            bad += 1
        if info.is_main:
            save_atomic({"epoch": epoch + 1, "state_dict": model.state_dict(),
                         "optimizer_state_dict": optimizer.state_dict(), "best_loss": float(best),
                         "num_epoch_no_improvement": bad, "step": step, "rng_state": rng_state(), "run": identity,
                         "loader_generator": loaders["train"].generator.get_state()}, last)
        if bad >= args.patience:
            if info.is_main:
                print(f"early stopping after {epoch + 1} epochs")
            break
    barrier()  # rank 0 has written best.pt
    if best_path.is_file():
        model.load_state_dict(load_checkpoint(best_path, map_location=device)["state_dict"])
    test_loss, test_metric = evaluate(model, loaders["test"], task, n_class, device, amp, "test")
    logger.log(step, test_loss=test_loss, **{f"test_{metric_name}": test_metric})
    logger.close()
    if info.is_main:
        print(f"test: loss {test_loss:.4f} {metric_name} {test_metric:.4f}")
    result = {"val_loss": best, "test_loss": test_loss, "test_metric": test_metric, "metric": metric_name}
    if task == "segmentation":
        pred, target = predict_masks(model, loaders["test"], device, amp)
        result["test_dice_positive"], result["test_fp_rate_empty"] = positive_dice_and_empty_fp(pred, target)
        result["test_voxels"] = predicted_and_true_voxels(pred, target)
    return result


def main(task, description, weights_name, argv=None):
    args = build_parser(description, task, weights_name).parse_args(argv)
    info = init_distributed(device=args.device)
    try:
        return run(args, task, info)
    finally:
        if info.distributed:
            cleanup()
