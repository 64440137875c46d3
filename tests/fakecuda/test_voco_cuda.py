"""VoCo pre-training CLI (voco/train.py main), 'on cuda' (tests/fakecuda/cuda_shim.py): crops made on the
device, fp16 autocast with the GradScaler, checkpoint save, exact resume from it.

Checked against the defects it exists for (each reverted by hand, the test failing, then restored):
- `shared/distributed.py` resolve_device removed: fails with "Expected a torch.device with a specified index or
  an integer, but got:cuda" (voco/train.py passes --device cuda to init_distributed).
- `cpu_bytes` removed from `shared/checkpoint.py` set_rng_state: the resume fails in torch.set_rng_state ("RNG
  state must be a torch.ByteTensor"): voco/train.py loads its checkpoint with map_location=device.
"""

import csv

import pytest
import torch

from shared.guards import FAULT_NAN_STEP_ENV
from voco import train

TINY = ["--feature_size", "12", "--hidden_dim", "16", "--out_dim", "16", "--window_size", "2", "--use_checkpoint",
        "False", "--base_roi", "32", "--num_crops", "2", "--roi_x", "64", "--sw_batch_size", "1", "--batch_size", "1",
        "--warmup_steps", "1", "--lr", "1e-3", "--eval_num", "1", "--save_every", "0", "--workers", "0",
        "--device", "cuda"]


@pytest.fixture(scope="module")
def btcv_json(tmp_path_factory):
    from shared.sample_data import generate

    root = tmp_path_factory.mktemp("voco_cuda_sample")
    generate(root, seed=0, only=["btcv"])
    return root / "btcv" / "btcv.json"


def rows(logdir):
    with open(logdir / "voco_pretrain.metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("loss")]


def test_voco_steps_saves_and_resumes_on_cuda(btcv_json, tmp_path, cuda, monkeypatch):
    """Also: an fp16 NaN step is the GradScaler's to skip, and --log_every 4 logs the last step only."""
    argv = ["--logdir", str(tmp_path), "--json_list", str(btcv_json), *TINY, "--log_every", "4"]
    monkeypatch.setenv(FAULT_NAN_STEP_ENV, "1")  # one overflowing step: skipped, the run goes on
    state = train.main([*argv, "--num_steps", "1"])
    assert state["global_step"] == 1 and [int(r["step"]) for r in rows(tmp_path)] == [1]  # the last step logs
    ckpt = torch.load(tmp_path / "model_current_epoch.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] < 65536.0 and "cuda" in ckpt["rng"]  # the skip lowered the scale
    monkeypatch.delenv(FAULT_NAN_STEP_ENV)
    state = train.main([*argv, "--num_steps", "2", "--resume", str(tmp_path / "model_current_epoch.pt")])
    assert state["global_step"] == 2 and [int(r["step"]) for r in rows(tmp_path)] == [1, 2]
