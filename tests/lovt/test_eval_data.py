"""Downstream dataset preparation on the sample data and on tiny COVID / Object-CXR layouts,
and the loaders' input pipeline."""

import csv
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lovt.evaluation.data import DownstreamDataset, collate, read_split_csv
from lovt.evaluation.prepare import (
    equalize_hist,
    find_nih_image,
    object_boxes,
    parse_object_annotation,
    prepare_covid,
    prepare_nih,
    prepare_object_cxr,
    prepare_rsna,
    prepare_siim,
    rle_to_mask,
)


@pytest.fixture(scope="module")
def prepared(sample_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    warnings.filterwarnings("ignore", message=".*SIIM images are 1024x1024.*")  # the sample images are 256 px
    return {"rsna": prepare_rsna(sample_data / "rsna-pneumonia", out=out / "rsna", seed=0),
            "siim": prepare_siim(sample_data / "siim-acr-pneumothorax", out=out / "siim", seed=0),
            "nih": prepare_nih(sample_data / "chestxray14", out=out / "nih", seed=0, include_no_findings=5),
            "raw": sample_data}


def _stats(folder):
    return json.loads((folder / "dataset_statistics.json").read_text())


def test_rsna_csvs_masks_and_stats(prepared):
    folder, raw = prepared["rsna"], prepared["raw"] / "rsna-pneumonia"
    stats = _stats(folder)
    assert list(stats) == ["train", "validation", "test"]
    n = pd.read_csv(raw / "stage_2_train_labels.csv")["patientId"].nunique()
    assert [stats[s]["num_samples"] for s in stats] == [n - 2 * round(0.2 * n), round(0.2 * n), round(0.2 * n)]
    assert set(stats["train"]["scan"]) == {"pixel_mean", "pixel_std"} and 0 < stats["train"]["scan"]["pixel_std"] < 1
    rows = {r[0]: r for s in ("train", "validation", "test") for r in read_split_csv(folder / f"{s}.csv")}
    assert len(rows) == n and set(stats["test"]["patient_ids"]) <= set(rows)
    labels = pd.read_csv(raw / "stage_2_train_labels.csv")
    pid = labels[labels.Target == 1].patientId.iloc[0]
    expected = labels[labels.patientId == pid][["x", "y", "width", "height"]].to_numpy(np.float32)
    np.testing.assert_allclose(rows[pid][1], expected)
    mask = np.array(Image.open(folder / "stage_2_train_masks" / f"{pid}.gif").convert("L")) > 0
    x, y, w, h = expected[0]
    assert mask[round(y):round(y + h), round(x):round(x + w)].all()
    assert mask.sum() <= sum(bw * bh for _, _, bw, bh in expected)
    with open(folder / "train.csv") as f:
        assert next(csv.reader(f)) == ["ID", "boxes", "classes"]


def test_siim_masks_follow_the_rle(prepared):
    folder, raw = prepared["siim"], prepared["raw"] / "siim-acr-pneumothorax"
    rles = pd.read_csv(raw / "train-rle.csv")
    rles.columns = ["ImageId", "EncodedPixels"]
    positive = rles[rles.EncodedPixels.str.strip() != "-1"].iloc[0]
    mask = np.array(Image.open(folder / "segmentation_masks" / f"{positive.ImageId}.gif").convert("L")) > 0
    np.testing.assert_array_equal(mask, rle_to_mask(positive.EncodedPixels, *mask.shape).astype(bool))
    assert mask.any()
    stats = _stats(folder)
    assert sum(stats[s]["num_samples"] for s in stats) == len(rles)
    assert stats["train"]["segmentation_pos_weights"]["pneumothorax"] > 1


def test_rle_by_hand():
    # 3 rows x 2 columns, column-major: offsets 1..2 and 4 -> (row 1, col 0), (row 2, col 0), (row 1, col 1)
    np.testing.assert_array_equal(rle_to_mask("1 2 1 1", 3, 2), [[0, 0], [1, 1], [1, 0]])
    assert rle_to_mask("-1", 3, 2).sum() == 0


def test_nih_patient_split_and_class_masks(prepared):
    folder = prepared["nih"]
    stats = _stats(folder)
    splits = {s: read_split_csv(folder / f"{s}.csv") for s in ("train", "validation", "test")}
    annotated = {s: {r[0][:8] for r in rows if len(r[1])} for s, rows in splits.items()}
    assert not annotated["train"] & annotated["test"] and not annotated["train"] & annotated["validation"]
    assert sum(len(r) for r in splits.values()) == sum(stats[s]["num_samples"] for s in stats)
    image_id, boxes, classes = next(r for r in splits["train"] if len(r[1]))
    assert classes.min() >= 0 and classes.max() <= 7
    ds = DownstreamDataset(folder, "nih_segmentation", "train", input_size=32)
    item = ds[[r[0] for r in splits["train"]].index(image_id)]
    assert item["masks"].shape == (8, 32, 32) and item["masks"][classes[0]].sum() > 0
    assert ds.target_names[0] == "Atelectasis"


def test_loader_pipeline_pads_resizes_and_normalizes(tmp_path):
    # a 100 x 50 image (w x h): padded by 25 rows top and bottom, then 100 -> 50
    Image.fromarray(np.full((50, 100), 128, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "train.csv").write_text("ID,boxes,classes\na,10;10;20;10,3\n")
    from lovt.evaluation.data import Loader
    ds = DownstreamDataset(tmp_path, Loader("{id}.png", detection=True), "train", input_size=50,
                           stats={"pixel_mean": 0.5, "pixel_std": 0.25})
    item = ds[0]
    assert item["scan"].shape == (3, 50, 50)
    np.testing.assert_allclose(item["boxes"].numpy(), [[5, 17.5, 10, 5]])
    assert item["classes"].tolist() == [0]  # csv classes are ignored (single-class detection)
    assert item["scan"][0, 25, 25].item() == pytest.approx((128 / 255 - 0.5) / 0.25, abs=1e-2)
    assert item["scan"][0, 2, 25].item() == pytest.approx(-2.0)  # padding is black
    batch = collate([item, item])
    assert batch["scan"].shape == (2, 3, 50, 50) and len(batch["targets"]) == 2


def test_unreadable_image_is_skipped_with_a_warning(tmp_path):
    from lovt.evaluation.data import Loader

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "train.csv").write_text("ID\nbad\ngood\n")
    ds = DownstreamDataset(tmp_path, Loader("{id}.png", {"m": "good.png"}), "train", input_size=8,
                           stats={"pixel_mean": 0.5, "pixel_std": 0.5})
    with pytest.warns(UserWarning, match="skipping sample bad"):
        assert ds[0]["id"] == "good"


def test_bad_csv_names_the_file(tmp_path):
    (tmp_path / "train.csv").write_text("ID,boxes,classes\nx,1;2;three;4,1\n")
    with pytest.raises(ValueError, match="train.csv, line 2"):
        read_split_csv(tmp_path / "train.csv")
    with pytest.raises(FileNotFoundError, match="prepare"):
        read_split_csv(tmp_path / "validation.csv")


def test_equalize_hist_is_a_cdf():
    img = np.linspace(0, 1, 64).reshape(8, 8) ** 3
    eq = equalize_hist(img)
    assert eq.shape == img.shape and eq.max() == pytest.approx(1.0)
    assert np.all(np.diff(eq.ravel()) >= 0)  # monotone
    assert abs(eq.mean() - 0.5) < 0.05  # flattened histogram


def _covid_layout(root, rng):
    (root / "jpgs").mkdir(parents=True)
    (root / "pngs_masks").mkdir()
    names = [f"COVID-19-AR-{1000 + p}_{k:02d}-01-2020-XR" for p in range(5) for k in range(1 + p % 2)]
    for i, name in enumerate(names):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "jpgs" / f"{name}.jpg")
        mask = np.zeros((40, 48), np.uint8)
        mask[5:5 + i, 10:20] = 1
        Image.fromarray(mask).save(root / "pngs_masks" / f"{name}.png")
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(root / "jpgs" / "COVID-19-AR-9999_no-mask.jpg")
    return names


def test_covid_patient_level_split(tmp_path):
    names = _covid_layout(tmp_path / "covid", np.random.default_rng(0))
    folder = prepare_covid(tmp_path / "covid", seed=0)
    stats = _stats(folder)
    ids = {s: [r[0] for r in read_split_csv(folder / f"{s}.csv")] for s in stats}
    assert sorted(sum(ids.values(), [])) == sorted(names)  # the image without a mask is left out
    patients = {s: {i.split("_")[0] for i in v} for s, v in ids.items()}
    assert not (patients["train"] & patients["test"]) and not (patients["train"] & patients["validation"])
    assert sorted(stats["test"]["patient_ids"]) == sorted(patients["test"])
    neg = [1 - (np.array(Image.open(folder / "pngs_masks" / f"{i}.png")) > 0).mean() for i in ids["train"]]
    assert stats["train"]["segmentation_pos_weights"]["opacity"] == pytest.approx(np.mean(neg))
    ds = DownstreamDataset(folder, "covid_rural", "train", input_size=32)
    assert ds[0]["masks"].shape == (1, 32, 32) and ds[0]["scan"].shape == (3, 32, 32)


def _object_layout(root):
    (root / "input" / "train").mkdir(parents=True)
    (root / "input" / "dev").mkdir()
    rows = {"train": [("00001.jpg", "0 10 20 30 60"), ("00002.jpg", "1 5 5 15 25;2 40 10 60 10 60 30"),
                      ("00003.jpg", ""), ("00004.jpg", "0 1 2 3 4"), ("00005.jpg", "")],
            "dev": [("08001.jpg", "2 10 40 30 40 30 50")]}
    for split, items in rows.items():
        pd.DataFrame(items, columns=["image_name", "annotation"]).to_csv(root / "input" / f"{split}.csv",
                                                                          index=False)
        for name, _ in items:
            Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 80), dtype=np.uint8)).save(
                root / "input" / split / name)


def test_object_cxr_boxes_fixed_and_original_bug(tmp_path):
    objs = parse_object_annotation("0 10 20 30 60;2 40 10 60 10 60 30")
    assert object_boxes(objs) == [(10, 20, 20, 40), (40, 10, 20, 20)]  # (x, y, w, h)
    assert object_boxes(objs, original_bugs=True)[0] == (10, 20, 40, 20)  # the original's (x, y, h, w)
    _object_layout(tmp_path / "obj")
    folder = prepare_object_cxr(tmp_path / "obj", val_percentage=0.4, seed=0)
    stats = _stats(folder)
    assert [stats[s]["num_samples"] for s in stats] == [3, 2, 1] and stats["test"]["patient_ids"] is None
    rows = {r[0]: r for s in stats for r in read_split_csv(folder / f"{s}.csv")}
    np.testing.assert_allclose(rows["00001"][1], [[10, 20, 20, 40]])
    # the triangle (40,10) (60,10) (60,30) lies right of x = 40 and above y = 30, filled with x as columns
    mask = np.array(Image.open(folder / "segmentation_masks" / "00002.gif").convert("L")) > 0
    assert mask[12, 58] and not mask[28, 42] and mask[5:25, 5:15].all()
    bugged = prepare_object_cxr(tmp_path / "obj", out=tmp_path / "bug", val_percentage=0.4, seed=0,
                                original_bugs=True)
    rows = {r[0]: r for s in stats for r in read_split_csv(bugged / f"{s}.csv")}
    np.testing.assert_allclose(rows["00001"][1], [[10, 20, 40, 20]])
    bug_mask = np.array(Image.open(bugged / "segmentation_masks" / "00002.gif").convert("L")) > 0
    assert not np.array_equal(mask, bug_mask)


def test_official_splits_are_reproduced(prepared, tmp_path):
    official = tmp_path / "official"
    official.mkdir()
    ids = {s: [r[0] for r in read_split_csv(prepared["rsna"] / f"{s}.csv")] for s in ("train", "validation", "test")}
    swapped = {"train": ids["train"], "validation": ids["test"], "test": ids["validation"]}
    for s, v in swapped.items():
        pd.DataFrame({"ID": v}).to_csv(official / f"{s}.csv", index=False)
    again = prepare_rsna(prepared["raw"] / "rsna-pneumonia", out=tmp_path / "again", splits_from=official)
    assert [r[0] for r in read_split_csv(again / "test.csv")] == ids["validation"]
    assert torch.equal(torch.tensor(_stats(again)["test"]["scan"]["pixel_mean"]),
                       torch.tensor(_stats(prepared["rsna"])["validation"]["scan"]["pixel_mean"]))


def test_sample_covid_and_object_cxr_prepare(sample_data, tmp_path):
    covid = prepare_covid(sample_data / "covid-rural", out=tmp_path / "covid", seed=0)
    n_masks = len(list((sample_data / "covid-rural" / "pngs_masks").glob("*.png")))
    assert sum(v["num_samples"] for v in _stats(covid).values()) == n_masks  # images without a mask left out
    obj = prepare_object_cxr(sample_data / "object-cxr", out=tmp_path / "object", seed=0)
    stats = _stats(obj)
    assert stats["test"]["num_samples"] == len(pd.read_csv(sample_data / "object-cxr" / "input" / "dev.csv"))
    ds = DownstreamDataset(obj, "object_cxr_detection", "train", input_size=64)
    assert sum(len(ds[i]["boxes"]) for i in range(len(ds))) > 0
    seg = DownstreamDataset(obj, "object_cxr_segmentation", "test", input_size=64)
    assert sum(int(seg[i]["masks"].sum()) for i in range(len(seg))) > 0


@pytest.mark.parametrize("layout", ["kaggle", "nih_tarballs"])
def test_nih_other_download_layouts_give_the_same_dataset(tmp_path, layout):
    """Kaggle's images_XXX/images/ + Data_Entry_2017.csv, and NIH's flat images/ (its tarballs), prepare
    exactly as the original's images/images_XX/images/ arrangement."""
    import shutil

    from shared.sample_data import generate

    raw = generate(tmp_path / "sample", seed=0, only=["chestxray14"])["chestxray14"]
    nested = raw / "images" / "images_01" / "images"
    reference = prepare_nih(raw, out=tmp_path / "reference", seed=0, include_no_findings=5)
    other = tmp_path / layout
    other.mkdir()
    for name in ("BBox_List_2017.csv", "test_list.txt", "Data_Entry_2017.csv"):
        shutil.copy(raw / name, other / name)  # no Data_Entry_2017_v2020.csv: Kaggle's file name is used
    target = other / ("images_001/images" if layout == "kaggle" else "images")
    shutil.copytree(nested, target)
    out = prepare_nih(other, seed=0, include_no_findings=5)
    for name in ("train.csv", "validation.csv", "test.csv", "dataset_statistics.json"):
        assert (out / name).read_text() == (reference / name).read_text(), name
    with pytest.raises(FileNotFoundError, match="not found under"):
        find_nih_image(other, "99999999_000")
    if layout == "kaggle":  # the same image in two folders of one layout is ambiguous
        (other / "images_002" / "images").mkdir(parents=True)
        shutil.copy(target / "00000003_000.png", other / "images_002" / "images")
        with pytest.raises(FileNotFoundError, match="found 2 times"):
            find_nih_image(other, "00000003_000")
