"""Seeded synthetic sample data in the on-disk layouts the original codebases read.

    from shared.sample_data import generate
    paths = generate("data/sample", seed=0)               # {dataset name: Path}
    python -m shared.sample_data --out data/sample --seed 0 [--only luna16 btcv]

Everything is drawn from numpy's seeded generator (one stream per dataset, so `only=` does not change
the other datasets); the same seed gives byte-identical files (DICOM UIDs/dates, gzip and zip times are
fixed). Each dataset is written to a hidden temporary folder, gets a `.complete` marker (seed + version)
and is then renamed into place; a dataset whose marker matches is skipped on the next call.

What each folder holds (layouts as the original loaders read them; all images 8-bit unless noted):

luna16/                16 chest CT scans, ~32 MB
    subset0/, subset1/: <seriesuid>.mhd + .raw, int16 HU, 128x128x64 voxels (x, y, z), spacing
    ~2.7x2.7x5.0 mm, identity direction, LUNA-style origin; uid 1.3.6.1.4.1.14519.5.2.1.6279.6001.<30 digits>.
    annotations.csv (seriesuid,coordX,coordY,coordZ,diameter_mm; world mm) and candidates.csv
    (seriesuid,coordX,coordY,coordZ,class): each nodule is class 1, plus ~20 class-0 lung points per scan.
    Signal: body (fat, muscle), lungs ~-850 HU with texture, trachea and walled branching bronchi, branching
    vessels, heart, aorta, spine, ribs; 0-3 nodules (6-20 mm, ~0 HU) per scan at the recorded positions.
btcv/                  8 abdominal CT cases, 96x96x64 voxels, 4x4x5 mm, RAS affine, ~5 MB
    imagesTr/img00XX.nii.gz (int16 HU), labelsTr/label00XX.nii.gz (uint8 0..13); dataset_0.json (VoCo's
    BTCV fine-tuning json: labels "0".."13", training 0001-0006, validation 0035-0036); btcv.json
    (VoCo pre-training list: "image" keys only). Signal: the 13 BTCV organs as jittered blobs and tubes
    with distinct HU; the label map is the organ masks.
chestxray14/           96 radiographs of 40 patients, 256x256 PNG, ~4 MB
    images/<patient 8 digits>_<follow-up 3 digits>.png; Data_Entry_2017.csv (and the _v2020 copy LoVT
    reads); BBox_List_2017.csv (boxes in 256-px coordinates); train_val_list.txt / test_list.txt
    (patient-wise); Xray14_{train,val,test}_official.txt (DiRA / BenchmarkTransferLearning format:
    "<name> " + 14 0/1 labels in FINDINGS14 order); masks/<name>.png lung-field masks (0/255) for
    segmentation; images/images_01/images/ relative symlinks (LoVT's NIH layout). Signal: each of the 14
    findings drawn where it belongs; ~40 % "No Finding".
mimic-cxr-jpg/         60 studies of 30 patients (3 per p10..p19), split 24/3/3 patients, ~2 MB
    LoVT's MIMIC root: mimic-cxr-jpg_2-0-0/files/p1X/p<subject>/s<study>/<dicom_id>.jpg and
    mimic-cxr-2.0.0-{split,metadata,chexpert}.csv.gz; mimic-cxr_2-0-0/mimic-cxr-reports.zip (members
    files/p1X/p<subject>/s<study>.txt, also extracted to mimic-cxr-reports/). PA/AP views plus lateral
    ones (some studies lateral only, which the AP/PA filter drops); reports (FINDINGS/IMPRESSION) describe
    the drawn findings with side/zone words; CheXpert labels (1.0/0.0/-1.0/blank) from the same sentences.
rsna-pneumonia/        40 DICOMs, 256x256, ~2.5 MB
    stage_2_train_images/<patientId>.dcm; stage_2_train_labels.csv (patientId,x,y,width,height,Target; one
    row per box, empty box for Target 0); stage_2_detailed_class_info.csv. Boxes surround drawn opacities.
siim-acr-pneumothorax/ 40 DICOMs, 256x256, half positive, ~2.5 MB
    dicom-images-train/<study>/<series>/<ImageId>.dcm; train-rle.csv ("ImageId, EncodedPixels": relative
    RLE over the column-major image, "-1" when empty). Masks are the drawn pneumothorax rims.
covid-rural/           24 AP radiographs of 10 patients, 256x256, ~0.5 MB (LoVT's COVID rural layout)
    jpgs/COVID-19-AR-<id>_<visit>-<day>-2012-XR.jpg (colour JPEGs); pngs_masks/<same>.png 0/1 opacity masks
    (union of the drawn pneumonia/consolidation/infiltration); the last two images have no mask.
object-cxr/            24 train + 8 dev radiographs, 256x256, ~0.6 MB (object-CXR challenge layout)
    input/{train,dev}.csv (image_name, annotation: ';'-joined "0 x1 y1 x2 y2" boxes, "1 x1 y1 x2 y2"
    ellipses, "2 x y x y ..." polygons) and input/{train,dev}/*.jpg; every other image carries 1-3 bright
    foreign objects drawn at the annotated places.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np

from .ct import write_btcv, write_luna16
from .localized_extra import write_covid_rural, write_object_cxr
from .mimic import write_mimic
from .xray import write_chestxray14, write_rsna, write_siim

VERSION = 3
DATASETS = {
    "luna16": write_luna16,
    "btcv": write_btcv,
    "chestxray14": write_chestxray14,
    "mimic-cxr-jpg": write_mimic,
    "rsna-pneumonia": write_rsna,
    "siim-acr-pneumothorax": write_siim,
    "covid-rural": write_covid_rural,
    "object-cxr": write_object_cxr,
}
MARKER = ".complete"


def is_complete(folder: Path, seed: int) -> bool:
    """True when `folder` holds a finished dataset written with this seed and generator version."""
    try:
        return json.loads((folder / MARKER).read_text()) == {"seed": seed, "version": VERSION}
    except (OSError, ValueError):
        return False


def generate_one(out_dir, name: str, seed: int = 0, force: bool = False) -> Path:
    """Write one dataset atomically (temp folder, marker, rename) unless it is already complete."""
    if name not in DATASETS:
        raise ValueError(f"unknown sample dataset {name!r}; choose from {sorted(DATASETS)}")
    out_dir = Path(out_dir)
    final = out_dir / name
    if not force and is_complete(final, seed):
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"  # per process, so parallel test workers don't collide
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # one stream per dataset
    DATASETS[name](tmp, rng)
    (tmp / MARKER).write_text(json.dumps({"seed": seed, "version": VERSION}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def generate(out_dir, seed: int = 0, only=None, force: bool = False, progress=None) -> dict:
    """Write all datasets (or those named in `only`) under `out_dir`; returns {name: Path}.

    `progress(name, path, seconds, skipped)` is called after each dataset (the CLI prints with it).
    """
    import time

    names = list(DATASETS) if only is None else list(only)
    for n in names:
        if n not in DATASETS:
            raise ValueError(f"unknown sample dataset {n!r}; choose from {sorted(DATASETS)}")
    paths = {}
    for n in names:
        t0 = time.perf_counter()
        skipped = not force and is_complete(Path(out_dir) / n, seed)
        paths[n] = generate_one(out_dir, n, seed, force)
        if progress is not None:
            progress(n, paths[n], time.perf_counter() - t0, skipped)
    return paths


__all__ = ["DATASETS", "VERSION", "generate", "generate_one", "is_complete"]
