"""The seeded sample data: layouts as documented, readable with the real libraries, labels that agree
with the pixels, byte-identical for a seed, and the `.complete` marker skip."""

import gzip
import hashlib
import json
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image

from shared.sample_data import DATASETS, VERSION, generate
from shared.sample_data.__main__ import main as cli_main
from shared.sample_data.ct import write_luna16
from shared.sample_data.radiograph import FINDINGS14, render
from shared.sample_data.xray import rle_decode, rle_encode


def tree_hashes(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def contrast(img, box, lungs):
    """Mean brightness in the box minus the rest of the lung."""
    return img[box & lungs].mean() - img[lungs & ~box].mean()


# ----------------------------------------------------------------------------------------------- all


def test_every_dataset_complete_with_marker(sample_data):
    assert sorted(p.name for p in sample_data.iterdir() if not p.name.startswith(".")) == sorted(DATASETS)
    for name in DATASETS:
        marker = json.loads((sample_data / name / ".complete").read_text())
        assert marker == {"seed": 0, "version": VERSION}
    assert not list(sample_data.glob(".*.tmp*")), "temporary folders left behind"


# ---------------------------------------------------------------------------------------------- LUNA


def test_luna16_layout_and_metadata(sample_data):
    root = sample_data / "luna16"
    mhds = sorted(root.glob("subset*/*.mhd"))
    assert {p.parent.name for p in mhds} == {"subset0", "subset1"} and len(mhds) >= 12
    for mhd in mhds:
        assert re.fullmatch(r"1\.3\.6\.1\.4\.1\.14519\.5\.2\.1\.6279\.6001\.\d{30}", mhd.stem)
        assert mhd.with_suffix(".raw").is_file()
        assert f"ElementDataFile = {mhd.stem}.raw" in mhd.read_text()
        img = sitk.ReadImage(str(mhd))
        assert img.GetPixelID() == sitk.sitkInt16
        assert img.GetSize() == (128, 128, 64)
        assert 2.5 < img.GetSpacing()[0] < 2.9 and img.GetSpacing()[2] == 5.0
        assert img.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
        hu = sitk.GetArrayViewFromImage(img)
        assert -1024 <= hu.min() and hu.max() <= 3071
        assert (hu < -900).mean() > 0.2 and (hu > 300).any()  # air outside, bone inside
    ann = pd.read_csv(root / "annotations.csv")
    cand = pd.read_csv(root / "candidates.csv")
    assert list(ann.columns) == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert list(cand.columns) == ["seriesuid", "coordX", "coordY", "coordZ", "class"]
    assert set(ann.seriesuid) <= {p.stem for p in mhds} and len(ann) >= 8
    assert ann.diameter_mm.between(5, 20).all()
    assert len(cand[cand["class"] == 1]) == len(ann) and (cand["class"] == 0).sum() > 5 * len(mhds)


def test_luna16_nodules_inside_lung_and_denser(sample_data):
    root = sample_data / "luna16"
    cand = pd.read_csv(root / "candidates.csv")
    images = {}
    for _, row in cand.iterrows():
        if row.seriesuid not in images:
            path = next(root.glob(f"subset*/{row.seriesuid}.mhd"))
            images[row.seriesuid] = sitk.ReadImage(str(path))
        img = images[row.seriesuid]
        hu = sitk.GetArrayViewFromImage(img)  # z, y, x
        x, y, z = np.round(img.TransformPhysicalPointToContinuousIndex((row.coordX, row.coordY, row.coordZ)))
        x, y, z = int(x), int(y), int(z)
        centre = np.median(hu[z, y - 1 : y + 2, x - 1 : x + 2])
        ring = hu[z, y - 7 : y + 8, x - 7 : x + 8].astype(float)
        if row["class"] == 1:
            assert centre > -450, f"nodule at {row.seriesuid} ({x},{y},{z}) is not dense: {centre}"
            assert np.median(ring) < -500, "nodule surroundings are not lung"
        else:
            assert np.median(hu[z, y - 2 : y + 3, x - 2 : x + 3]) < -500, "negative candidate is not in lung"


# ---------------------------------------------------------------------------------------------- BTCV


def test_btcv_layout_and_labels(sample_data):
    root = sample_data / "btcv"
    ds = json.loads((root / "dataset_0.json").read_text())
    for key in (
        "description",
        "labels",
        "modality",
        "name",
        "numTraining",
        "tensorImageSize",
        "training",
        "validation",
    ):
        assert key in ds
    assert list(ds["labels"]) == [str(i) for i in range(14)] and ds["labels"]["6"] == "liver"
    assert len(ds["training"]) == 6 and len(ds["validation"]) == 2
    pre = json.loads((root / "btcv.json").read_text())
    assert [set(it) for it in pre["training"]] == [{"image"}] * 6
    for item in ds["training"] + ds["validation"]:
        assert re.fullmatch(r"imagesTr/img\d{4}\.nii\.gz", item["image"])
        img, lab = nib.load(root / item["image"]), nib.load(root / item["label"])
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        assert img.shape == lab.shape == (96, 96, 64)
        assert np.allclose(img.affine, lab.affine) and np.allclose(np.diag(img.affine)[:3], (4, 4, 5))
        hu, seg = np.asarray(img.dataobj), np.asarray(lab.dataobj)
        assert set(np.unique(seg)) == set(range(14))
        assert -1024 <= hu.min() and hu.max() <= 3071
        assert 30 < hu[seg == 6].mean() < 90  # liver
        assert hu[seg == 8].mean() > hu[seg == 6].mean() + 50  # contrast-filled aorta
        assert abs(hu[seg == 0].mean() - hu[seg == 1].mean()) > 100  # organs stand out from background


# ------------------------------------------------------------------------------------------- NIH CXR


def test_chestxray14_layout(sample_data):
    root = sample_data / "chestxray14"
    de = pd.read_csv(root / "Data_Entry_2017.csv")
    assert list(de.columns[:11]) == [
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
    assert list(pd.read_csv(root / "Data_Entry_2017_v2020.csv").columns) == list(de.columns[:11])
    names = list(de["Image Index"])
    assert len(names) == 96 and all(re.fullmatch(r"\d{8}_\d{3}\.png", n) for n in names)
    for n in names[:8]:
        for path in (root / "images" / n, root / "masks" / n, root / "images/images_01/images" / n):
            im = Image.open(path)
            assert im.mode == "L" and im.size == (256, 256)
    labels = {n: set(v.split("|")) - {"No Finding"} for n, v in zip(names, de["Finding Labels"])}
    assert set().union(*labels.values()) == set(FINDINGS14)

    test = (root / "test_list.txt").read_text().split()
    trainval = (root / "train_val_list.txt").read_text().split()
    assert sorted(test + trainval) == sorted(names)
    pid = lambda n: n[:8]  # noqa: E731
    assert not {pid(n) for n in test} & {pid(n) for n in trainval}, "split is not patient-wise"
    listed = []
    for split in ("train", "val", "test"):
        for line in (root / f"Xray14_{split}_official.txt").read_text().splitlines():
            name, *bits = line.split()
            assert len(bits) == 14 and {FINDINGS14[i] for i, b in enumerate(bits) if b == "1"} == labels[name]
            listed.append(name)
    assert sorted(listed) == sorted(names)
    bb = pd.read_csv(root / "BBox_List_2017.csv")
    assert list(bb.columns[:6]) == ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    assert (
        set(bb["Finding Label"])
        <= {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"}
        and len(bb) > 10
    )


def test_chestxray14_boxes_hold_visible_findings(sample_data):
    """Opacities make their box brighter than the rest of the lung, beyond what anatomy alone does there
    (measured on the mean No Finding image)."""
    root = sample_data / "chestxray14"
    de = pd.read_csv(root / "Data_Entry_2017.csv")
    normals = de[de["Finding Labels"] == "No Finding"]["Image Index"]
    normal = np.mean([np.asarray(Image.open(root / "images" / n), float) for n in normals], 0)
    bb = pd.read_csv(root / "BBox_List_2017.csv")
    opaque = bb[bb["Finding Label"].isin(["Nodule", "Mass", "Effusion", "Pneumonia", "Infiltrate", "Atelectasis"])]
    assert len(opaque) >= 10
    for _, r in opaque.iterrows():
        img = np.asarray(Image.open(root / "images" / r["Image Index"]), float)
        lungs = np.asarray(Image.open(root / "masks" / r["Image Index"])) > 0
        x, y, w, h = int(r["Bbox [x"]), int(r["y"]), int(r["w"]), int(r["h]"])
        box = np.zeros_like(lungs)
        box[y : y + h, x : x + w] = True
        assert contrast(img, box, lungs) > contrast(normal, box, lungs) + 5, (r["Image Index"], r["Finding Label"])


def test_report_locations_match_drawing():
    rng = np.random.default_rng(3)
    for side in ("right", "left"):
        for name in ("Consolidation", "Nodule", "Effusion", "Pneumothorax"):
            f = render(rng, [name], sides={name: side}).findings[0]
            rows, cols = np.nonzero(f.mask)
            # patient's right is on the image left
            assert (cols.mean() < 128) == (side == "right"), (name, side)
            if f.zone == "upper":
                assert rows.mean() < 128
            if f.zone == "lower":
                assert rows.mean() > 110


# --------------------------------------------------------------------------------------------- MIMIC


def test_mimic_layout(sample_data):
    root = sample_data / "mimic-cxr-jpg"
    jpg = root / "mimic-cxr-jpg_2-0-0"
    meta = pd.read_csv(jpg / "mimic-cxr-2.0.0-metadata.csv.gz")
    split = pd.read_csv(jpg / "mimic-cxr-2.0.0-split.csv.gz")
    chex = pd.read_csv(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert gzip.decompress((jpg / "mimic-cxr-2.0.0-split.csv.gz").read_bytes()).startswith(b"dicom_id,study_id")
    assert {"dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns", "StudyDate"} <= set(meta.columns)
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert set(split.split) == {"train", "validate", "test"}
    assert split.groupby("subject_id").split.nunique().max() == 1, "split is not patient-wise"
    assert {"PA", "AP", "LATERAL"} <= set(meta.ViewPosition)
    frontal = meta[meta.ViewPosition.isin(["PA", "AP"])]
    assert frontal.study_id.nunique() < meta.study_id.nunique(), "no lateral-only study for the AP/PA filter"
    assert {f"p{i}" for i in range(10, 20)} == {p.name for p in (jpg / "files").iterdir()}
    for _, r in meta.iterrows():
        s = str(r.subject_id)
        im = Image.open(jpg / "files" / f"p{s[:2]}" / f"p{s}" / f"s{r.study_id}" / f"{r.dicom_id}.jpg")
        assert im.mode == "L" and im.size == (r.Columns, r.Rows)
    with zipfile.ZipFile(root / "mimic-cxr_2-0-0" / "mimic-cxr-reports.zip") as zf:
        members = sorted(zf.namelist())
        assert len(members) == len(chex) == meta.study_id.nunique()
        for m in members:
            assert re.fullmatch(r"files/p1\d/p1\d{7}/s\d{8}\.txt", m)
            assert zf.read(m).decode() == (root / "mimic-cxr_2-0-0" / "mimic-cxr-reports" / m).read_text()


KEYWORDS = {
    "Pleural Effusion": "pleural effusion",
    "Cardiomegaly": "cardiomegaly",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Edema": "edema",
    "Lung Lesion": "nodule",
    "No Finding": "no acute cardiopulmonary process",
}


def test_mimic_chexpert_agrees_with_reports(sample_data):
    root = sample_data / "mimic-cxr-jpg"
    chex = pd.read_csv(root / "mimic-cxr-jpg_2-0-0" / "mimic-cxr-2.0.0-chexpert.csv.gz")
    positives = 0
    for _, r in chex.iterrows():
        s = str(int(r.subject_id))
        text = (root / "mimic-cxr_2-0-0/mimic-cxr-reports/files" / f"p{s[:2]}/p{s}/s{int(r.study_id)}.txt").read_text()
        assert "FINAL REPORT" in text and "\n FINDINGS:" in text and "\n IMPRESSION:" in text
        impression = text.split("IMPRESSION:")[1].lower()
        for label, word in KEYWORDS.items():
            value = r[label]
            assert value in (1.0, 0.0, -1.0) or np.isnan(value)
            if value == 1.0:
                positives += label != "No Finding"
                assert word in impression, (r.study_id, label)
            flat = text.lower().replace("\n ", " ")
            if value == 0.0 and label == "Pleural Effusion":
                assert "no pleural effusion" in flat
            if value == 0.0 and label == "Pneumothorax":
                assert re.search(r"no (pleural effusion or )?pneumothorax", flat)
        if r["Pleural Effusion"] == 1.0:
            assert re.search(r"(left|right) pleural effusion", impression)
    assert positives >= 10


# ---------------------------------------------------------------------------------------- RSNA, SIIM


def test_rsna_layout_and_boxes(sample_data):
    root = sample_data / "rsna-pneumonia"
    lab = pd.read_csv(root / "stage_2_train_labels.csv")
    cls = pd.read_csv(root / "stage_2_detailed_class_info.csv")
    assert list(lab.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    assert list(cls.columns) == ["patientId", "class"] and len(cls) == len(lab)
    assert set(cls["class"]) == {"Lung Opacity", "Normal", "No Lung Opacity / Not Normal"}
    assert lab[lab.Target == 0][["x", "y", "width", "height"]].isna().all().all()
    images = {}
    for pid in lab.patientId.unique():
        img = sitk.ReadImage(str(root / "stage_2_train_images" / f"{pid}.dcm"))
        assert img.GetPixelID() == sitk.sitkUInt8 and img.GetSize()[:2] == (256, 256)
        assert img.GetMetaData("0010|0020").strip() == pid
        images[pid] = sitk.GetArrayFromImage(img)[0].astype(float)
    normal = np.mean([images[p] for p in cls[cls["class"] == "Normal"].patientId], 0)
    pos = lab[lab.Target == 1]
    assert len(pos) >= 10
    for _, r in pos.iterrows():
        x, y, w, h = int(r.x), int(r.y), int(r.width), int(r.height)
        assert 0 <= x and 0 <= y and x + w <= 256 and y + h <= 256
        assert images[r.patientId][y : y + h, x : x + w].mean() > normal[y : y + h, x : x + w].mean()


def test_rle_is_siim_relative_column_major():
    mask = np.zeros((4, 5), bool)
    mask[0, 1] = mask[1, 1] = mask[3, 4] = True  # column-major positions 4, 5 and 19
    assert rle_encode(mask) == "4 2 13 1"
    assert (rle_decode("4 2 13 1", (4, 5)) == mask).all()
    assert rle_encode(np.zeros((3, 3), bool)) == "-1" and not rle_decode(" -1", (3, 3)).any()


def test_siim_layout_and_masks(sample_data):
    root = sample_data / "siim-acr-pneumothorax"
    rle = pd.read_csv(root / "train-rle.csv")
    assert list(rle.columns) == ["ImageId", " EncodedPixels"]
    positives = 0
    for image_id, code in zip(rle.ImageId, rle[" EncodedPixels"]):
        (path,) = root.glob(f"dicom-images-train/*/*/{image_id}.dcm")
        img = sitk.ReadImage(str(path))
        assert img.GetSize()[:2] == (256, 256) and img.GetMetaData("0008|0018").strip() == image_id
        mask = rle_decode(code, (256, 256))
        assert rle_encode(mask) == code.strip()
        if mask.any():
            positives += 1
            pixels = sitk.GetArrayFromImage(img)[0].astype(float)
            assert pixels[mask > 0].mean() < pixels[:, :128].mean() + 40  # a dark rim, not bone
    assert positives == len(rle) // 2


# ------------------------------------------------------------------------ determinism and the marker


def test_same_seed_same_bytes_other_seed_differs(sample_data, tmp_path):
    cheap = ["btcv", "mimic-cxr-jpg", "siim-acr-pneumothorax"]
    again = generate(tmp_path / "a", seed=0, only=cheap)
    for name in cheap:
        assert tree_hashes(again[name]) == tree_hashes(sample_data / name), name
    other = generate(tmp_path / "b", seed=1, only=["btcv"])["btcv"]
    a, b = tree_hashes(other), tree_hashes(sample_data / "btcv")
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a if k.endswith(".nii.gz"))

    # LUNA16 (the slow one) through its writer with two scans
    for folder in ("l1", "l2"):
        write_luna16(tmp_path / folder, np.random.default_rng(5), n_patients=2)
    assert tree_hashes(tmp_path / "l1") == tree_hashes(tmp_path / "l2")


def test_complete_marker_skip_and_rewrite(tmp_path, capsys):
    name = "siim-acr-pneumothorax"
    first = generate(tmp_path, seed=0, only=[name])[name]
    sentinel = first / "sentinel.txt"
    sentinel.write_text("kept when the dataset is skipped")
    generate(tmp_path, seed=0, only=[name])
    assert sentinel.exists(), "a complete dataset with the same seed was rewritten"

    cli_main(["--out", str(tmp_path), "--only", name])
    assert "skipped" in capsys.readouterr().out

    generate(tmp_path, seed=2, only=[name])
    assert not sentinel.exists() and json.loads((first / ".complete").read_text())["seed"] == 2

    (first / ".complete").unlink()  # a half-written dataset looks like this: no marker
    sentinel.write_text("stale")
    generate(tmp_path, seed=2, only=[name])
    assert not sentinel.exists() and (first / ".complete").exists()

    with pytest.raises(ValueError, match="unknown sample dataset"):
        generate(tmp_path, only=["luna17"])
