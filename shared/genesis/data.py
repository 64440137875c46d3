"""The self-discovered pattern cubes of Semantic Genesis / TransVW, as batches.

Files written by the pattern generator, block b = 1, 2, ... of 50 classes each:

    train_data<k>_vwGen_ex_ref_fold<b>.0.npy    N x X x Y x Z cubes, resolution k = 1, 2, 3
    train_label<k>_vwGen_ex_ref_fold<b>.0.npy   N x 1 class index (global: 0-49 in fold1.0, 50-99, ...)
    val_data1_vwGen_ex_ref_fold<b>.0.npy        validation cubes (resolution 1 only)
    val_label1_vwGen_ex_ref_fold<b>.0.npy

Rows are class-major, so the first `instances * C` rows of a block hold its first C classes. Arrays
are memory-mapped and cast to float32 one batch at a time (the original held everything in RAM as
float64: 27.7 GB with the defaults).
"""

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from shared.genesis.restoration import restoration_pair

CLASSES_PER_BLOCK = 50


def pattern_file(data_dir, kind, k, block):
    """kind: 'train_data', 'train_label', 'val_data' or 'val_label'."""
    return Path(data_dir) / f"{kind}{k}_vwGen_ex_ref_fold{block}.0.npy"


def _load(path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pattern file not found (run the self-discovery pattern "
                                f"generator, or download TransVW_data.zip)")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from err


def _check_pair(data, labels, data_path, label_path):
    if data.ndim not in (4, 5) or (data.ndim == 5 and data.shape[1] != 1):
        raise ValueError(f"{data_path}: expected N x X x Y x Z cubes, got shape {data.shape}")
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"{label_path}: {labels.shape[0]} labels for {data.shape[0]} cubes in {data_path}")
    if any(s % 8 for s in data.shape[-3:]):
        raise ValueError(f"{data_path}: cube size {data.shape[-3:]} is not divisible by 8")


def _is_blank(data, rows=8):
    return not np.any(np.asarray(data[: min(rows, data.shape[0])]))


class PatternCubes:
    """Concatenation of memory-mapped (cubes, labels) pairs; `get(indices)` -> float32 batch + labels."""

    def __init__(self, parts):
        self.parts = parts  # list of (data, labels, n_rows)
        self.offsets = np.cumsum([0] + [n for _, _, n in parts])
        if self.offsets[-1] == 0:
            raise ValueError("no pattern cubes selected")
        self.cube_shape = tuple(parts[0][0].shape[-3:])

    def __len__(self):
        return int(self.offsets[-1])

    def get(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        cubes = np.empty((len(indices), 1, *self.cube_shape), dtype=np.float32)
        labels = np.empty(len(indices), dtype=np.int64)
        part_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for i, (p, idx) in enumerate(zip(part_of, indices)):
            data, lab, _ = self.parts[p]
            row = int(idx - self.offsets[p])
            cubes[i, 0] = np.asarray(data[row]).reshape(self.cube_shape)
            label = np.asarray(lab[row]).reshape(-1)[0]
            if not (np.isfinite(cubes[i, 0]).all() and np.isfinite(label)):
                # refuse: NaN voxels would train the network to NaN weights without a word
                where = getattr(data, "filename", None) if np.isfinite(label) else getattr(lab, "filename", None)
                raise ValueError(f"{where or 'pattern file'}: NaN or infinite values in row {row}; "
                                 "regenerate or clean the pattern files")
            labels[i] = int(label)
        return torch.from_numpy(cubes), torch.from_numpy(labels)

    def labels(self):
        return np.concatenate([np.asarray(lab[:n]).reshape(-1) for _, lab, n in self.parts]).astype(np.int64)


def load_patterns(data_dir, cls_classes=44, nb_instances=200, nb_val_instances=30, nb_multires_patch=3,
                  skip_blank=True):
    """(train, validation) PatternCubes as the original train.py selects them: files, counts and order.

    skip_blank: leave out a resolution-2/3 file that is missing or whose first cubes are all zeros (what
    the original generator writes without --multi_res), with a warning; the original trains on the blank
    cubes (and stops on a missing file).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data_dir {data_dir}: no such folder")
    if not 1 <= nb_multires_patch <= 3:
        raise ValueError(f"--nb_multires_patch must be 1, 2 or 3, got {nb_multires_patch}")
    blocks = math.ceil(cls_classes / CLASSES_PER_BLOCK)
    train, val = [], []
    for b in range(1, blocks + 1):
        in_block = min(CLASSES_PER_BLOCK, cls_classes - CLASSES_PER_BLOCK * (b - 1))
        for k in range(1, nb_multires_patch + 1):
            dp, lp = pattern_file(data_dir, "train_data", k, b), pattern_file(data_dir, "train_label", k, b)
            if k > 1 and skip_blank and not dp.is_file():
                warnings.warn(f"{dp}: not found (patterns generated without --multi_res?); skipped", stacklevel=2)
                continue
            data, labels = _load(dp), _load(lp)
            _check_pair(data, labels, dp, lp)
            if k > 1 and skip_blank and _is_blank(data):
                warnings.warn(f"{dp}: all-zero cubes (generated without --multi_res?); skipped", stacklevel=2)
                continue
            train.append((data, labels, min(data.shape[0], nb_instances * in_block)))
        dp, lp = pattern_file(data_dir, "val_data", 1, b), pattern_file(data_dir, "val_label", 1, b)
        data, labels = _load(dp), _load(lp)
        _check_pair(data, labels, dp, lp)
        val.append((data, labels, min(data.shape[0], nb_val_instances * in_block)))
    train, val = PatternCubes(train), PatternCubes(val)
    top = max(train.labels().max(), val.labels().max())
    if top >= cls_classes:
        raise ValueError(f"{data_dir}: labels reach {top} but --cls_classes is {cls_classes}")
    return train, val


class EpochBatches(Sampler):
    """Yields (epoch, batch index, sample indices) for this rank, through torch's DistributedSampler.

    The epoch and batch index travel with the indices so that the restoration transforms of a batch are
    seeded by (seed, rank, epoch, batch) wherever they run: in a loader worker or on the GPU, any number
    of workers, before or after a resume.
    """

    def __init__(self, n, batch_size, shuffle=True, seed=0, rank=0, world_size=1, drop_last=False):
        self.inner = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle,
                                        seed=seed, drop_last=drop_last)
        self.batch_size, self.drop_last, self.epoch = batch_size, drop_last, 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self):
        order = list(self.inner)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            chunk = order[start:start + self.batch_size]
            if self.drop_last and len(chunk) < self.batch_size:
                return
            yield self.epoch, b, chunk

    def __len__(self):
        n = len(self.inner)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def batch_rng(seed, split, rank, epoch, batch):
    """The numpy Generator of one batch's transforms."""
    return np.random.default_rng([int(seed), {"train": 0, "val": 1}[split], int(rank), int(epoch), int(batch)])


class RestorationBatches(Dataset):
    """dataset[(epoch, batch, indices)] -> dict of a whole batch, transformed here when `transform`.

    With `transform=False` the raw cubes come back and the caller transforms them on its device.
    """

    def __init__(self, cubes, split, seed=0, rank=0, transform=True, warped_target=False, elastic=True):
        self.cubes, self.split, self.seed, self.rank = cubes, split, seed, rank
        self.transform, self.warped_target, self.elastic = transform, warped_target, elastic

    def __len__(self):
        return len(self.cubes)

    def __getitem__(self, item):
        epoch, b, indices = item
        cubes, labels = self.cubes.get(indices)
        batch = {"cubes": cubes, "labels": labels, "epoch": epoch, "batch": b}
        if self.transform:
            batch.update(self.restore(cubes, epoch, b))
        return batch

    def restore(self, cubes, epoch, b):
        rng = batch_rng(self.seed, self.split, self.rank, epoch, b)
        inputs, targets, choice = restoration_pair(cubes, rng, elastic=self.elastic,
                                                   warped_target=self.warped_target)
        return {"inputs": inputs, "targets": targets, "choice": torch.as_tensor(choice)}


def write_pattern_files(data_dir, cubes_per_class, n_classes, n_val_per_class, shape=(64, 64, 32),
                        resolutions=3, seed=0, dtype=np.float32):
    """Write a synthetic set in the pattern generator's file layout (tests, demos); class c is a blob."""
    rng = np.random.default_rng(seed)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    centres = rng.uniform(-0.5, 0.5, size=(n_classes, 3))

    def cube(c):
        d2 = ((grid - centres[c].reshape(3, 1, 1, 1)) ** 2).sum(0)
        img = 0.2 + 0.6 * np.exp(-d2 / 0.1) + 0.05 * rng.standard_normal(shape)
        return np.clip(img, 0, 1)

    for b in range(1, math.ceil(n_classes / CLASSES_PER_BLOCK) + 1):
        classes = range(CLASSES_PER_BLOCK * (b - 1), min(n_classes, CLASSES_PER_BLOCK * b))
        for k in range(1, resolutions + 1):
            labels = np.repeat(np.array(classes, dtype=np.float64), cubes_per_class)[:, None]
            np.save(pattern_file(data_dir, "train_data", k, b),
                    np.stack([cube(int(c)) for c in labels[:, 0]]).astype(dtype))
            np.save(pattern_file(data_dir, "train_label", k, b), labels)
        labels = np.repeat(np.array(classes, dtype=np.float64), n_val_per_class)[:, None]
        np.save(pattern_file(data_dir, "val_data", 1, b), np.stack([cube(int(c)) for c in labels[:, 0]]).astype(dtype))
        np.save(pattern_file(data_dir, "val_label", 1, b), labels)
    return data_dir
