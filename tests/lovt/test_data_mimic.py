"""MIMIC-CXR preparation (lovt/data/mimic_cxr.py) and the datasets over its output."""

import gzip
import json
import logging
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lovt.data import (
    CHEXPERT_BIN_LABELS,
    ImageListDataset,
    ImageTextDataset,
    ReportAugmentationConfig,
    ReportTransform,
    ScanTransform,
    apply_subset,
    collate_image_text,
    load_dataset_config,
    load_datasets,
)
from lovt.data.dataset import open_image
from lovt.data.mimic_cxr import create_dataset, create_image_list, encode_chexpert, image_stats, main, resize_images
from lovt.data.storage import read_records, read_statistics

REPO = Path(__file__).resolve().parents[2]
LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
          "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
          "Pneumothorax", "Support Devices"]


def report(findings, impression="No acute process."):
    text = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n"
    text += " INDICATION:  ___ year old man with cough.\n \n"
    if findings is not None:
        text += f" FINDINGS:\n \n {findings}\n \n"
    if impression is not None:
        text += f" IMPRESSION:\n \n {impression}\n"
    return text


# subject, study, csv split, [(dicom_id, ViewPosition, grey value or 'corrupt'/'missing')], report, labels
STUDIES = [
    (10000001, 50000001, "train", [("d1", "PA", 100), ("d2", "LATERAL", 30)], report("Heart is normal. Lungs clear."),
     {"Cardiomegaly": 0.0, "No Finding": 1.0}),
    (10000001, 50000002, "train", [("d3", "AP", 200), ("d4", "PA", 50)], report("Small left effusion."),
     {"Pleural Effusion": 1.0, "Edema": -1.0}),
    (11000002, 50000003, "train", [("d5", "LATERAL", 80)], report("Lateral only study."), {}),  # no AP/PA view
    (11000002, 50000004, "train", [("d6", "PA", 120)], None, {}),  # report file missing
    (12000003, 50000005, "train", [("d7", "PA", 140)], " INDICATION:  cough\n \n Nothing more.\n", {}),
    (12000003, 50000006, "train", [("d8", "PA", "corrupt")], report("Corrupt image."), {}),
    (12000003, 50000007, "train", [("d9", "AP", "missing"), ("d10", "PA", 90)], report("One view lost."),
     {"Atelectasis": 1.0}),
    (13000004, 50000008, "validate", [("d11", "PA", 60)], report("Validation study. Stable."),
     {"Consolidation": 1.0}),
    (14000005, 50000009, "test", [("d12", "AP", 160)], report(None, "Test impression only."), {"Edema": 0.0}),
    (14000005, 50000010, "test", [("d13", "PA", 170)], report("Ok.", None), {}),  # 2 tokens < 3
    (10000001, 50913680, "train", [("d14", "PA", 10)], report("Custom-rule study."), {}),  # skipped by the rules
    (15000006, 50000011, "train", [("d15", "PA", 70)], "", {}),  # empty report file
]


def write_csv_gz(path, header, rows):
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in r) for r in rows]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def write_layout(root: Path, reports_as_zip=False) -> Path:
    jpg = root / "mimic-cxr-jpg_2-0-0"
    reports = root / "mimic-cxr_2-0-0"
    split, meta, chex, texts = [], [], [], {}
    for subject, study, part, views, text, labels in STUDIES:
        folder = jpg / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, (dicom, view, value) in enumerate(views):
            if value == "corrupt":
                (folder / f"{dicom}.jpg").write_bytes(b"this is not a jpeg")
            elif value != "missing":
                arr = np.full((24 + 4 * i, 20), value, dtype=np.uint8)
                arr[:4] = 255 - value  # not constant: a real variance
                Image.fromarray(arr).save(folder / f"{dicom}.jpg", quality=100)
            split.append([dicom, study, subject, part])
            meta.append([dicom, subject, study, view, 21800101, {"PA": "postero-anterior"}.get(view, "other")])
        if text is not None:
            texts[f"files/p{str(subject)[:2]}/p{subject}/s{study}.txt"] = text
        chex.append([subject, study] + [labels.get(c) for c in LABELS])
    write_csv_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split)
    write_csv_gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition",
                                                           "StudyDate", "ViewCodeSequence_CodeMeaning"], meta)
    write_csv_gz(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id"] + LABELS, chex)
    reports.mkdir(parents=True)
    if reports_as_zip:
        with zipfile.ZipFile(reports / "mimic-cxr-reports.zip", "w") as zf:
            for rel, text in texts.items():
                zf.writestr(rel, text)
    else:
        for rel, text in texts.items():
            (reports / "mimic-cxr-reports" / rel).parent.mkdir(parents=True, exist_ok=True)
            (reports / "mimic-cxr-reports" / rel).write_text(text)
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = write_layout(tmp_path_factory.mktemp("mimic"))
    return root, create_dataset(root, "mimic-cxr_ap-pa", num_workers=0)


def test_create_filters_views_assigns_splits_and_counts_skips(prepared, caplog):
    root, path = prepared
    train, val, test = (read_records(path, s) for s in ("train", "validation", "test"))
    assert [r["study_id"] for r in train] == ["50000001", "50000002", "50000007"]  # sorted by subject, study
    assert [r["study_id"] for r in val] == ["50000008"] and [r["study_id"] for r in test] == ["50000009"]
    first, second, third = train
    assert first["scan"]["dicom_id"] == ["d1"] and first["scan"]["view"] == ["PA"]  # lateral dropped
    assert second["scan"]["dicom_id"] == ["d3", "d4"] and second["num_scans"] == 2  # csv order kept
    assert third["scan"]["dicom_id"] == ["d10"]  # missing view skipped, study kept
    assert first["report"]["sentences"] == ["Heart is normal.", "Lungs clear.", "No acute process."]
    assert first["report"]["findings_sentences"] == ["Heart is normal.", "Lungs clear."]
    assert first["report"]["findings_text"] == "Heart is normal. Lungs clear."
    assert first["report"]["num_sentences"] == 3 and first["report"]["num_tokens"] == 11
    assert test[0]["report"]["findings_sentences"] == [] and test[0]["report"]["sentences"] == [
        "Test impression only."]
    assert first["study_date"] == 21800101 and first["scan"]["width"] == [20] and first["scan"]["height"] == [24]

    prep = json.loads((path / "preparation.json").read_text())
    assert prep["splits"]["train"]["skipped"] == {"missing_report": 1, "no_findings_or_impression": 3,
                                                  "no_images": 1}
    assert prep["splits"]["train"]["skipped_files"] == {"missing_image": 1, "unreadable_image": 1,
                                                        "missing_report": 1}
    assert prep["splits"]["test"]["skipped"] == {"too_few_tokens": 1}
    assert prep["splits"]["train"]["studies"] == 8  # the lateral-only study never becomes a sample
    assert (path / "images").resolve() == (root / "mimic-cxr-jpg_2-0-0" / "files").resolve()


def test_chexpert_labels(prepared):
    _, path = prepared
    first, second, _ = read_records(path, "train")
    assert first["chexpert_labels"]["Cardiomegaly"] == 0 and first["chexpert_labels"]["No Finding"] == 1
    assert first["chexpert_labels"]["Edema"] == 3  # blank
    assert second["chexpert_labels"]["Edema"] == 2 and second["chexpert_labels"]["Pleural Effusion"] == 1
    # U-ones: uncertain and positive -> 1, negative and blank -> 0
    assert second["chexpert_bin_labels"] == {"Cardiomegaly": 0, "Edema": 1, "Consolidation": 0, "Atelectasis": 0,
                                             "Pleural Effusion": 1}
    with pytest.raises(ValueError, match="chexpert.csv.gz.*'Edema' = 2"):
        encode_chexpert({"Edema": 2.0}, "x/mimic-cxr-2.0.0-chexpert.csv.gz")


def test_statistics_json(prepared):
    root, path = prepared
    stats = read_statistics(path)
    assert set(stats) == {"train", "validation", "test"}
    train = read_records(path, "train")
    # recompute from the JPEG files: pooled mean/variance of each study, then over studies
    study_means, study_vars = [], []
    for r in train:
        pix = [np.asarray(Image.open(path / "images" / f"p{r['patient_id'][:2]}" / f"p{r['patient_id']}"
                                     / f"s{r['study_id']}" / f"{d}.jpg"), dtype=np.float64) / 255
               for d in r["scan"]["dicom_id"]]
        means = np.array([p.mean() for p in pix])
        study_means.append(means.mean())
        study_vars.append(np.mean([p.var() for p in pix]) + means.var())
        assert r["scan_pixel_mean"] == pytest.approx(means.mean(), rel=1e-5)
    expected_std = math.sqrt(np.mean(study_vars) + np.var(study_means))
    assert stats["train"]["scan"]["pixel_mean"] == pytest.approx(np.mean(study_means), rel=1e-5)
    assert stats["train"]["scan"]["pixel_std"] == pytest.approx(expected_std, rel=1e-5)
    # "pos_weights" hold the negative fraction, as the original
    assert stats["train"]["chexpert_bin_pos_weights"]["Pleural Effusion"] == pytest.approx(2 / 3)
    assert stats["train"]["chexpert_bin_pos_weights"]["Cardiomegaly"] == 1.0
    assert stats["validation"]["scan"]["pixel_std"] > 0  # one study: its own variance


def test_image_stats_histogram_matches_numpy(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (33, 47), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    w, h, mean, var = image_stats(tmp_path / "a.png")
    assert (w, h) == (47, 33)
    assert mean == pytest.approx(arr.mean() / 255, abs=1e-12) and var == pytest.approx((arr / 255).var(), abs=1e-12)


def test_parquet_and_zip_give_the_same_records(prepared, tmp_path):
    _, hf_path = prepared
    root = write_layout(tmp_path / "raw", reports_as_zip=True)
    pq_path = create_dataset(root, "mimic-cxr_ap-pa", target_path=tmp_path / "pq", fmt="parquet", num_workers=0)
    assert (pq_path / "train" / "data.parquet").is_file() and not (pq_path / "dataset_dict.json").exists()
    for split in ("train", "validation", "test"):
        a, b = read_records(hf_path, split), read_records(pq_path, split)
        for r in a + b:  # only the raw text differs by layout: none; pixel stats are the same files
            r.pop("full_text", None)
        assert a == b
    assert read_statistics(hf_path) == read_statistics(pq_path)


def test_image_text_dataset_round_trip(prepared):
    _, path = prepared
    stats = read_statistics(path)["train"]
    ds = ImageTextDataset(path, "train", ScanTransform(image_size=(32, 32), dataset_stats=stats, val=True),
                          ReportTransform(ReportAugmentationConfig(sentence_shuffling="random_swaps",
                                                                   sentence_sampling=None)))
    assert len(ds) == 3 and ds.stats == stats
    with pytest.raises(IndexError):
        ds[3]
    assert ds[-1]["study_id"] == "50000007"
    item = ds[0]
    assert set(item) == {"scan", "sentences", "chexpert", "study_id", "patient_id", "view_index"}
    assert item["scan"].shape == (3, 32, 32) and item["scan"].dtype == torch.float32
    assert sorted(item["sentences"]) == sorted(["Heart is normal.", "Lungs clear.", "No acute process."])
    assert item["chexpert"].dtype == torch.float32 and item["chexpert"].shape == (5,)
    assert item["study_id"] == "50000001" and item["patient_id"] == "10000001"
    assert torch.equal(ds[1]["chexpert"], torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0]))  # CHEXPERT_BIN_LABELS order
    assert CHEXPERT_BIN_LABELS == ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

    # both views of the two-view study get drawn; 'first' is deterministic
    torch.manual_seed(0)
    assert {ds[1]["view_index"] for _ in range(30)} == {0, 1}
    first = ImageTextDataset(path, "train", view_selection="first")
    assert {first[1]["view_index"] for _ in range(5)} == {0}
    raw = first[1]["scan"]  # no transform: 1xHxW in [0, 1]
    assert raw.shape == (1, 24, 20) and 0 <= raw.min() and raw.max() <= 1
    assert raw[0, 10, 10].item() == pytest.approx(200 / 255, abs=0.02)  # d3, the AP view

    batch = collate_image_text([ds[i] for i in range(3)])
    assert batch["scan"].shape == (3, 3, 32, 32) and batch["chexpert"].shape == (3, 5)
    assert isinstance(batch["sentences"], list) and all(isinstance(s, list) for s in batch["sentences"])
    assert batch["study_id"] == ["50000001", "50000002", "50000007"] and batch["view_index"].dtype == torch.long

    with_val = ImageTextDataset(path, "validation", ScanTransform(image_size=(16, 16)),
                                val_image_transform=ScanTransform(image_size=(16, 16), val=True),
                                val_text_transform=ReportTransform(val=True))
    batch = collate_image_text([with_val[0]])
    assert batch["val_scan"].shape == (1, 3, 16, 16) and batch["val_sentences"] == [
        ["Validation study.", "Stable.", "No acute process."]]


def test_dataset_loader_in_workers(prepared):
    _, path = prepared
    ds = ImageTextDataset(path, "train", ScanTransform(image_size=(16, 16)), ReportTransform(val=True))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_image_text)
    batches = list(loader)
    assert [b["scan"].shape[0] for b in batches] == [2, 1]


def test_unreadable_image_at_load_time_is_skipped_with_a_warning(prepared, tmp_path, caplog):
    _, path = prepared
    images = tmp_path / "images"
    for r in read_records(path, "train"):
        for d in r["scan"]["dicom_id"]:
            rel = Path(f"p{r['patient_id'][:2]}/p{r['patient_id']}/s{r['study_id']}/{d}.jpg")
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            (images / rel).write_bytes((path / "images" / rel).read_bytes())
    (images / "p10/p10000001/s50000001/d1.jpg").write_bytes(b"broken")  # the only view of study 0
    (images / "p10/p10000001/s50000002/d3.jpg").write_bytes(b"\xff\xd8 truncated")  # one of two views
    ds = ImageTextDataset(path, "train", ScanTransform(image_size=(8, 8), val=True), image_root=images,
                          view_selection="first")
    with caplog.at_level(logging.WARNING):
        item = ds[0]
    assert item["study_id"] == "50000002" and item["view_index"] == 1  # next study, its readable view
    assert "d1.jpg" in caplog.text and "unreadable" in caplog.text
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageTextDataset(path, "train", image_root=tmp_path / "nowhere")


def test_image_list_and_image_dataset(prepared):
    _, path = prepared
    written = create_image_list(path)
    assert written == {"train": 4, "validation": 1, "test": 1}
    lines = (path / "train" / "image_list.csv").read_text().splitlines()
    assert lines[0] == "patient_id,study_id,dicom_id,img_file,Cardiomegaly,Edema,Consolidation,Atelectasis," \
                       "Pleural Effusion"
    assert lines[2] == "10000001,50000002,d3,p10/p10000001/s50000002/d3.jpg,0,1,0,0,1"
    with pytest.raises(FileExistsError, match="image_list.csv"):
        create_image_list(path)
    ds = ImageListDataset(path, "train", ScanTransform(image_size=(16, 16), val=True))
    assert len(ds) == 4 and ds[1]["scan"].shape == (3, 16, 16)
    assert torch.equal(ds[1]["target"], torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0]))


def test_dataset_configs_and_subsets(prepared, monkeypatch):
    _, path = prepared
    names = ["mimic-cxr_ap-pa_find-impr", "mimic-cxr_ap-pa_find-impr_03", "mimic-cxr-img_ap-pa_find-impr",
             "mimic-cxr-img_ap-pa_find-impr_03", "mimic-cxr_sample"]
    monkeypatch.setenv("LOVT_DATASETS", "/data/sets")
    for name in names:
        cfg = load_dataset_config(name)
        assert cfg.loader in ("MimicCxrDataset", "MimicCxrImageDataset")
        assert cfg.train_subset == (0.3 if name.endswith("_03") else None)
    assert load_dataset_config(names[0]).path == "/data/sets/MIMIC-CXR/mimic-cxr_ap-pa_dataset"
    monkeypatch.delenv("LOVT_DATASETS")
    assert load_dataset_config(names[0]).path == "datasets/MIMIC-CXR/mimic-cxr_ap-pa_dataset"
    with pytest.raises(FileNotFoundError, match="known:"):
        load_dataset_config("no-such-dataset")

    monkeypatch.setenv("LOVT_DATASETS", str(path.parent))
    cfg = load_dataset_config("mimic-cxr_ap-pa_find-impr_03")
    cfg.path = str(path)
    sets = load_datasets(cfg, split_kwargs={"train": {"image_transform": ScanTransform(image_size=(8, 8))}})
    assert len(sets["train"]) == 1 and len(sets["validation"]) == 1  # round(0.3 * 3): the FIRST study
    assert sets["train"][0]["study_id"] == "50000001" and sets["train"].stats == read_statistics(path)["train"]
    assert isinstance(sets["train"], ImageTextDataset) and len(sets["train"].rows) == 3
    assert len(apply_subset(sets["validation"], None)) == 1
    two = apply_subset(ImageTextDataset(path, "train"), 0.5)  # round(1.5) = 2 studies
    assert len(two) == 2 and [b["study_id"] for b in two] == ["50000001", "50000002"]
    wrapped = apply_subset(torch.utils.data.TensorDataset(torch.arange(10)), 0.3)
    assert len(wrapped) == 3 and wrapped.stats is None


def test_bad_inputs_give_clear_errors(tmp_path):
    root = write_layout(tmp_path / "raw")
    with pytest.raises(FileNotFoundError, match="nowhere: MIMIC-CXR root"):
        create_dataset(tmp_path / "nowhere")
    (root / "mimic-cxr-jpg_2-0-0" / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-chexpert.csv.gz: missing"):
        create_dataset(root, num_workers=0)
    write_csv_gz(root / "mimic-cxr-jpg_2-0-0" / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study"], [])
    with pytest.raises(ValueError, match=r"chexpert.csv.gz: missing column\(s\) \['study_id'"):
        create_dataset(root, num_workers=0)
    (root / "mimic-cxr-jpg_2-0-0" / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match="metadata.csv.gz: cannot be read"):
        create_dataset(root, num_workers=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="split.csv.gz not found"):
        create_dataset(empty)
    with pytest.raises(FileNotFoundError, match="not a prepared MIMIC-CXR dataset"):
        ImageTextDataset(empty, "train")
    with pytest.raises(ValueError, match="unknown split"):
        ImageTextDataset(empty, "training")


def test_missing_reports_and_existing_target(tmp_path):
    root = write_layout(tmp_path / "raw")
    for f in (root / "mimic-cxr_2-0-0" / "mimic-cxr-reports").rglob("*.txt"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="reports not found"):
        create_dataset(root, num_workers=0)
    with pytest.raises(FileNotFoundError, match="missing_dir: reports folder/zip not found"):
        create_dataset(root, reports=tmp_path / "missing_dir", num_workers=0)
    (tmp_path / "elsewhere" / "p10").mkdir(parents=True)  # reports given explicitly, all missing
    with pytest.raises(RuntimeError, match="no study could be prepared"):
        create_dataset(root, reports=tmp_path / "elsewhere", num_workers=0)
    (root / "mimic-cxr_dataset").mkdir()  # the default config's target
    with pytest.raises(FileExistsError, match="mimic-cxr_dataset: already exists"):
        create_dataset(root)


def test_command_line_on_the_sample_data(tmp_path):
    """`python lovt/data/mimic_cxr.py create` and `create_image_list` as a user runs them."""
    from shared.sample_data import generate

    root = generate(tmp_path, seed=0, only=["mimic-cxr-jpg"])["mimic-cxr-jpg"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    target = tmp_path / "prepared"
    cmd = [sys.executable, "lovt/data/mimic_cxr.py", "create", str(root), "--config", "mimic-cxr_ap-pa",
           "--target_path", str(target), "--num_workers", "2"]
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    main(["create_image_list", "--path", str(target)])  # in-process: the script entry is tested above
    prep = json.loads((target / "preparation.json").read_text())
    kept = {s: prep["splits"][s]["kept"] for s in ("train", "validation", "test")}
    assert kept["train"] > 0 and kept["validation"] > 0 and kept["test"] > 0
    records = read_records(target, "train")
    assert all(set(r["scan"]["view"]) <= {"AP", "PA"} for r in records)
    assert all(r["report"]["sentences"] for r in records)
    # every image of the sample's split file with an AP/PA view is in the dataset, in its split
    import pandas as pd

    jpg = root / "mimic-cxr-jpg_2-0-0"
    table = pd.read_csv(jpg / "mimic-cxr-2.0.0-split.csv.gz").merge(
        pd.read_csv(jpg / "mimic-cxr-2.0.0-metadata.csv.gz"), on=["dicom_id", "study_id", "subject_id"])
    frontal = table[table.ViewPosition.isin(["AP", "PA"])]
    for csv_split, split in (("train", "train"), ("validate", "validation"), ("test", "test")):
        got = {d for r in read_records(target, split) for d in r["scan"]["dicom_id"]}
        assert got == set(frontal[frontal.split == csv_split].dicom_id)
    lateral = set(table[~table.ViewPosition.isin(["AP", "PA"])].dicom_id)
    assert lateral and not lateral & {d for r in records for d in r["scan"]["dicom_id"]}
    ds = ImageTextDataset(target, "train", ScanTransform(dataset_stats=read_statistics(target)["train"]))
    assert ds[0]["scan"].shape == (3, 224, 224)
    assert sum(1 for _ in open(target / "train" / "image_list.csv")) == 1 + sum(r["num_scans"] for r in records)


def test_draft_decoding_is_opt_in(tmp_path):
    arr = (np.add.outer(np.arange(900), np.arange(1200)) % 256).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.jpg", quality=90)
    assert open_image(tmp_path / "big.jpg").size == (1200, 900)  # default: full decode, as the original
    small = open_image(tmp_path / "big.jpg", draft_size=224)
    assert small.mode == "L" and 224 <= min(small.size) < 900 and small.size[0] * 900 == small.size[1] * 1200


def test_resized_image_copies(prepared):
    _, path = prepared
    assert resize_images(path, size=16, num_workers=2) == {"written": 6}
    assert resize_images(path, size=16, num_workers=0) == {"existing": 6}  # resumes, rewrites nothing
    (path / "images_16" / "p10/p10000001/s50000001/d1.jpg").unlink()
    assert resize_images(path, size=16, num_workers=0) == {"existing": 5, "written": 1}
    copy = Image.open(path / "images_16" / "p10/p10000001/s50000002/d4.jpg")
    assert copy.size == (16, round(28 * 16 / 20))  # shorter side 20 -> 16, aspect kept
    ds = ImageTextDataset(path, "train", image_root=path / "images_16", view_selection="first")
    assert ds[0]["scan"].shape == (1, round(24 * 16 / 20), 16)


def test_default_config_keeps_every_view(tmp_path):
    root = write_layout(tmp_path / "raw")
    path = create_dataset(root, num_workers=0)  # the original's default builder config: all views
    assert path.name == "mimic-cxr_dataset"
    views = {r["study_id"]: r["scan"]["view"] for r in read_records(path, "train")}
    assert views["50000001"] == ["PA", "LATERAL"] and views["50000003"] == ["LATERAL"]
