"""Task data: LUNA16 candidate cubes (NCC, NCS), BTCV volumes, label fractions and intensity windows.

Cubes come from shared.genesis.finetune.luna16_nodule_cubes (the Genesis family's own reader: SimpleITK,
(x, y, z) order, HU [-1000, 1000] -> [0, 1], a fresh patient split per seed); its validation patients join
the test side here (a fixed budget, no early stopping). BTCV volumes are read with MONAI as VoCo's
fine-tuning does (LoadImage, channel first, RAS orientation, resampling to the task's spacing), kept in HU;
each architecture then gets its own pre-training's window (encoders.HU_WINDOW).
"""

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from eval3d.encoders import HU_WINDOW
from shared.genesis.ct_volumes import HU_MAX, HU_MIN


@dataclass
class Split:
    train_x: np.ndarray          # N x X x Y x Z (cubes in [0, 1] of [-1000, 1000] HU) or a list of HU volumes
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    groups_note: str             # how the split was made, for the table
    test_train_ratio: float | None  # n_test / n_train when splits of different seeds overlap (corrected t)


def window(hu, arch):
    """HU -> [0, 1] by the window `arch` was pre-trained with (clipped)."""
    low, high = HU_WINDOW[arch]
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def cubes_for(arch, cubes):
    """Genesis-normalised cubes ([0, 1] of [-1000, 1000] HU) in `arch`'s own window."""
    if HU_WINDOW[arch] == (HU_MIN, HU_MAX):
        return np.asarray(cubes, dtype=np.float32)
    return window(np.asarray(cubes, dtype=np.float32) * (HU_MAX - HU_MIN) + HU_MIN, arch)


@lru_cache(maxsize=8)
def luna16_split(root, size, seed, masks, neg_per_pos):
    """A patient split of LUNA16 candidate cubes: 60 % of the scans train, 40 % test (seeded)."""
    from shared.genesis.finetune import luna16_nodule_cubes

    parts = luna16_nodule_cubes(root, tuple(size), neg_per_pos, splits=(0.6, 0.2, 0.2), seed=seed, masks=masks)
    test_x = np.concatenate([parts["val"][0], parts["test"][0]])
    test_y = np.concatenate([parts["val"][1], parts["test"][1]])
    train_x, train_y = parts["train"]
    return Split(train_x, train_y, test_x, test_y, "by scan (patient), reshuffled per seed",
                 len(test_x) / len(train_x))


@lru_cache(maxsize=2)
def cube_folder_split(folder):
    """A fixed split from <folder>/{train,val,test}_{x,y}.npy (val joins test): the same for every seed."""
    from shared.genesis.finetune import load_split_arrays

    parts = load_split_arrays(folder)
    return Split(parts["train"][0], parts["train"][1], np.concatenate([parts["val"][0], parts["test"][0]]),
                 np.concatenate([parts["val"][1], parts["test"][1]]), f"the fixed split of {folder}", None)


def fraction_indices(positive, fraction, seed):
    """Indices of a `fraction` (percent) of the training items, stratified by `positive`, nested across
    fractions for one seed (1 % within 10 % within 100 %), never without a positive (nor a negative where
    there are any): on small data 1 % is then more than 1 % (the table gives the count)."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        raise ValueError("the training split holds no positive item: no fraction can be drawn")
    rng = np.random.default_rng(seed)
    picked = []
    for members in (np.flatnonzero(positive), np.flatnonzero(~positive)):
        if len(members):
            order = rng.permutation(members)
            picked.append(order[:max(1, math.ceil(len(members) * fraction / 100))])
    return np.sort(np.concatenate(picked))


# ------------------------------------------------------------------------------------------ BTCV

def _btcv_cases(root, json_name):
    path = Path(root) / json_name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (a BTCV root holds imagesTr/, labelsTr/ and {json_name})")
    listing = json.loads(path.read_text())
    cases = listing.get("training", []) + listing.get("validation", [])
    if not cases:
        raise ValueError(f"{path}: no 'training' or 'validation' entries")
    return [{k: str(Path(root) / c[k]) for k in ("image", "label")} for c in cases], len(listing.get("validation", []))


@lru_cache(maxsize=2)
def btcv_volumes(root, json_name, spacing):
    """[(case id, HU volume X x Y x Z, label X x Y x Z)] of every case in the json, RAS, resampled to `spacing`."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    cases, _ = _btcv_cases(root, json_name)
    load = Compose([LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"]),
                    Orientationd(keys=["image", "label"], axcodes="RAS"),
                    Spacingd(keys=["image", "label"], pixdim=spacing, mode=("bilinear", "nearest"))])
    out = []
    for case in cases:
        item = load(case)
        out.append((Path(case["image"]).name.split(".")[0], np.asarray(item["image"][0], dtype=np.float32),
                    np.asarray(item["label"][0]).round().astype(np.int64)))
    return out


def btcv_split(root, json_name, spacing, seed):
    """Cases split by patient with a fresh seeded shuffle per seed (shared.demo.grouped_folds, first fold as
    test); the test share is that of the json's validation list (BTCV's 24/6 -> 5 folds)."""
    from shared.demo import grouped_folds

    volumes = btcv_volumes(root, json_name, tuple(spacing))
    _, n_val = _btcv_cases(root, json_name)
    k = max(2, round(len(volumes) / max(1, n_val)))
    _, _, train, test = grouped_folds([v[0] for v in volumes], k=k, repeats=1, seed=seed)[0]
    pick = lambda idx, j: [volumes[i][j] for i in idx]  # noqa: E731
    return Split(pick(train, 1), pick(train, 2), pick(test, 1), pick(test, 2),
                 f"by case, {k} groups reshuffled per seed, one held out", len(test) / len(train))


def random_patch(volume, label, roi, rng, foreground=0.5):
    """An roi-sized patch (padded with the volume's minimum where it is smaller), centred on a labelled voxel
    with probability `foreground` (MONAI's RandCropByPosNegLabel with pos = neg = 1), else anywhere."""
    if rng.random() < foreground and (label > 0).any():
        fg = np.argwhere(label > 0)
        centre = fg[rng.integers(len(fg))]
    else:
        centre = np.array([rng.integers(s) for s in volume.shape])
    pad = [(max(0, r - s), max(0, r - s)) for r, s in zip(roi, volume.shape)]
    vol, lab = np.pad(volume, pad, constant_values=volume.min()), np.pad(label, pad)
    centre = centre + np.array([p[0] for p in pad])
    start = [int(np.clip(c - r // 2, 0, s - r)) for c, r, s in zip(centre, roi, vol.shape)]
    sl = tuple(slice(a, a + r) for a, r in zip(start, roi))
    return vol[sl], lab[sl]


def to_tensor(x):
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1)  # N x 1 x X x Y x Z
