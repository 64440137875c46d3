"""VoCo v2 data: the working volume (1.5 mm, HU [-175, 250], a 192x192x64 window) and its crops.

Pre-processing, as Large-Scale-Medical's `get_abdomen_trans` (deterministic part, cacheable):
load, channel first, RAS, Spacingd 1.5 mm (bilinear), window HU [-175, 250] -> [0, 1], crop to the
foreground (voxels > 0), pad to roi^3, then either pad to 192x192x64 (`--window crop`, the labelled
abdomen sets: a random 192x192x64 window is cut per sample) or first resize the whole box to
192x192x64 (`--window resize`, the unlabelled abdomen and head/neck sets).

Crops, as its `voco_trans.py`: the v1 sampler (`voco.data.VoCoCrops`) at v2's geometry -- 3x3 base
crops of 64^3 (no resize: crop side = roi), `sw_batch_size` random 64^3 crops with integer centres
uniform in [32, 160) and area-overlap labels, each crop flipped per axis (p 0.2), rot90 in the axial
plane (p 0.2) and intensity-shifted by U(-0.1, 0.1) (p 0.5, v1: 0.1), all spanning the window's depth.
"""

import numpy as np
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    Resized,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from voco.data import CheckVolumed, VoCoCrops, VoCoDataset, base_dataset

WINDOWS = ("crop", "resize")
SHIFT_PROB = 0.5  # RandShiftIntensityd prob in voco_trans.py (v1: 0.1)


def v2_crops(roi=64, num_crops=3, sw_batch_size=2, aug=True):
    """The v2 crop sampler: base crops of roi^3 on a num_crops x num_crops grid, no resize."""
    return VoCoCrops(roi_small=roi, base_roi=roi, num_crops=num_crops, sw_batch_size=sw_batch_size, aug=aug,
                     flip_prob=0.2, rot_prob=0.2, shift_prob=SHIFT_PROB)


def v2_transforms(window_size, a_min=-175.0, a_max=250.0, b_min=0.0, b_max=1.0, spacing=(1.5, 1.5, 1.5),
                  roi=64, window="crop"):
    """Deterministic pre-processing to a volume of at least `window_size` (exactly it with 'resize')."""
    if window not in WINDOWS:
        raise ValueError(f"--window must be one of {WINDOWS}, got {window!r}")
    steps = [
        LoadImaged(keys="image", image_only=True),
        EnsureChannelFirstd(keys="image"),
        CheckVolumed(keys="image"),
        Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=tuple(spacing), mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True),
        CropForegroundd(keys="image", source_key="image"),  # MONAI's default: voxels > 0
        CheckVolumed(keys="image", min_size=2, what="foreground box"),
        SpatialPadd(keys="image", spatial_size=(roi,) * 3, mode="constant"),
    ]
    if window == "resize":
        steps.append(Resized(keys="image", spatial_size=tuple(window_size), mode="trilinear", align_corners=True))
    steps.append(SpatialPadd(keys="image", spatial_size=tuple(window_size), mode="constant"))
    return Compose(steps)


def window_corner(shape, size, rng):
    """Lower corner of a uniformly placed window of `size` inside `shape` (MONAI RandSpatialCrop's draw:
    each start uniform over 0..shape-size)."""
    return [int(rng.integers(0, s - w + 1)) for s, w in zip(shape, size)]


class WindowedVoCoDataset(VoCoDataset):
    """VoCoDataset whose working volume is a random `crops.volume_size` window of the pre-processed one.

    The window of item i in pass e comes from its own generator (seed, e, i, 1), apart from the crops'
    (seed, e, i), so a resumed run sees the same windows and both crop paths (workers / device) see the
    same volume."""

    def load(self, i):
        image = super().load(i)
        size = self.crops.volume_size
        if tuple(image.shape[1:]) == tuple(size):
            return image
        corner = window_corner(image.shape[1:], size, np.random.default_rng([self.seed, self.epoch, i, 1]))
        sl = tuple(slice(c, c + w) for c, w in zip(corner, size))
        return image[(slice(None), *sl)]


def build_v2_dataset(args, items, skip_bad=True, skip_log=None):
    """The v2 pre-training dataset for train.py's args (roi_x, num_crops, sw_batch_size, window, ...)."""
    crops = v2_crops(args.roi_x, args.num_crops, args.sw_batch_size)
    transform = v2_transforms(crops.volume_size, args.a_min, args.a_max, args.b_min, args.b_max,
                              (args.space_x, args.space_y, args.space_z), args.roi_x, args.window)
    cache_dir = args.cache_dir
    if cache_dir:  # MONAI keys the cache by file name only: keep pre-processings apart
        from pathlib import Path
        size = "x".join(map(str, crops.volume_size))
        cache_dir = (Path(cache_dir) / f"v2_{args.window}{size}_sp{args.space_x:g}_{args.space_y:g}_{args.space_z:g}"
                     f"_hu{args.a_min:g}_{args.a_max:g}_to{args.b_min:g}_{args.b_max:g}")
    base = base_dataset(items, transform, cache_dir, args.cache_dataset, args.cache_rate, args.workers)
    return WindowedVoCoDataset(items, base, crops, seed=args.seed, skip_bad=skip_bad, skip_log=skip_log)
