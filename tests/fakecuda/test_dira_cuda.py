"""DiRA pre-training CLI (dira/train.py main), 'on cuda' (tests/fakecuda/cuda_shim.py): generator and
discriminator steps under fp16 autocast with their GradScalers, checkpoint save, resume.

Checked against the defects it exists for: with `cpu_bytes` removed from shared/checkpoint.py set_rng_state
(the states handed on as loaded), the resume here still passes, because DiRA loads its checkpoint onto the CPU;
with its load changed to map_location=device it fails in torch.set_rng_state ("RNG state must be a
torch.ByteTensor"). A NaN loss under fp16 is the scaler's to skip (test_fp16_nan_step_is_skipped_not_fatal).
"""

import csv
import os

import pytest
import torch

from dira import train
from shared.guards import FAULT_NAN_STEP_ENV


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    """(images, train list of 8, val list of 4) over the sample ChestX-ray14 (same folder and lock as the
    session's sample_data, which it shares)."""
    from filelock import FileLock

    from shared.sample_data import generate

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    with FileLock(str(root / "sample_data.lock")):
        generate(root / "sample_data", seed=0, only=["chestxray14"])
    xray = root / "sample_data" / "chestxray14"
    out = tmp_path_factory.mktemp("dira_lists")
    lines = (xray / "Xray14_train_official.txt").read_text().splitlines()
    (out / "train.txt").write_text("\n".join(lines[:8]) + "\n")
    (out / "val.txt").write_text("\n".join(lines[8:12]) + "\n")
    return xray / "images", out / "train.txt", out / "val.txt"


@pytest.fixture
def argv(lists, tmp_path):
    images, train_list, val_list = lists

    def make(*extra):
        return [str(images), "--train_list", str(train_list), "--val_list", str(val_list), "-a", "resnet18",
                "--img_size", "32", "--batch-size", "4", "--moco-k", "8", "--mlp", "--cos", "-j", "0", "--seed", "0",
                "--checkpoint-dir", str(tmp_path / "ckpt"), "--preview_images", "1", "--max_steps_per_epoch", "2",
                "--amp", "fp16", *extra]

    return make


def test_dira_steps_saves_and_resumes_on_cuda(argv, cuda):
    run_dir = train.main(argv("--epochs", "1", "--mode", "dir"))
    ckpt = torch.load(run_dir / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["scaler"]["scale"] > 0 and "cuda" in ckpt["rng"][0]
    train.main(argv("--epochs", "2", "--mode", "dir", "--resume", str(run_dir / "checkpoint.pth")))
    assert torch.load(run_dir / "checkpoint.pth", weights_only=True)["epoch"] == 2
    assert ("synchronize", torch.device("cuda", 0)) in cuda.calls  # the step timer waits for the GPU


def test_fp16_nan_step_is_skipped_not_fatal(argv, cuda, monkeypatch):
    """DiRA mode: generator and discriminator, each with its GradScaler."""
    monkeypatch.setenv(FAULT_NAN_STEP_ENV, "1")  # one overflowing step: the GradScaler skips it
    run_dir = train.main(argv("--epochs", "1", "--mode", "dira", "--preview_images", "0"))
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("dis_loss")]
    assert [int(r["step"]) for r in rows] == [0, 1]
    assert torch.load(run_dir / "checkpoint.pth", weights_only=True)["scaler"]["scale"] < 65536.0
