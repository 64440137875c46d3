"""Pattern generation: reference patients, K nearest neighbours, one coordinate, multi-resolution crops.

For each pseudo-class: draw an unused training patient as reference, rank every training and
validation patient by the L2 distance of its 512-d autoencoder feature to the reference's, draw a
corner (x, y, z) in the reference that passes the original's dense-tissue test, and crop the same
corner from the K nearest training patients (K = nb_instances) and the nb_instances_val nearest
validation patients. With `multi_res`, two more crops per training patient take an in-plane window of
random size s in [minPatchSize, maxPatchSize) jittered by [-10, 9] voxels, resized to the cube size.

Output files are the original's: per block b of 50 classes,
`{train_data,train_label}{1,2,3}_vwGen_ex_ref_fold<b>.0.npy` and `val_{data,label}1_..._fold<b>.0.npy`,
class-major rows, labels (rows, 1) float64 holding the global class index; plus `patterns.csv`
(one row per crop) and the original-format `*_vwGen_exRef.txt` logs, all inside `save`.

The original's bugs are fixed by default; the `PatternConfig` fields marked "original behaviour"
bring each back for comparison.
"""

from __future__ import annotations

import csv
import math
import os
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shared.genesis.ct_volumes import HU_MAX, HU_MIN
from shared.genesis.self_discovery.volumes import VolumeStore, resize_cube

TISSUE_HU = -150.0  # HU above which a voxel counts as dense tissue in the coordinate test


@dataclass
class PatternConfig:
    input_rows: int = 64
    input_cols: int = 64
    input_deps: int = 32
    crop_rows: int = 64
    crop_cols: int = 64
    nb_instances: int = 200  # K nearest training patients per class (the reference included)
    nb_instances_val: int = 30  # nearest validation patients per class
    nb_classes: int = 200
    minPatchSize: int = 50  # multi-resolution window size s in [minPatchSize, maxPatchSize)
    maxPatchSize: int = 80
    multi_res: bool = False
    distance_threshold: float = 5.0  # min L2 distance (voxels) between class corners
    is_normalized: bool = False  # True: volumes are in [0, 1]; False: detect per volume
    len_border: int = 100  # in-plane margin of the corner search (hard-coded in the original)
    len_border_z: int = 30
    len_depth: int = 3  # slices looked ahead by the tissue test
    lung_max: float = 0.15  # max dense-tissue score fraction of an accepted cube
    max_trials: int = 200  # corner draws per reference before a new reference is drawn
    jitter: int = 10  # multi-resolution offsets in [-jitter, jitter)
    classes_per_block: int = 50  # the original saves one set of files after every 50 classes
    seed: int = 1
    dtype: str = "float32"  # of the data files (the original wrote float64)
    # original behaviour, off by default
    drop_last_sample: bool = False  # #6: each block loses its last row; a trailing partial block is not saved
    sticky_rejection: bool = False  # #4: one near-duplicate corner rejects every later trial
    raw_crops: bool = False  # #2: crops keep the volumes' own intensities (raw HU if not normalised)
    write_blank_resolutions: bool = False  # #8: without multi_res, still write all-zero data2/data3
    png: bool = True  # write patterns.png

    @property
    def cube(self):
        return self.input_rows, self.input_cols, self.input_deps


def fold_suffix(block: int) -> str:
    """The original's file suffix: str((i + 1) / 50) -> '1.0', '2.0', ..."""
    return f"fold{float(block)}"


def output_name(kind: str, res: int, block: int) -> str:
    """e.g. output_name('train_data', 2, 1) -> 'train_data2_vwGen_ex_ref_fold1.0.npy'."""
    return f"{kind}{res}_vwGen_ex_ref_{fold_suffix(block)}.npy"


def dense_tissue_score(window, depth, threshold, len_depth=3):
    """The original's tissue test, vectorised: sum over (x, y, d < depth) of 1 - k/(len_depth-1), where
    k < len_depth is the first look-ahead slice with window[x, y, d+k] >= threshold (0 when none).

    window: X x Y x >= depth+len_depth-1, intensities in [0, 1].
    """
    dense = np.asarray(window) >= threshold
    score, seen = 0.0, np.zeros(dense.shape[:2] + (depth,), bool)
    for k in range(len_depth - 1):  # k = len_depth-1 weighs 0
        hit = dense[:, :, k:k + depth] & ~seen
        score += (1.0 - k / (len_depth - 1)) * float(hit.sum())
        seen |= hit
    return score


def read_prev_coordinates(path, train_paths):
    """(reference index, (x, y, z)) per previous class from a `patterns.csv` or an original
    `train_data1_vwGen_exRef.txt` log (`<path>#x,y,z,size,depth#class`); the first row of each class
    is its reference."""
    index = {str(Path(p).resolve()): i for i, p in enumerate(train_paths)}
    by_name = {Path(p).name: i for i, p in enumerate(train_paths)}
    classes = {}
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = [(r["path"], (int(r["x"]), int(r["y"]), int(r["z"])), int(r["class"]))
                    for r in csv.DictReader(f) if r["split"] == "train" and r["resolution"] == "1"]
    else:
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                file_name, coords, label = line.rsplit("#", 2)
                x, y, z = (int(v) for v in coords.split(",")[:3])
            except ValueError as e:
                raise ValueError(f"{path}:{n}: expected '<path>#x,y,z,size,depth#class', got {line!r}") from e
            rows.append((file_name, (x, y, z), int(label)))
    for file_name, xyz, label in rows:
        if label in classes:
            continue
        i = index.get(str(Path(file_name).resolve()), by_name.get(Path(file_name).name))
        if i is None:
            raise ValueError(f"{path}: reference {file_name} of class {label} is not among the training volumes")
        classes[label] = (i, xyz)
    if sorted(classes) != list(range(len(classes))):
        raise ValueError(f"{path}: previous classes must be 0..n-1, got {sorted(classes)}")
    return [classes[c] for c in range(len(classes))]


class _BlockWriter:
    """Writes one block of classes straight into memory-mapped .npy files (renamed when complete)."""

    def __init__(self, save, block, n_classes, cfg, resolutions):
        self.save, self.block, self.cfg, self.res = Path(save), block, cfg, resolutions
        k, kv = cfg.nb_instances, cfg.nb_instances_val
        self.files = {}
        for r in resolutions:
            self._open("train_data", r, (n_classes * k, *cfg.cube), cfg.dtype)
            self._open("train_label", r, (n_classes * k, 1), np.float64)
        self._open("val_data", 1, (n_classes * kv, *cfg.cube), cfg.dtype)
        self._open("val_label", 1, (n_classes * kv, 1), np.float64)

    def _open(self, kind, res, shape, dtype):
        final = self.save / output_name(kind, res, self.block)
        tmp = final.with_name("." + final.name + ".partial")
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        self.files[kind, res] = (arr, tmp, final)

    @property
    def finals(self):
        return [final for _, _, final in self.files.values()]

    def put(self, kind, res, row, cube, label):
        data, _, _ = self.files[f"{kind}_data", res]
        labels, _, _ = self.files[f"{kind}_label", res]
        data[row] = cube
        labels[row, 0] = label

    def close(self):
        for arr, tmp, final in self.files.values():
            arr.flush()
            if self.cfg.drop_last_sample:  # the original's slice end (i+1)*K - 1
                np.save(final, np.asarray(arr[:-1]))
                del arr
                os.remove(tmp)
            else:
                del arr
                os.replace(tmp, final)

    def abort(self):
        for _, tmp, _ in self.files.values():
            tmp.unlink(missing_ok=True)


class PatternGenerator:
    def __init__(self, train_paths, val_paths, train_features, val_features, save, cfg: PatternConfig,
                 prev_coordinates=None):
        """
        train_paths / val_paths:       prepared (x, y, z) .npy volumes, in the order of the feature rows.
        train_features / val_features: N x D autoencoder features (D = 512 with the defaults).
        save:                          output folder.
        prev_coordinates:              an earlier run's patterns.csv or train_data1 log; its classes are
                                       re-cropped with the same references and corners.
        """
        self.cfg, self.save = cfg, Path(save)
        self.train_features = np.asarray(train_features, dtype=np.float64)
        self.val_features = np.asarray(val_features, dtype=np.float64)
        for name, paths, feats in (("training", train_paths, self.train_features),
                                   ("validation", val_paths, self.val_features)):
            if len(paths) != len(feats):
                raise ValueError(f"{len(paths)} {name} volumes but {len(feats)} {name} feature rows: "
                                 f"the features were extracted from another file list")
        k, kv = cfg.nb_instances, cfg.nb_instances_val
        if len(train_paths) < k or len(val_paths) < kv:
            raise ValueError(f"need at least nb_instances={k} training and nb_instances_val={kv} validation "
                             f"volumes, got {len(train_paths)} and {len(val_paths)}")
        self.train = VolumeStore(train_paths, cfg.is_normalized)
        self.val = VolumeStore(val_paths, cfg.is_normalized)
        self.extent = np.array([cfg.crop_rows, cfg.crop_cols, cfg.input_deps])
        for store, need, name in ((self.train, k, "training"), (self.val, kv, "validation")):
            small = [p for p, shape in zip(store.paths, store.shapes) if (shape < self.extent).any()]
            for p in small:
                warnings.warn(f"{p}: shape {tuple(store.shapes[store.paths.index(p)])} is smaller than the crop "
                              f"{tuple(self.extent)}; it will never be cropped", stacklevel=3)
            if len(store.paths) - len(small) < need:
                raise ValueError(f"only {len(store.paths) - len(small)} {name} volumes can hold a "
                                 f"{tuple(self.extent)} crop, {need} needed; too small: {', '.join(map(str, small))}")
        self.prev = read_prev_coordinates(prev_coordinates, train_paths) if prev_coordinates else []
        self.py_rng, self.np_rng = random.Random(cfg.seed), np.random.default_rng(cfg.seed)
        self.threshold = (TISSUE_HU - HU_MIN) / (HU_MAX - HU_MIN)  # -150 HU on the [0, 1] scale
        self.resolutions = (1, 2, 3) if cfg.multi_res or cfg.write_blank_resolutions else (1,)
        self.used = np.zeros(len(train_paths), bool)  # patients already drawn as a reference
        self.corners = []  # one (x, y, z) per class so far
        self.meta = []

    def run(self, progress=True):
        """Write every block; returns (written .npy paths, metadata CSV path)."""
        cfg = self.cfg
        self.save.mkdir(parents=True, exist_ok=True)
        n_blocks = (cfg.nb_classes // cfg.classes_per_block if cfg.drop_last_sample
                    else math.ceil(cfg.nb_classes / cfg.classes_per_block))
        # the logs are written beside their final names and renamed only when every block is written:
        # a failed run leaves no empty or partial *_vwGen_exRef.txt (and keeps an earlier run's)
        names = {name: self.save / f"{name}_vwGen_exRef.txt" for name in
                 ("train_data1", "train_data2", "train_data3", "val_data1")}
        partial = {name: path.with_name("." + path.name + ".partial") for name, path in names.items()}
        self.logs = {name: open(path, "w") for name, path in partial.items()}
        written, finished = [], False
        try:
            with tqdm(total=cfg.nb_classes, desc="pattern classes", disable=not progress) as bar:
                for block in range(1, n_blocks + 1):
                    first = (block - 1) * cfg.classes_per_block
                    classes = range(first, min(first + cfg.classes_per_block, cfg.nb_classes))
                    writer = _BlockWriter(self.save, block, len(classes), cfg, self.resolutions)
                    try:
                        for c in classes:
                            self._write_class(c, c - first, block, writer)
                            bar.update(1)
                    except BaseException:
                        writer.abort()
                        raise
                    writer.close()
                    written += writer.finals
                    if cfg.drop_last_sample:  # list only the rows that were saved
                        last = {"train": len(classes) * cfg.nb_instances - 1,
                                "validation": len(classes) * cfg.nb_instances_val - 1}
                        self.meta = [r for r in self.meta if r["fold"] != f"{float(block)}"
                                     or r["row"] != last[r["split"]]]
            finished = True
        finally:
            for f in self.logs.values():
                f.close()
            for name, path in partial.items():
                if finished:
                    os.replace(path, names[name])
                else:
                    path.unlink(missing_ok=True)
        meta_path = self.save / "patterns.csv"
        with open(meta_path, "w", newline="") as f:
            w = csv.DictWriter(f, list(_meta("train", 1, 0, 1, 0, "", (0, 0, 0), 0, 0, 0.0, False)))
            w.writeheader()
            w.writerows(self.meta)
        with open(self.save / "pattern_config.csv", "w", newline="") as f:
            csv.writer(f).writerows([("key", "value"), *asdict(cfg).items()])
        if cfg.png and n_blocks:
            from shared.genesis.self_discovery.plots import save_pattern_grid

            save_pattern_grid(self.save, self.save / "patterns.png")
        return written, meta_path

    def _write_class(self, c, index_in_block, block, writer):
        """Crop class c from its K nearest training and nearest validation patients into the block files."""
        cfg, k, kv = self.cfg, self.cfg.nb_instances, self.cfg.nb_instances_val
        ref, corner, order_t, order_v = self._choose_class(c)
        self.corners.append(corner)
        x, y, z = corner
        fits_t = [i for i in order_t if (self.train.shapes[i] >= corner + self.extent).all()][:k]
        fits_v = [i for i in order_v if (self.val.shapes[i] >= corner + self.extent).all()][:kv]
        if len(fits_t) < k or len(fits_v) < kv:
            raise RuntimeError(f"class {c}: only {len(fits_t)} training / {len(fits_v)} validation "
                               f"volumes contain the cube at {tuple(corner)} (need {k} / {kv})")
        ref_feature = self.train_features[ref]
        d_train = np.linalg.norm(self.train_features - ref_feature, axis=1)
        d_val = np.linalg.norm(self.val_features - ref_feature, axis=1)
        deps = cfg.input_deps
        for rank, i in enumerate(fits_t):
            row = index_in_block * k + rank
            for res in self.resolutions:
                if res == 1:
                    sx, sy, size = x, y, cfg.crop_rows
                    patch = self.train.crop(i, x, y, z, cfg.crop_rows, cfg.crop_cols, deps, raw=cfg.raw_crops)
                elif cfg.multi_res:
                    sx, sy, size = _draw_window(self.np_rng, corner, self.train.shapes[i], cfg)
                    patch = self.train.crop(i, sx, sy, z, size, size, deps, raw=cfg.raw_crops)
                else:
                    continue  # blank data2/data3 (original behaviour): rows stay zero, label 0
                writer.put("train", res, row, resize_cube(patch, cfg.cube), c)
                self._record("train", res, c, block, row, self.train.paths[i], (sx, sy, z), size, rank,
                             d_train[i], i == ref)
        for rank, i in enumerate(fits_v):
            row = index_in_block * kv + rank
            patch = self.val.crop(i, x, y, z, cfg.crop_rows, cfg.crop_cols, deps, raw=cfg.raw_crops)
            writer.put("val", 1, row, resize_cube(patch, cfg.cube), c)
            self._record("validation", 1, c, block, row, self.val.paths[i], (x, y, z), cfg.crop_rows, rank,
                         d_val[i], False)

    def _record(self, split, res, c, block, row, path, xyz, size, rank, distance, is_ref):
        log = self.logs[f"{'train' if split == 'train' else 'val'}_data{res}"]
        log.write(f"{path}#{xyz[0]},{xyz[1]},{xyz[2]},{size},{self.cfg.input_deps}#{c}\n")  # the original's format
        self.meta.append(_meta(split, res, c, block, row, path, xyz, size, rank, distance, is_ref,
                               self.cfg.input_deps))

    def _choose_class(self, c):
        """(reference index, corner, training order, validation order) of class c."""
        cfg = self.cfg
        while True:
            if c < len(self.prev):
                ref, corner = self.prev[c]
            else:
                if self.used.all():
                    raise RuntimeError(
                        f"class {c}: every one of the {len(self.used)} training volumes has been tried as a "
                        f"reference; lower --nb_classes, or relax --lung_max / --len_border / --distance_threshold")
                ref = int(self.np_rng.integers(len(self.used)))
                while self.used[ref]:  # uniform over the unused references, as the original's redraw loop
                    ref = int(self.np_rng.integers(len(self.used)))
            self.used[ref] = True
            feature = self.train_features[ref]
            order_t = np.argsort(np.linalg.norm(self.train_features - feature, axis=1), kind="stable")
            order_v = np.argsort(np.linalg.norm(self.val_features - feature, axis=1), kind="stable")
            if c < len(self.prev):
                return ref, np.array(corner), order_t, order_v
            image = order_t[0]  # normally the reference itself (distance 0)
            corner = find_corner(self.train, image, np.array(self.corners).reshape(-1, 3), cfg, self.py_rng,
                                 self.threshold, self._enough_neighbours)
            if corner is not None:
                return ref, corner, order_t, order_v
            small = too_small_for_borders(self.train.shapes[image], cfg)
            why = (f": its shape {tuple(int(v) for v in self.train.shapes[image])} is too small for the borders "
                   f"({small}; lower --len_border / --len_border_z / --len_depth or the crop size)" if small else
                   f" in {cfg.max_trials} trials (--max_trials; --lung_max and --distance_threshold decide which "
                   "corners pass)")
            warnings.warn(f"class {c}: no corner found in {self.train.paths[image]}{why}; drawing another reference",
                          stacklevel=2)

    def _enough_neighbours(self, corner):
        """A fix: at least K training and K_val validation patients contain the cube."""
        need = corner + self.extent
        return ((self.train.shapes >= need).all(1).sum() >= self.cfg.nb_instances
                and (self.val.shapes >= need).all(1).sum() >= self.cfg.nb_instances_val)


def generate_patterns(train_paths, val_paths, train_features, val_features, save, cfg: PatternConfig,
                      prev_coordinates=None, progress=True):
    """Run the pattern generator; returns (written .npy paths, metadata CSV path)."""
    generator = PatternGenerator(train_paths, val_paths, train_features, val_features, save, cfg,
                                 prev_coordinates)
    return generator.run(progress)


def too_small_for_borders(shape, cfg):
    """'' when a corner can be drawn in a volume of `shape`, else which axis is too small and what it needs."""
    needs = (("x", cfg.crop_rows + 1 + 2 * cfg.len_border, "2 * --len_border + --crop_rows + 1"),
             ("y", cfg.crop_cols + 1 + 2 * cfg.len_border, "2 * --len_border + --crop_cols + 1"),
             ("z", cfg.input_deps + cfg.len_depth + 1 + 2 * cfg.len_border_z,
              "2 * --len_border_z + --input_deps + --len_depth + 1"))
    return ", ".join(f"{axis} needs at least {need} = {rule}" for (axis, need, rule), size in zip(needs, shape)
                     if int(size) < need)


def find_corner(store, index, corners, cfg, py_rng, threshold, accept=None):
    """A cube corner in volume `index` passing the tissue test, at least distance_threshold from the
    earlier corners, or None after max_trials draws (or when the volume is too small to search)."""
    sx, sy, sz = (int(s) for s in store.shapes[index])
    hi_x = sx - cfg.crop_rows - 1 - cfg.len_border
    hi_y = sy - cfg.crop_cols - 1 - cfg.len_border
    hi_z = sz - cfg.input_deps - cfg.len_depth - 1 - cfg.len_border_z
    if hi_x < cfg.len_border or hi_y < cfg.len_border or hi_z < cfg.len_border_z:
        return None  # the original returned None here and crashed unpacking it
    volume = store.load(index)
    limit = cfg.lung_max * cfg.crop_rows * cfg.crop_cols * cfg.input_deps
    repeated = False
    for _ in range(cfg.max_trials):
        corner = np.array([py_rng.randint(cfg.len_border, hi_x), py_rng.randint(cfg.len_border, hi_y),
                           py_rng.randint(cfg.len_border_z, hi_z)])
        if not cfg.sticky_rejection:
            repeated = False
        if len(corners) and np.linalg.norm(corners - corner, axis=1).min() < cfg.distance_threshold:
            repeated = True
        if repeated:
            continue
        x, y, z = corner
        window = volume[x:x + cfg.crop_rows, y:y + cfg.crop_cols, z:z + cfg.input_deps + cfg.len_depth]
        if dense_tissue_score(window, cfg.input_deps, threshold, cfg.len_depth) > limit:
            continue
        if accept is not None and not accept(corner):
            continue
        return corner
    return None


def _draw_window(np_rng, corner, shape, cfg):
    """(x, y, size) of a multi-resolution window: s in [min, max), offsets in [-jitter, jitter), inside
    the volume (the original checked only the far edges)."""
    x, y, _ = corner
    for _ in range(100000):
        s = int(np_rng.integers(cfg.minPatchSize, cfg.maxPatchSize))
        dx, dy = (int(v) for v in np_rng.integers(-cfg.jitter, cfg.jitter, size=2))
        if x + dx >= 0 and y + dy >= 0 and x + dx + s <= shape[0] and y + dy + s <= shape[1]:
            return x + dx, y + dy, s
    raise RuntimeError(f"no multi-resolution window of size [{cfg.minPatchSize}, {cfg.maxPatchSize}) fits "
                       f"at ({x}, {y}) in a volume of shape {tuple(shape)}")


def _meta(split, res, c, block, row, path, xyz, size, rank, distance, is_ref, depth=0):
    return {"split": split, "resolution": res, "class": c, "fold": f"{float(block)}", "row": row,
            "path": str(path), "x": int(xyz[0]), "y": int(xyz[1]), "z": int(xyz[2]), "size": int(size),
            "depth": int(depth), "neighbour_rank": rank, "feature_distance": float(distance),
            "is_reference": int(bool(is_ref))}
