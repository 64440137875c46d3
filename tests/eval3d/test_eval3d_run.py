"""eval3d end to end on tiny inputs: every task runs, the tables carry verdicts, a rerun skips what is done."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from eval3d import run as eval3d_run
from eval3d import train as eval3d_train
from eval3d.data import Split, fraction_indices
from eval3d.encoders import random_arm
from eval3d.tasks import NCC, mask_scores
from shared.demo import VERDICTS
from shared.unet3d import YNet3D

TINY = ["--width", "2", "--steps", "1", "--batch_size", "2", "--optimizer", "adam", "--lr", "1e-3",
        "--threads", "1"]


def genesis_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "sg.pt"
    torch.save({"state_dict": YNet3D(cls_classes=4, width=2).state_dict()}, path)
    return path


def test_fractions_are_nested_and_keep_a_positive():
    positive = np.array([True] * 3 + [False] * 40)
    one, ten, full = (fraction_indices(positive, f, seed=0) for f in (1, 10, 100))
    assert positive[one].sum() == 1 and (~positive[one]).sum() == 1
    assert set(one) <= set(ten) <= set(full) and len(full) == 43
    with pytest.raises(ValueError, match="no positive"):
        fraction_indices(np.zeros(5, bool), 10, 0)


def test_mask_scores_separate_positive_and_empty_cubes():
    target = torch.zeros(3, 4, 4, 4)
    target[0, :2] = 1
    pred = target.clone()
    pred[0, 2] = 1   # 32 true + 16 false voxels on the nodule cube
    pred[2, 0, 0, 0] = 1  # one voxel on an empty cube
    s = mask_scores(pred, target)
    assert s["Dice"] == pytest.approx(2 * 32 / (48 + 32)) and s["IoU"] == pytest.approx(32 / 48)
    assert s["FP rate"] == 0.5


def test_cube_tasks_end_to_end_with_verdicts_and_resume(sample_data, tmp_path, monkeypatch):
    out = tmp_path / "eval3d"
    args = ["--encoder", f"sg={genesis_checkpoint(tmp_path)}", "--tasks", "ncc,ncs", "--modes", "full,frozen",
            "--fractions", "100", "--seeds", "0", "--luna16", str(sample_data / "luna16"),
            "--cube", "16", "16", "8", "--out", str(out), *TINY]
    runs = eval3d_run.main(args)
    assert len(runs) == 2 * (1 + 2 * 2)  # tasks x (raw baseline + modes x arms)
    assert runs["ncc|full|100|sg|0"]["matched"] == "106/106"
    assert 0 <= runs["ncs|frozen|100|random_unet3d_w2|0"]["Dice"] <= 1
    for task in ("ncc", "ncs"):
        table = (out / f"{task}.md").read_text()
        rows = [line for line in table.splitlines() if line.startswith("| sg vs random_unet3d_w2")]
        assert len(rows) == 2 * (1 if task == "ncc" else 3)  # modes x metrics
        assert all(any(f"**{v}**" in r for v in VERDICTS) for r in rows)
        assert (out / f"{task}_label_efficiency.png").stat().st_size > 0
    # a rerun with the same settings runs nothing; another budget reruns every arm (not the baselines)
    calls = []
    monkeypatch.setattr(eval3d_run, "run_one", lambda *a: calls.append(a) or {"AUC": 0.5, "Dice": 0.0,
                                                                            "IoU": 0.0, "FP rate": 0.0})
    eval3d_run.main(args)
    assert calls == []
    eval3d_run.main([*args, "--steps", "2"])
    assert len(calls) == 2 * 2 * 2  # tasks x modes x arms
    assert json.loads((out / "results.json").read_text())["runs"]["ncc|full|100|sg|0"]["settings"]["steps"] == 2


def test_btcv_end_to_end(sample_data, tmp_path):
    out = tmp_path / "btcv"
    runs = eval3d_run.main(["--archs", "unet3d", "--tasks", "btcv", "--modes", "full,frozen", "--fractions", "100",
                            "--seeds", "0", "--btcv", str(sample_data / "btcv"), "--spacing", "8", "8", "10",
                            "--roi", "16", "16", "16", "--overlap", "0", "--out", str(out), *TINY])
    assert set(runs) == {"btcv|raw|100|-|0", "btcv|full|100|random_unet3d_w2|0", "btcv|frozen|100|random_unet3d_w2|0"}
    assert runs["btcv|full|100|random_unet3d_w2|0"]["n_train"] == 6  # 8 cases: 4 groups of 2, one tests
    assert 0 <= runs["btcv|raw|100|-|0"]["mean Dice"] <= 1
    assert "random_unet3d_w2 | frozen" in (out / "btcv.md").read_text()


def test_swinunetr_arms_train_in_both_modes(monkeypatch):
    """Full mode trains the Swin encoder, frozen mode only the head (a synthetic split, one step)."""
    rng = np.random.default_rng(0)
    x = rng.random((6, 64, 32, 32), dtype=np.float32)
    y = np.array([1, 0, 1, 0, 1, 0], dtype=np.float32)
    split = Split(x[:4], y[:4], x[4:], y[4:], "synthetic", None)
    args = eval3d_run.argparse.Namespace(steps=1, batch_size=2, optimizer="adam", lr=1e-2)
    arm = random_arm("swinunetr", {"feature_size": 12, "window_size": 2})
    built = []
    build = eval3d_train.build
    monkeypatch.setattr(eval3d_train, "build", lambda *a: built.append(build(*a)) or built[-1])
    for mode in ("full", "frozen"):
        result = eval3d_train.run_one(NCC(), split, arm, mode, 100, 0, args)
        assert 0 <= result["AUC"] <= 1 and result["n_train"] == 4
    fresh = build(NCC(), arm, "full", 0)[0].state_dict()
    for (model, _), mode in zip(built, ("full", "frozen")):
        state = model.state_dict()
        encoder_same = torch.equal(state["network.swinViT.patch_embed.proj.weight"],
                                   fresh["network.swinViT.patch_embed.proj.weight"])
        assert encoder_same == (mode == "frozen")
        assert not torch.equal(state["head.weight"], fresh["head.weight"])  # the head trained in both


@pytest.mark.slow
def test_make_eval3d_on_sample_data(tmp_path):
    """The whole `make eval3d` path (random-init arms only: no demo checkpoints in this runs folder)."""
    done = subprocess.run(["make", "eval3d", f"RUNS={tmp_path}", f"PY={sys.executable}", "ARGS=--seeds 0,1,2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no semantic_genesis demo checkpoint" in done.stdout
    for task in ("ncc", "ncs", "btcv"):
        assert (tmp_path / "eval3d" / f"{task}_label_efficiency.png").is_file()


def test_runtime_defaults_and_the_resume_key(monkeypatch):
    """cpu/fp32 without a GPU; --device cuda without one is refused; bf16 (not fp32, not the device) is keyed."""
    from eval3d.runtime import Runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runtime = Runtime.from_flags()
    assert (runtime.device, runtime.amp) == (torch.device("cpu"), "none")
    with pytest.raises(SystemExit, match="no CUDA device"):
        Runtime.from_flags("cuda")
    arm = random_arm("unet3d", {"width": 2})
    plain = eval3d_run.arm_settings({"steps": 1}, arm, runtime)
    assert plain == {"steps": 1, "encoder": eval3d_run.describe(arm)}  # fp32 results from before --amp still match
    bf16 = eval3d_run.arm_settings({"steps": 1}, arm, Runtime.from_flags("cpu", "bf16"))
    assert bf16 == {**plain, "amp": "bf16"}
