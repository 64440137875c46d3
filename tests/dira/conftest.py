"""Fixtures of the DiRA tests: tiny image lists over the sample X-rays and tiny training arguments."""

import os

import pytest


@pytest.fixture(scope="session")
def dira_sample(tmp_path_factory):
    """The sample-data root with only the X-ray sets DiRA's tests read (the top-level `sample_data`
    fixture writes every dataset, CT included, which costs these tests most of their time budget).
    Same folder and lock as `sample_data`, so either fixture reuses what the other wrote."""
    from filelock import FileLock

    from shared.sample_data import generate

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / "sample_data"
    with FileLock(str(root / "sample_data.lock")):
        generate(out, seed=0, only=["chestxray14", "rsna-pneumonia"])
    return out


@pytest.fixture(scope="session")
def xray(dira_sample):
    """The sample ChestX-ray14 root (images/, masks/, Xray14_*_official.txt)."""
    return dira_sample / "chestxray14"


@pytest.fixture(scope="session")
def tiny_lists(xray, tmp_path_factory):
    """(images dir, train list of 8 images, val list of 4 images) in the original list format."""
    out = tmp_path_factory.mktemp("dira_lists")
    lines = (xray / "Xray14_train_official.txt").read_text().splitlines()
    (out / "train.txt").write_text("\n".join(lines[:8]) + "\n")
    (out / "val.txt").write_text("\n".join(lines[8:12]) + "\n")
    return xray / "images", out / "train.txt", out / "val.txt"


@pytest.fixture
def tiny_argv(tiny_lists, tmp_path):
    """argv for dira/train.py: resnet18 U-Net at 64 px, batch 4, queue 8, on the tiny lists."""
    images, train, val = tiny_lists

    def make(*extra, out=None):
        return [str(images), "--train_list", str(train), "--val_list", str(val), "-a", "resnet18",
                "--img_size", "64", "--batch-size", "4", "--moco-k", "8", "--mlp", "--cos", "-j", "0",
                "--seed", "0", "--checkpoint-dir", str(out or tmp_path / "ckpt"), "--preview_images", "2",
                "--bt_projector", "64-64", "--simsiam_dim", "64", "--simsiam_pred_dim", "16",
                "--bt_warmup_epochs", "0", *extra]

    return make
