"""Synthetic CT: LUNA16-style chest scans (MetaImage) and BTCV-style abdominal scans (NIfTI + labels).

Arrays are built in (x, y, z) index order, the order the Models Genesis recipe uses after transposing
SimpleITK's (z, y, x). Chest scans follow LPS (+x patient left, +y posterior, +z superior) like
LUNA16's identity-direction .mhd files; the abdominal scans use an RAS affine (+x right, +y anterior).
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .phantoms import branching_tree, ellipsoid, segment, smooth_noise, soft_ellipsoid

LUNA_SHAPE = (128, 128, 64)  # x, y, z voxels
LUNA_UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
BTCV_SHAPE = (96, 96, 64)
BTCV_SPACING = (4.0, 4.0, 5.0)
BTCV_LABELS = {
    "0": "background",
    "1": "spleen",
    "2": "rkid",
    "3": "lkid",
    "4": "gall",
    "5": "eso",
    "6": "liver",
    "7": "sto",
    "8": "aorta",
    "9": "IVC",
    "10": "veins",
    "11": "pancreas",
    "12": "rad",
    "13": "lad",
}


def _tubes(hu, segments, spacing, value, wall=None, within=None):
    """Paint capsules given in millimetres ([(p0_mm, p1_mm, radius_mm)]) into `hu` (index space)."""
    for p0, p1, r in segments:
        a, b = np.asarray(p0) / spacing, np.asarray(p1) / spacing
        if wall is not None:
            m = segment(hu.shape, a, b, r + 1.5, spacing)
            hu[m if within is None else m & within] = wall
        m = segment(hu.shape, a, b, r, spacing)
        hu[m if within is None else m & within] = value


def chest_ct(rng, spacing):
    """One chest phantom: (hu int16 (x, y, z), lung mask, [(nodule centre as voxel index, diameter_mm)])."""
    shape, sp = LUNA_SHAPE, np.asarray(spacing)
    X, Y, Z = shape
    cx, cy = X / 2 + rng.uniform(-3, 3), Y / 2 + rng.uniform(-3, 3)
    ax, ay = rng.uniform(52, 60), rng.uniform(38, 45)
    hu = np.full(shape, -1000.0, np.float32)
    body = ellipsoid((X, Y), (cx, cy), (ax, ay))[..., None].repeat(Z, 2)
    inner = ellipsoid((X, Y), (cx, cy), (ax - 4, ay - 4))[..., None].repeat(Z, 2)
    hu[body] = -100 + rng.uniform(-15, 15)  # subcutaneous fat
    hu[inner] = 40 + rng.uniform(-10, 10)  # muscle / mediastinum

    zc, zr = rng.uniform(0.56, 0.62) * Z, rng.uniform(0.45, 0.52) * Z
    lung_x = rng.uniform(0.42, 0.48) * ax
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        lungs |= ellipsoid(shape, (cx + side * lung_x, cy + 0.05 * ay, zc), (0.34 * ax, 0.62 * ay, zr))
    heart = ellipsoid(
        shape,
        (cx + 0.12 * ax, cy - 0.22 * ay, 0.3 * Z),
        np.array([0.34 * ax, 0.38 * ay, 0.27 * Z]) * rng.uniform(0.9, 1.15),
    )
    lungs &= inner & ~heart
    hu[lungs] = -850 + rng.uniform(-30, 30)
    hu[heart & inner] = 40

    # spine (vertebral bodies with discs) and posterior ribs
    spine = ellipsoid((X, Y), (cx, cy + 0.78 * ay), (14 / sp[0], 14 / sp[1]))[..., None].repeat(Z, 2)
    cortex = spine & ~ellipsoid((X, Y), (cx, cy + 0.78 * ay), (10 / sp[0], 10 / sp[1]))[..., None].repeat(Z, 2)
    hu[spine] = 300
    hu[cortex] = 800
    discs = np.zeros(Z, bool)
    discs[int(rng.integers(0, 5)) :: 5] = True
    hu[spine & discs] = 80
    ring = ellipsoid((X, Y), (cx, cy), (ax - 5, ay - 5)) & ~ellipsoid((X, Y), (cx, cy), (ax - 7.5, ay - 7.5))
    _, gy = np.ogrid[:X, :Y]
    ring &= gy > cy - 0.3 * ay
    for z in range(int(rng.integers(0, 4)), Z, 4):
        hu[:, :, z][ring] = 700

    # airways: trachea -> carina -> main bronchi -> small branching trees (walls visible in lung)
    carina = np.array([cx, cy, zc + 0.2 * zr]) * sp
    airway = [(np.array([cx, cy - 0.05 * ay, Z - 1]) * sp, carina, 8.0)]
    vessels = []
    for side in (-1, 1):
        hilum = np.array([cx + side * 0.55 * lung_x, cy + 0.05 * ay, zc]) * sp
        airway.append((carina, hilum, 5.0))
        for _ in range(2):
            d = np.array([side * 1.0, rng.normal(0, 0.6), rng.normal(0, 0.8)])
            airway += branching_tree(rng, hilum, d, 25.0, 3.5, 2, spread=0.5)
        for _ in range(6):
            d = np.array([side * rng.uniform(0.3, 1.0), rng.normal(0, 0.7), rng.normal(0, 0.9)])
            vessels += branching_tree(rng, hilum, d, 30.0, 4.0, 3, spread=0.7)
    _tubes(hu, vessels, sp, 40.0, within=lungs)
    _tubes(hu, airway[3:], sp, -1000.0, wall=-150.0, within=lungs)
    _tubes(hu, airway[:3], sp, -1000.0)
    aorta = [
        (
            np.array([cx + 0.1 * ax, cy - 0.1 * ay, 0.5 * Z]) * sp,
            np.array([cx + 0.1 * ax, cy + 0.1 * ay, 0.8 * Z]) * sp,
            13.0,
        ),
        (
            np.array([cx + 0.1 * ax, cy + 0.1 * ay, 0.8 * Z]) * sp,
            np.array([cx + 0.2 * ax, cy + 0.6 * ay, 0]) * sp,
            11.0,
        ),
    ]
    _tubes(hu, aorta, sp, 45.0)

    # nodules: spheres well inside lung, 0-3 per patient
    nodules = []
    depth_mm = ndimage.distance_transform_edt(lungs, sampling=sp)
    for _ in range(rng.choice(4, p=[0.2, 0.35, 0.3, 0.15])):
        diam = rng.uniform(6.0, 20.0)
        ok = np.argwhere(depth_mm > diam / 2 + 4)
        if len(ok) == 0:
            continue
        c = ok[rng.integers(len(ok))].astype(float) + rng.uniform(-0.4, 0.4, 3)
        w = soft_ellipsoid(shape, c, diam / 2 / sp, edge=0.3)
        hu = hu * (1 - w) + rng.uniform(-20, 60) * w
        nodules.append((c, diam))

    hu = ndimage.gaussian_filter(hu, (0.6, 0.6, 0.3))
    hu += np.where(lungs, smooth_noise(rng, shape, 1.5, 25.0), 0) + rng.normal(0, 18, shape).astype(np.float32)
    return np.clip(hu, -1024, 3071).astype(np.int16), lungs, nodules


def write_luna16(root: Path, rng, n_patients=16, n_subsets=2):
    """LUNA16 layout: subset<k>/<seriesuid>.mhd/.raw, annotations.csv, candidates.csv."""
    import SimpleITK as sitk  # here, not at the top: the other datasets are written without it (GPU check)

    ann, cand = [], []
    for i in range(n_patients):
        uid = LUNA_UID_PREFIX + str(rng.integers(1, 10)) + "".join(map(str, rng.integers(0, 10, 29)))
        spacing = (round(rng.uniform(2.6, 2.8), 4),) * 2 + (5.0,)
        origin = np.round(-np.asarray(LUNA_SHAPE) * spacing / 2 + rng.uniform(-15, 15, 3), 3)
        origin[2] -= 120
        hu, lungs, nodules = chest_ct(rng, spacing)
        img = sitk.GetImageFromArray(hu.transpose(2, 1, 0))  # numpy (z, y, x) for SimpleITK
        img.SetSpacing(spacing)
        img.SetOrigin(tuple(float(v) for v in origin))
        folder = root / f"subset{i % n_subsets}"
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(folder / f"{uid}.mhd"), useCompression=False)

        for c, diam in nodules:
            x, y, z = origin + c * spacing  # world mm (identity direction)
            ann.append([uid, f"{x:.4f}", f"{y:.4f}", f"{z:.4f}", f"{diam:.4f}"])
            cand.append([uid, f"{x:.2f}", f"{y:.2f}", f"{z:.2f}", 1])
        inside = np.argwhere(ndimage.binary_erosion(lungs, iterations=3))  # well inside lung
        for idx in inside[rng.choice(len(inside), 20, replace=False)]:
            if all(np.linalg.norm((idx - c) * spacing) > diam for c, diam in nodules):
                x, y, z = origin + idx * np.asarray(spacing)
                cand.append([uid, f"{x:.2f}", f"{y:.2f}", f"{z:.2f}", 0])
    _write_csv(root / "annotations.csv", ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], ann)
    _write_csv(root / "candidates.csv", ["seriesuid", "coordX", "coordY", "coordZ", "class"], cand)


def abdomen_ct(rng):
    """One abdominal phantom: returns (hu int16, labels uint8) in (x, y, z) with RAS orientation."""
    shape = BTCV_SHAPE
    X, Y, Z = shape
    s = rng.uniform(0.9, 1.1)
    o = np.array([48, 50, 32]) + rng.uniform(-3, 3, 3)

    def at(x, y, z):  # organ position relative to the body centre, scaled per patient
        return o + (np.array([x, y, z]) - [48, 50, 32]) * s + rng.uniform(-1.5, 1.5, 3)

    hu = np.full(shape, -1000.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    ax, ay = 42 * s, 30 * s
    hu[ellipsoid((X, Y), o[:2], (ax, ay))[..., None].repeat(Z, 2)] = -100
    hu[ellipsoid((X, Y), o[:2], (ax - 3, ay - 3))[..., None].repeat(Z, 2)] = 15
    gas = (smooth_noise(rng, shape, 2.5, 1.0) > 1.3) & ellipsoid(shape, at(48, 56, 10), (30, 20, 22))
    hu[gas] = -900  # bowel gas below the organs
    spine = ellipsoid((X, Y), at(48, 27, 0)[:2], (6 * s, 6 * s))[..., None].repeat(Z, 2)
    hu[spine] = 500

    organs = [  # (label, kind, geometry, HU); later organs overwrite earlier ones
        (6, "e", (at(62, 54, 44), np.array([17, 15, 13]) * s), 60),
        (1, "e", (at(28, 40, 44), np.array([7, 9, 8]) * s), 50),
        (2, "e", (at(63, 33, 27), np.array([6, 6, 9]) * s), 150),
        (3, "e", (at(33, 33, 29), np.array([6, 6, 9]) * s), 150),
        (7, "e", (at(34, 58, 46), np.array([10, 9, 8]) * s), 20),
        (4, "e", (at(60, 65, 35), np.array([4, 4, 6]) * s), 5),
        (11, "t", (at(36, 46, 33), at(57, 50, 32), 3.2 * s), 45),
        (8, "t", (at(46, 36, 63), at(46, 36, 2), 3.0 * s), 180),
        (9, "t", (at(56, 38, 63), at(56, 38, 2), 3.0 * s), 110),
        (10, "t", (at(30, 43, 38), at(56, 48, 40), 1.8 * s), 140),
        (5, "t", (at(44, 37, 64), at(38, 52, 50), 2.2 * s), 40),
        (12, "e", (at(58, 37, 39), np.array([2, 2, 3]) * s), 25),
        (13, "e", (at(38, 37, 40), np.array([2, 2, 3]) * s), 25),
    ]
    for label, kind, geo, value in organs:
        m = ellipsoid(shape, *geo) if kind == "e" else segment(shape, *geo)
        lab[m] = label
        hu[m] = value + rng.uniform(-8, 8)
    hu[(lab == 7) & ellipsoid(shape, at(34, 62, 52), (7, 5, 3))] = -800  # air in the fundus
    hu = ndimage.gaussian_filter(hu, 0.5) + smooth_noise(rng, shape, 1.5, 8.0) + rng.normal(0, 12, shape)
    return np.clip(hu, -1024, 3071).astype(np.int16), lab


def _write_nifti_gz(arr, path: Path):
    """NIfTI-1 .nii.gz with a fixed gzip header (mtime 0) so equal arrays give equal bytes."""
    affine = np.diag([*BTCV_SPACING, 1.0])
    affine[:3, 3] = -np.asarray(arr.shape) * BTCV_SPACING / 2
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def write_btcv(root: Path, rng, train_ids=(1, 2, 3, 4, 5, 6), val_ids=(35, 36)):
    """BTCV layout: imagesTr/img00XX.nii.gz, labelsTr/label00XX.nii.gz, dataset_0.json, btcv.json."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    items = {}
    for i in (*train_ids, *val_ids):
        hu, lab = abdomen_ct(rng)
        _write_nifti_gz(hu, root / "imagesTr" / f"img{i:04d}.nii.gz")
        _write_nifti_gz(lab, root / "labelsTr" / f"label{i:04d}.nii.gz")
        items[i] = {"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"}
    dataset = {
        "description": "synthetic btcv-style abdomen phantoms (shared.sample_data)",
        "labels": BTCV_LABELS,
        "licence": "synthetic",
        "modality": {"0": "CT"},
        "name": "btcv",
        "numTest": 0,
        "numTraining": len(train_ids) + len(val_ids),
        "reference": "shared.sample_data",
        "release": "1.0",
        "tensorImageSize": "3D",
        "test": [],
        "training": [items[i] for i in train_ids],
        "validation": [items[i] for i in val_ids],
    }
    (root / "dataset_0.json").write_text(json.dumps(dataset, indent=4) + "\n")
    pretrain = {
        "training": [{"image": items[i]["image"]} for i in train_ids],
        "validation": [{"image": items[i]["image"]} for i in val_ids],
    }
    (root / "btcv.json").write_text(json.dumps(pretrain, indent=4) + "\n")


def _write_csv(path: Path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
