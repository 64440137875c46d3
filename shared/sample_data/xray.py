"""Chest X-ray datasets: NIH ChestX-ray14 (PNG), RSNA Pneumonia (DICOM + boxes), SIIM-ACR (DICOM + RLE)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .ct import _write_csv
from .phantoms import bbox
from .radiograph import FINDINGS14, render

BBOX_NAMES = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Effusion",
    "Infiltration": "Infiltrate",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
SIIM_UID_ROOT = "1.2.276.0.7230010.3.1"


def write_dicom(img: np.ndarray, path: Path, tags: dict):
    """8-bit MONOCHROME2 DICOM via SimpleITK/GDCM; UIDs, dates and times come from `tags` so the bytes
    depend only on the inputs (GDCM would otherwise stamp fresh UIDs and the current time)."""
    import SimpleITK as sitk  # here, not at the top: the PNG/JPEG datasets are written without it (GPU check)

    im = sitk.GetImageFromArray(img)
    fixed = {
        "0008|0020": "20190101",
        "0008|0030": "000000",
        "0008|0012": "20190101",
        "0008|0013": "000000",
        "0008|0060": "CR",
        "0018|0015": "CHEST",
        "0008|0064": "WSD",
        "0018|0088": "1",  # GDCM adds this only after a DICOM was read in the process; pin it
    }
    for k, v in {**fixed, **tags}.items():
        im.SetMetaData(k, str(v))
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    w.SetFileName(str(path))
    w.Execute(im)


def _uuid(rng):
    h = "".join(f"{v:x}" for v in rng.integers(0, 16, 32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _labels_for(i, rng):
    """Cycle through the 14 labels so each appears several times; 40 % of images have no finding."""
    if i % 5 in (0, 1):
        return []
    primary = FINDINGS14[(i - 2 * (i // 5 + 1)) % 14]
    labels = [primary]
    if rng.random() < 0.25:
        extra = FINDINGS14[int(rng.integers(14))]
        if extra not in labels and "Emphysema" not in (extra, primary):
            labels.append(extra)
    return labels


def write_chestxray14(root: Path, rng, n_images=96, n_patients=40):
    """NIH ChestX-ray14 layout (+ DiRA/benchmark list files, LoVT's nested image folder and lung masks)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    nested = root / "images" / "images_01" / "images"
    nested.mkdir(parents=True)
    patient_of = np.sort(rng.integers(1, n_patients + 1, n_images))
    patient_of[:n_patients] = np.arange(1, n_patients + 1)  # every patient has at least one image
    patient_of.sort()
    entries, boxes, lists = [], [], {"train": [], "val": [], "test": []}
    followup = {}
    for i, pid in enumerate(patient_of):
        pid = int(pid)
        fu = followup.get(pid, -1) + 1
        followup[pid] = fu
        name = f"{pid:08d}_{fu:03d}.png"
        labels = _labels_for(i, rng)
        view = "PA" if rng.random() < 0.8 else "AP"
        r = render(rng, labels, view=view)
        Image.fromarray(r.image).save(root / "images" / name)
        Image.fromarray((r.lungs * 255).astype(np.uint8)).save(root / "masks" / name)
        os.symlink(f"../../{name}", nested / name)
        age = 20 + (pid * 7) % 65
        entries.append(
            [
                name,
                "|".join(labels) or "No Finding",
                fu,
                pid,
                age,
                "MF"[pid % 2],
                view,
                256,
                256,
                0.572,
                0.572,
            ]
        )
        for f in r.findings:
            b = bbox(f.mask)
            if f.name in BBOX_NAMES and b is not None:
                boxes.append([name, BBOX_NAMES[f.name], *(float(v) for v in b)])
        split = "test" if pid % 4 == 0 else ("val" if pid % 8 == 3 else "train")
        lists[split].append(f"{name} " + " ".join("1" if n in labels else "0" for n in FINDINGS14))

    header = [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
        "View Position",
        "OriginalImage[Width",
        "Height]",
        "OriginalImagePixelSpacing[x",
        "y]",
    ]
    _write_csv(root / "Data_Entry_2017_v2020.csv", header, entries)
    _write_csv(root / "Data_Entry_2017.csv", header + [""], [e + [""] for e in entries])  # trailing comma
    _write_csv(
        root / "BBox_List_2017.csv",
        ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", ""],
        [b + ["", "", ""] for b in boxes],
    )
    test = [ln.split()[0] for ln in lists["test"]]
    trainval = [ln.split()[0] for ln in lists["train"] + lists["val"]]
    (root / "train_val_list.txt").write_text("\n".join(sorted(trainval)) + "\n")
    (root / "test_list.txt").write_text("\n".join(sorted(test)) + "\n")
    for split, official in (("train", "train"), ("val", "val"), ("test", "test")):
        (root / f"Xray14_{official}_official.txt").write_text("\n".join(lists[split]) + "\n")


def write_rsna(root: Path, rng, n_images=40):
    """RSNA Pneumonia Detection layout: stage_2_train_images/<patientId>.dcm + label/class csvs."""
    (root / "stage_2_train_images").mkdir(parents=True)
    labels, classes = [], []
    for i in range(n_images):
        pid = _uuid(rng)
        kind = ("Lung Opacity", "Normal", "No Lung Opacity / Not Normal")[i % 3]
        if kind == "Lung Opacity":
            n = 1 if rng.random() < 0.6 else 2
            findings = ["Pneumonia"] if n == 1 else ["Pneumonia", "Consolidation"]
            sides = {"Pneumonia": "right", "Consolidation": "left"} if n == 2 else None
        elif kind == "Normal":
            findings, sides = [], None
        else:
            findings, sides = [["Nodule"], ["Effusion"], ["Cardiomegaly"]][(i // 3) % 3], None
        view = "PA" if rng.random() < 0.5 else "AP"
        r = render(rng, findings, view=view, sides=sides)
        sex = "MF"[int(rng.integers(2))]
        write_dicom(
            r.image,
            root / "stage_2_train_images" / f"{pid}.dcm",
            {
                "0010|0010": pid,
                "0010|0020": pid,
                "0010|0040": sex,
                "0010|1010": f"{int(rng.integers(20, 85))}",
                "0018|5101": view,
                "0020|000d": f"{SIIM_UID_ROOT}.2.{i + 1}",
                "0020|000e": f"{SIIM_UID_ROOT}.3.{i + 1}",
                "0008|0018": f"{SIIM_UID_ROOT}.4.{i + 1}",
                "0008|103e": f"view: {view}",
            },
        )
        opac = [bbox(f.mask) for f in r.findings if f.name in ("Pneumonia", "Consolidation")]
        opac = [b for b in opac if b is not None]
        if opac:
            labels += [[pid, float(x), float(y), float(w), float(h), 1] for x, y, w, h in opac]
            classes += [[pid, "Lung Opacity"]] * len(opac)
        else:
            labels.append([pid, "", "", "", "", 0])
            classes.append([pid, "Normal" if not findings else "No Lung Opacity / Not Normal"])
    _write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], labels)
    _write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], classes)


def rle_encode(mask: np.ndarray) -> str:
    """SIIM-ACR relative RLE: over the column-major flattened mask, pairs (gap since the end of the
    previous run, run length); '-1' for an empty mask."""
    flat = np.concatenate([[0], mask.T.flatten().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) == 0:
        return "-1"
    gaps = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{g} {n}" for g, n in zip(gaps, ends - starts))


def rle_decode(rle: str, shape) -> np.ndarray:
    """Inverse of rle_encode (the decoding the original challenge and LoVT use)."""
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    if rle.strip() != "-1":
        pos = 0
        vals = [int(v) for v in rle.split()]
        for gap, n in zip(vals[0::2], vals[1::2]):
            pos += gap
            flat[pos : pos + n] = 1
            pos += n
    return flat.reshape(shape[1], shape[0]).T


def write_siim(root: Path, rng, n_images=40):
    """SIIM-ACR layout: dicom-images-train/<study>/<series>/<ImageId>.dcm + train-rle.csv."""
    rows = []
    for i in range(n_images):
        has_ptx = i % 2 == 0
        r = render(rng, ["Pneumothorax"] if has_ptx else [])
        uid = f"{SIIM_UID_ROOT}.4.8323329.{1000 + i * 37}.{1517875160 + i}.{int(rng.integers(100000, 999999))}"
        study, series = (
            f"{SIIM_UID_ROOT}.2.8323329.{1000 + i * 37}.{1517875160 + i}",
            f"{SIIM_UID_ROOT}.3.8323329.{1000 + i * 37}",
        )
        folder = root / "dicom-images-train" / study / series
        folder.mkdir(parents=True)
        write_dicom(
            r.image,
            folder / f"{uid}.dcm",
            {
                "0008|0018": uid,
                "0020|000d": study,
                "0020|000e": series,
                "0010|0020": _uuid(rng),
                "0018|5101": "PA",
                "0010|0040": "MF"[i % 2],
            },
        )
        rows.append([uid, " " + rle_encode(r.findings[0].mask if has_ptx else np.zeros((1, 1), bool))])
    _write_csv(root / "train-rle.csv", ["ImageId", " EncodedPixels"], rows)
