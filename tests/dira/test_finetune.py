"""Fine-tuning on the sample X-rays (classification AUC, segmentation Dice/IoU) and the metrics by hand."""

import csv
import warnings

import numpy as np
import pytest
import torch

from dira import finetune
from dira.models import DiRAMoCo


def test_dice_iou_by_hand():
    pred = torch.zeros(2, 4, 4, dtype=torch.bool)
    target = torch.zeros(2, 4, 4, dtype=torch.bool)
    pred[0, :2] = True     # 8 pixels
    target[0, :1] = True   # 4 pixels, all inside pred
    m = finetune.dice_iou(pred, target)  # image 1 is empty in both: Dice = IoU = 1
    assert m["dice"] == pytest.approx(2 * 4 / 12) and m["iou"] == pytest.approx(4 / 8)
    assert m["mean_dice"] == pytest.approx((2 * 4 / 12 + 1) / 2) and m["mean_iou"] == pytest.approx((0.5 + 1) / 2)


def test_mean_auc_by_hand():
    targets = np.array([[0, 1, 0], [1, 1, 0], [0, 1, 0], [1, 1, 1]], dtype=float)
    scores = np.array([[0.1, 0.5, 0.2], [0.9, 0.4, 0.3], [0.6, 0.3, 0.9], [0.4, 0.2, 0.8]])
    with pytest.warns(UserWarning, match="one class"):
        mean, per_class = finetune.mean_auc(targets, scores)
    assert per_class[0] == pytest.approx(0.75) and np.isnan(per_class[1])
    assert per_class[2] == pytest.approx(2 / 3)
    assert mean == pytest.approx((0.75 + 2 / 3) / 2)


@pytest.fixture(scope="module")
def tiny_dira_checkpoint(tmp_path_factory):
    model = DiRAMoCo("dira", "resnet18", 16, 8, mlp=True)
    path = tmp_path_factory.mktemp("ft") / "checkpoint.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.mark.parametrize("task,init", [("classification", "dira"), ("segmentation", "dira"),
                                       ("segmentation", "random")])
def test_finetune_runs_and_writes_results(xray, tmp_path, tiny_dira_checkpoint, task, init):
    argv = [task, "--data_dir", str(xray / "images"), "--train_list", str(xray / "Xray14_val_official.txt"),
            "--val_list", str(xray / "Xray14_val_official.txt"), "--test_list", str(xray / "Xray14_val_official.txt"),
            "-a", "resnet18", "--img_size", "64", "--epochs", "1", "--batch_size", "5", "--workers", "0",
            "--init", init, "--output_dir", str(tmp_path)]
    if init == "dira":
        argv += ["--proxy_dir", str(tiny_dira_checkpoint)]
    if task == "segmentation":
        argv += ["--mask_dir", str(xray / "masks")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AUC undefined for labels absent from the tiny test list
        result = finetune.main(argv)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    if task == "classification":
        assert 0 <= result["mean_auc"] <= 1 and rows[0]["metric"] == "mean_auc"
    else:
        assert set(result) == {"dice", "iou", "mean_dice", "mean_iou"}
        assert all(0 <= v <= 1 for v in result.values())
        assert result["iou"] <= result["dice"] and result["mean_iou"] <= result["mean_dice"]
    assert rows[0]["init"] == init and rows[0]["task"] == task
    assert f"| {task} | {init} |" in (tmp_path / "results.md").read_text()
    if init == "random":  # a second run into the same folder: its log starts afresh, the first one is kept
        trial = tmp_path / f"{task}_{init}_trial0"
        first = (trial / "metrics.csv").read_text()
        with pytest.warns(UserWarning, match="metrics.1.csv"):
            finetune.main(argv)
        assert (trial / "metrics.1.csv").read_text() == first
        assert len((trial / "metrics.csv").read_text().splitlines()) == len(first.splitlines())


def test_label_fraction_keeps_a_seeded_share(xray):
    full = finetune.ListDataset(xray / "images", xray / "Xray14_train_official.txt", None)
    part = finetune.ListDataset(xray / "images", xray / "Xray14_train_official.txt", None, anno_percent=25)
    again = finetune.ListDataset(xray / "images", xray / "Xray14_train_official.txt", None, anno_percent=25)
    assert len(part.paths) == int(len(full.paths) * 0.25) and part.paths == again.paths
    assert set(part.paths) < set(full.paths) and part.labels.shape == (len(part.paths), 14)


def test_init_needs_weights_file():
    with pytest.raises(SystemExit, match="proxy_dir"):
        finetune.main(["classification", "--data_dir", ".", "--train_list", "x", "--val_list", "x",
                       "--test_list", "x", "--init", "imagenet"])
