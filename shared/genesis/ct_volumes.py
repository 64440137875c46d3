"""CT volumes as (x, y, z) float32 arrays in [0, 1], and the patient-wise train/validation split.

The Models Genesis recipe that Semantic Genesis and TransVW inherit: read with SimpleITK (its array is
(z, y, x)), transpose to (x, y, z), keep the native spacing, clip HU to [-1000, 1000] and scale to
[0, 1] as (v + 1000) / 2000. NIfTI arrays from nibabel are already in (x, y, z) index order.

`prepare_dataset` writes the layout the self-discovery scripts read: `<out>/train/<patient>.npy`,
`<out>/validation/<patient>.npy` and `<out>/volumes.csv`.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path

import numpy as np

HU_MIN, HU_MAX = -1000.0, 1000.0
VOLUME_SUFFIXES = (".mhd", ".nii", ".nii.gz", ".nrrd", ".npy")


class VolumeReadError(RuntimeError):
    """A volume file that cannot be read or does not hold a 3-D image; the message names the file."""


def volume_id(path) -> str:
    """The patient/series id of a volume file: its name without the (possibly double) suffix."""
    name = Path(path).name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def normalize_hu(volume) -> np.ndarray:
    """Clip HU to [-1000, 1000] and scale linearly to [0, 1] (float32)."""
    v = np.clip(np.asarray(volume, dtype=np.float32), HU_MIN, HU_MAX)
    return (v - HU_MIN) / (HU_MAX - HU_MIN)


def is_unit_range(volume) -> bool:
    """True when every value lies in [0, 1], i.e. the volume is already normalised."""
    return bool(np.min(volume) >= 0.0 and np.max(volume) <= 1.0)


def to_unit_range(volume, is_normalized=None) -> np.ndarray:
    """The volume in [0, 1]: as is when normalised (given, or detected), else `normalize_hu`."""
    if is_normalized is None:
        is_normalized = is_unit_range(volume)
    return np.asarray(volume, dtype=np.float32) if is_normalized else normalize_hu(volume)


MHD_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
             "MET_LONG": 8, "MET_ULONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def check_mhd(path):
    """Raise VolumeReadError when an uncompressed .mhd's data file is missing or shorter than its header
    says (SimpleITK reports a truncated .raw as "No such file or directory")."""
    path = Path(path)
    header = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            header[key.strip()] = value.strip()
    data = header.get("ElementDataFile", "")
    if not data or data == "LOCAL" or header.get("CompressedData", "False").lower() == "true" \
            or header.get("ElementType") not in MHD_TYPES or "%" in data or data.upper() == "LIST":
        return
    raw = path.parent / data
    if not raw.is_file():
        raise VolumeReadError(f"{path}: its data file {raw} does not exist")
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        channels = int(header.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return
    need = int(np.prod(dims)) * channels * MHD_TYPES[header["ElementType"]]
    size = raw.stat().st_size
    if size < need:
        raise VolumeReadError(f"{raw}: truncated: {size} bytes, but {path.name} declares {need} "
                              f"({' x '.join(map(str, dims))} {header['ElementType']})")


def read_volume(path, normalize=True) -> np.ndarray:
    """Read one volume as an (x, y, z) float32 array (in [0, 1] when `normalize`).

    .mhd/.nrrd through SimpleITK (transposed from (z, y, x)), .nii/.nii.gz through nibabel, .npy as
    saved. Raises VolumeReadError naming the file when it is missing, unreadable or not 3-D.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeReadError(f"{path}: file not found")
    name = path.name.lower()
    try:
        if name.endswith((".mhd", ".nrrd")):
            import SimpleITK as sitk

            if name.endswith(".mhd"):
                check_mhd(path)

            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            array = np.asarray(nib.load(str(path)).dataobj)
        elif name.endswith(".npy"):
            array = np.load(path, allow_pickle=False)
        else:
            raise VolumeReadError(f"{path}: unsupported file type (expected one of {VOLUME_SUFFIXES})")
    except VolumeReadError:
        raise
    except Exception as e:  # SimpleITK/nibabel/numpy raise many types for truncated or corrupt files
        raise VolumeReadError(f"{path}: cannot read volume ({type(e).__name__}: {e})") from e
    if array.ndim == 4 and array.shape[-1] == 1:  # NIfTI with a trailing singleton time axis
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeReadError(f"{path}: expected a 3-D volume, got shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise VolumeReadError(f"{path}: non-numeric voxel type {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise VolumeReadError(f"{path}: volume holds NaN or infinite values")
    return normalize_hu(array) if normalize else array


def find_volumes(input_dir, pattern=None) -> list[Path]:
    """Volume files under `input_dir`, sorted.

    `pattern` (a glob relative to input_dir) wins when given. Otherwise: LUNA16 `subset*/*.mhd` when
    such folders exist, then a Medical-Decathlon/BTCV `imagesTr/` folder, else the volume files
    directly in `input_dir` (labels folders are never searched).
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: input folder does not exist")
    if pattern:
        paths = sorted(root.glob(pattern))
    elif sorted(root.glob("subset*/*.mhd")):
        paths = sorted(root.glob("subset*/*.mhd"))
    elif (root / "imagesTr").is_dir():
        paths = sorted(p for p in (root / "imagesTr").iterdir() if p.name.endswith(VOLUME_SUFFIXES))
    else:
        paths = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(VOLUME_SUFFIXES))
    paths = [p for p in paths if not p.name.startswith(".")]
    if not paths:
        raise FileNotFoundError(
            f"{root}: no volumes found (looked for {pattern or 'subset*/*.mhd, imagesTr/*, *.mhd/*.nii(.gz)/*.npy'})")
    return paths


def luna_subset(path) -> int | None:
    """The LUNA16 subset number of a file under `subset<k>/`, else None."""
    m = re.fullmatch(r"subset(\d+)", Path(path).parent.name)
    return int(m.group(1)) if m else None


def split_patients(paths, val_fraction=0.1, seed=0, val_subsets=None) -> dict[str, str]:
    """Assign every patient id to "train" or "validation"; files of one patient never straddle splits.

    With `val_subsets` (LUNA16 subset numbers) the split follows the subsets, as Models Genesis does;
    otherwise a seeded permutation of the sorted ids puts round(val_fraction * n) (at least one when
    there are two or more patients) in validation.
    """
    ids = sorted({volume_id(p) for p in paths})
    if val_subsets is not None:
        val_ids = {volume_id(p) for p in paths if luna_subset(p) in set(val_subsets)}
        return {i: "validation" if i in val_ids else "train" for i in ids}
    n_val = int(round(val_fraction * len(ids)))
    if len(ids) >= 2 and val_fraction > 0:
        n_val = min(max(n_val, 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val_ids = {ids[k] for k in order[:n_val]}
    return {i: "validation" if i in val_ids else "train" for i in ids}


def _save_npy_atomic(array, path):
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def prepare_dataset(input_dir, output_dir, val_fraction=0.1, seed=0, val_subsets=None, pattern=None,
                    min_shape=None, limit=None, progress=True, dtype="float32") -> Path:
    """Convert every volume under `input_dir` to `<output_dir>/{train,validation}/<id>.npy` in [0, 1].

    Unreadable files and volumes smaller than `min_shape` (x, y, z) are skipped with a warning that
    names them; the run fails only when nothing usable is left. dtype float16 halves the disk space
    (about 1 HU of precision on the [0, 1] scale). Writes `<output_dir>/volumes.csv`
    (id, split, source, shape, LUNA16 subset) and returns the path of that CSV.
    """
    from tqdm import tqdm

    paths = find_volumes(input_dir, pattern)[:limit]
    split = split_patients(paths, val_fraction, seed, val_subsets)
    out = Path(output_dir)
    for name in ("train", "validation"):
        (out / name).mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for path in tqdm(paths, desc="prepare volumes", disable=not progress):
        try:
            volume = read_volume(path, normalize=True)
        except VolumeReadError as e:
            warnings.warn(f"skipping {e}", stacklevel=2)
            skipped.append(str(path))
            continue
        if min_shape is not None and any(s < m for s, m in zip(volume.shape, min_shape)):
            warnings.warn(f"skipping {path}: shape {volume.shape} is smaller than the minimum "
                          f"{tuple(min_shape)} (x, y, z)", stacklevel=2)
            skipped.append(str(path))
            continue
        pid = volume_id(path)
        _save_npy_atomic(volume.astype(dtype, copy=False), out / split[pid] / f"{pid}.npy")
        rows.append({"id": pid, "split": split[pid], "source": str(path),
                     "shape_x": volume.shape[0], "shape_y": volume.shape[1], "shape_z": volume.shape[2],
                     "subset": "" if luna_subset(path) is None else luna_subset(path)})
    if not rows:
        raise RuntimeError(f"{input_dir}: none of the {len(paths)} volumes could be used "
                           f"(skipped: {', '.join(skipped)})")
    if skipped:
        print(f"skipped {len(skipped)} of {len(paths)} volumes: {', '.join(skipped)}")
    csv_path = out / "volumes.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
