"""Labelled crops for `--recipe omni`: one labelled volume per step and process, cut into
`sw_batch_size` patches with their label maps (Large-Scale-Medical's `Omni-supervised/utils/data_utils_omni.py`).

Pre-processing (deterministic, cacheable): load image and label, channel first, RAS, spacing
(bilinear / nearest), HU window to [0, 1], crop both to the image's foreground, pad to roi^3.
Per step (random): `RandCropByPosNegLabeld` (pos 9 : neg 1, `sw_batch_size` patches of roi^3), flips on each
axis (`--RandFlipd_prob`), rot90 (`--RandRotate90d_prob`, k up to 3), intensity shift U(-0.1, 0.1)
(`--RandShiftIntensityd_prob`); image and label get the same spatial changes.

The original reads its own infinite-looking iterator (a DataLoader with batch 1, shuffled). Here the
volume and the patches of step t depend on (seed, t, rank) only: the volume order is a permutation per
pass over the labelled list, the random transforms are seeded per step. So a resumed run draws what an
uninterrupted one would, whatever the worker count.
"""

import itertools

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from voco.data import CheckPaird, CheckVolumed, SafeDataset, _plain, base_dataset

KEYS = ("image", "label")


def labelled_transforms(args):
    """The deterministic part (cached with --cache_dir / --cache_dataset, as the original's --cache)."""
    roi = (args.roi_x, args.roi_x, args.roi_x)  # the original's roi_x/y/z are all 64
    return Compose([
        LoadImaged(keys=KEYS, image_only=True),
        EnsureChannelFirstd(keys=KEYS),
        CheckVolumed(keys=KEYS),
        CheckPaird("image", "label"),
        Orientationd(keys=KEYS, axcodes="RAS"),
        Spacingd(keys=KEYS, pixdim=(args.space_x, args.space_y, args.space_z), mode=("bilinear", "nearest")),
        ScaleIntensityRanged(keys="image", a_min=args.a_min, a_max=args.a_max, b_min=args.b_min, b_max=args.b_max,
                             clip=True),
        CropForegroundd(keys=KEYS, source_key="image"),
        SpatialPadd(keys=KEYS, spatial_size=roi, mode="constant"),
    ])


def random_patches(args):
    """The random part: `sw_batch_size` labelled patches of roi^3, each flipped / rotated / shifted."""
    roi = (args.roi_x, args.roi_x, args.roi_x)
    return Compose([
        RandCropByPosNegLabeld(keys=KEYS, label_key="label", spatial_size=roi, pos=9, neg=1,
                               num_samples=args.sw_batch_size, image_key="image", image_threshold=0),
        RandFlipd(keys=KEYS, prob=args.RandFlipd_prob, spatial_axis=0),
        RandFlipd(keys=KEYS, prob=args.RandFlipd_prob, spatial_axis=1),
        RandFlipd(keys=KEYS, prob=args.RandFlipd_prob, spatial_axis=2),
        RandRotate90d(keys=KEYS, prob=args.RandRotate90d_prob, max_k=3),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=args.RandShiftIntensityd_prob),
    ])


class LabelledSteps(torch.utils.data.Dataset):
    """Item t: the labelled patches of training step t (1-based) on this rank, as
    {"image": P x 1 x R^3 float32, "label": P x 1 x R^3 float32}.

    Rank r at step t reads volume number (t - 1) * world_size + r of an endless sequence of passes, each pass
    a permutation of the list seeded by (seed, pass); the patches are drawn from (seed, t, r)."""

    def __init__(self, items, base, patches, seed=0, rank=0, world_size=1):
        self.items, self.base, self.patches = items, base, patches
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def __len__(self):
        return len(self.items)

    def volume_index(self, step):
        k = (step - 1) * self.world_size + self.rank
        order = torch.randperm(len(self.items), generator=torch.Generator().manual_seed(
            int(self.seed) * 100_003 + k // len(self.items)))
        return int(order[k % len(self.items)])

    def __getitem__(self, step):
        data = self.base[self.volume_index(step)]
        self.patches.set_random_state(seed=int(np.random.default_rng([self.seed, step, self.rank]).integers(2**31)))
        patches = self.patches(data)
        return {k: torch.stack([_plain(p[k]).float() for p in patches]) for k in KEYS}


class StepsFrom:
    """Sampler: step numbers first, first + 1, ... without end (the loop stops reading)."""

    def __init__(self, first):
        self.first = first

    def __iter__(self):
        return itertools.count(self.first)


def build_labelled(args, items, rank=0, world_size=1, skip_bad=True, skip_log=None):
    """The LabelledSteps of train.py's args; unreadable cases are skipped with a warning (skip_bad)."""
    cache_dir = args.cache_dir
    if cache_dir:  # MONAI keys the cache by file name only: keep pre-processings apart
        from pathlib import Path
        cache_dir = (Path(cache_dir) / f"omni_labelled_roi{args.roi_x}_sp{args.space_x:g}_{args.space_y:g}_"
                     f"{args.space_z:g}_hu{args.a_min:g}_{args.a_max:g}_to{args.b_min:g}_{args.b_max:g}")
    base = base_dataset(items, labelled_transforms(args), cache_dir, args.cache_dataset, args.cache_rate,
                        args.workers)
    safe = SafeDataset(base, items, skip_bad=skip_bad, substitute=True, skip_log=skip_log)
    return LabelledSteps(items, safe, random_patches(args), args.seed, rank, world_size)


def labelled_batches(dataset, workers=0, pin_memory=False):
    """A function: completed step count -> an iterator over the labelled batches of the next steps."""
    def batches(done):
        return iter(torch.utils.data.DataLoader(dataset, batch_size=None, sampler=StepsFrom(done + 1),
                                                num_workers=workers, pin_memory=pin_memory))
    return batches
