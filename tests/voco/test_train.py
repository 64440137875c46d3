import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from voco import finetune, train
from voco.data import VoCoCrops, VoCoDataset, base_dataset, flatten_batch, load_datalist, pretrain_transforms
from voco.engine import train_step
from voco.models import VoCo

# tiny but valid: SwinUNETR needs >= 64^3 inputs in training (its 5th map must exceed 1 voxel)
TINY_MODEL = ["--feature_size", "12", "--hidden_dim", "32", "--out_dim", "32", "--window_size", "2",
              "--use_checkpoint", "False"]
TINY_GEOMETRY = ["--base_roi", "32", "--num_crops", "2", "--roi_x", "64", "--sw_batch_size", "1"]


def test_tiny_pretraining_on_the_sample_ct_loss_falls(btcv_root):
    """Steps on one batch of real crops of a sample CT: the EMA happens inside the forward with the
    pre-step student, the teacher gets no gradient, and the loss falls."""
    items = load_datalist(btcv_root / "btcv.json")[:1]
    crops = VoCoCrops(roi_small=64, base_roi=32, num_crops=2, sw_batch_size=1)
    ds = VoCoDataset(items, base_dataset(items, pretrain_transforms(size=crops.volume_size)), crops,
                     skip_bad=False)
    batch = torch.utils.data.default_collate([ds[0]])
    torch.manual_seed(0)
    model = VoCo(feature_size=12, hidden_dim=16, out_dim=16, window_size=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, amsgrad=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    t0 = [p.clone() for p in model.teacher.parameters()]
    s0 = [p.clone() for p in model.student.parameters()]
    img, base, labels = flatten_batch(batch)
    pos, neg, reg, logits = model(img, base, labels)
    for t, a, b in zip(model.teacher.parameters(), t0, s0):
        torch.testing.assert_close(t, 0.9 * a + 0.1 * b)
    assert logits.shape == (1, 1, 4) and 0 <= logits.min() and logits.max() <= 1
    losses = [(pos + neg + reg).item()]
    (pos + neg + reg).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    opt.step()
    sched.step()
    opt.zero_grad()
    # the engine's step reports the loss after the step above (0.440 -> 0.409 here) and steps the student itself
    before = [p.clone() for p in model.student.parameters()]
    parts = train_step(model, model.student, batch, opt, sched, scaler, torch.device("cpu"), False, torch.float16)
    losses.append(parts["loss"])
    assert losses[-1] < losses[0], losses
    assert any(not torch.equal(p, b) for p, b in zip(model.student.parameters(), before))


def _pretrain(btcv_root, logdir, *extra):
    argv = ["--logdir", str(logdir), "--json_list", str(btcv_root / "btcv.json"), "--batch_size", "1",
            "--num_steps", "2", "--warmup_steps", "1", "--lr", "1e-3", "--eval_num", "1",
            "--save_every", "1", "--workers", "0", *TINY_MODEL, *TINY_GEOMETRY, *extra]
    return train.main(argv)


def test_pretrain_resume_equals_uninterrupted_then_finetune(btcv_root, small_json, tmp_path):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    state = _pretrain(btcv_root, tmp_path / "full", *cache)
    assert state == {"global_step": 2, "epoch": 0, "batch_in_pass": 2}
    full = tmp_path / "full"
    assert (full / "voco_pretrain.crops.png").stat().st_size > 0 and (full / "voco_pretrain.loss.png").exists()
    rows = list(csv.DictReader(open(full / "voco_pretrain.metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    # a fresh process state, resumed from the step-1 checkpoint (mid-pass), ends bit-identical
    _pretrain(btcv_root, tmp_path / "resumed", *cache, "--resume", str(full / "model_step1.pt"))
    a = torch.load(full / "final_model.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "final_model.pth", weights_only=True)
    assert a.keys() == b.keys() and len(a) == 302
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    ckpt = torch.load(full / "model_final_epoch.pt", weights_only=True)  # tensors + plain python
    assert ckpt["global_step"] == 2 and "optimizer" in ckpt and "scheduler" in ckpt
    step1 = torch.load(full / "model_step1.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(step1[k], a[k]) for k in a if k.startswith("teacher."))  # EMA moved

    # BTCV-style fine-tuning from the raw pre-training checkpoint, one tiny epoch, Dice reported; in the same
    # --logdir (both scripts default to logs/): the pre-training's files stay as they were
    out = full
    pretraining = {p: p.read_bytes() for p in sorted(full.glob("voco_pretrain.*"))}
    spec = json.loads(small_json.read_text())  # one training case: one step shows the encoder trains
    one_case = tmp_path / "one_case.json"
    one_case.write_text(json.dumps(dict(spec, training=spec["training"][:1])))
    result = finetune.main([
        "--data_dir", str(btcv_root), "--json_list", str(one_case), "--cache_dir", str(tmp_path / "ftc"),
        "--logdir", str(out), "--pretrained_checkpoint", str(full / "model_final_epoch.pt"),
        "--feature_size", "12", "--window_size", "2", "--use_checkpoint", "False",
        "--roi_x", "64", "--roi_y", "64", "--roi_z", "64", "--space_x", "4", "--space_y", "4",
        "--space_z", "5", "--sw_batch_size", "1", "--max_epochs", "1", "--val_every", "1",
        "--warmup_epochs", "0", "--workers", "0", "--infer_overlap", "0.25"])
    assert 0.0 <= result["mean_dice"] <= 1.0 and len(result["organ_dice"]) == 13
    saved = json.loads((out / "results.json").read_text())
    assert saved["mean_dice"] == result["mean_dice"] and len(saved["per_case"]) == 1
    assert "| **mean** |" in (out / "results.md").read_text()
    assert (out / "voco_finetune.predictions.png").stat().st_size > 0
    assert {p: p.read_bytes() for p in sorted(full.glob("voco_pretrain.*"))} == pretraining
    assert (out / "voco_finetune.run.json").is_file() and (out / "voco_finetune.metrics.csv").is_file()
    ft = torch.load(out / "model.pt", weights_only=True)
    assert ft["epoch"] == 1 and "optimizer" in ft and "scheduler" in ft
    # the encoder started from the teacher branch and was trained (a zero LR would leave it equal)
    key = "swinViT.patch_embed.proj.weight"
    start = ckpt["state_dict"]["teacher." + key]
    assert ft["state_dict"][key].shape == start.shape and not torch.equal(ft["state_dict"][key], start)


@pytest.mark.slow
def test_torchrun_two_processes_cpu(btcv_root, tmp_path):
    """DDP (gloo, 2 CPU processes): the original's distributed path failed; here 2 steps complete."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(train.__file__)), "--logdir", str(tmp_path / "ddp"), "--json_list",
           str(btcv_root / "btcv.json"), "--batch_size", "1", "--num_steps", "2", "--warmup_steps", "0",
           "--eval_num", "1", "--save_every", "0", "--workers", "0", *TINY_MODEL, *TINY_GEOMETRY]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "voco_pretrain.metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert len(torch.load(tmp_path / "ddp" / "final_model.pth", weights_only=True)) == 302
