"""VoCo frozen probe: organ patches from BTCV labels, online columns, offline probe.py on checkpoints."""

import csv
import json

import numpy as np
import pytest
import torch

from shared.probe import PROBE_COLUMNS
from voco import probe, train
from voco.probe import organ_patches

TINY_MODEL = ["--feature_size", "12", "--hidden_dim", "32", "--out_dim", "32", "--window_size", "2",
              "--use_checkpoint", "False"]
TINY_GEOMETRY = ["--base_roi", "32", "--num_crops", "2", "--roi_x", "64", "--sw_batch_size", "1"]


def test_organ_patches_are_centred_on_their_organ():
    label = torch.zeros(1, 40, 40, 20, dtype=torch.long)
    label[0, 2:8, 2:8, 2:8] = 3
    label[0, 30:36, 30:36, 10:16] = 7
    image = (label > 0).float() * torch.where(label == 3, 0.2, 1.0)
    xs, ys = organ_patches(image, label, base_roi=8, roi=8, per_organ=2, rng=np.random.default_rng(0))
    assert sorted(ys) == [3, 3, 7, 7] and xs[0].dtype == torch.uint8 and xs[0].shape == (1, 8, 8, 8)
    for x, y in zip(xs, ys):  # each patch holds its own organ's intensity
        assert round(float(x.max()) / 255, 1) == (0.2 if y == 3 else 1.0)
    _, only = organ_patches(image, label, 8, 8, per_organ=2, rng=np.random.default_rng(0), organs=[7])
    assert only == [7, 7]


def test_online_probe_then_offline_probe(btcv_root, tmp_path):
    logdir = tmp_path / "run"
    train.main(["--logdir", str(logdir), "--json_list", str(btcv_root / "btcv.json"), "--batch_size", "1",
                "--num_steps", "1", "--warmup_steps", "1", "--eval_num", "1", "--save_every", "0",
                "--workers", "0", "--probe_every", "1", "--probe_per_organ", "1", "--probe_max", "4",
                "--probe_organs", "1", "6",
                *TINY_MODEL, *TINY_GEOMETRY])
    with open(logdir / "voco_pretrain.metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("probe_linear_auroc")]
    assert [int(r["step"]) for r in rows] == [1]  # one step: the schedule itself is shared.probe's (tested there)
    assert all(0.0 <= float(rows[0][c]) <= 1.0 for c in PROBE_COLUMNS)

    common = ["--data", str(btcv_root), *TINY_GEOMETRY[:4], "--per_organ", "1", "--max_per_split", "4",
              "--organs", "1", "6"]  # spleen vs liver: 4 + 4 patches keep this test short
    rec = probe.main([str(logdir / "model_final_epoch.pt"), *common])
    assert (rec["feature_size"], rec["branch"], rec["n_train"]) == (12, "teacher", 4)  # read from the file
    saved = json.loads((logdir / "model_final_epoch.pt.probe.json").read_text())
    assert saved["probe_knn_auroc"] == rec["probe_knn_auroc"]
    rand = probe.main(["--random_init", "--feature_size", "12", "--window_size", "2",
                       "--out", str(tmp_path / "r.json"), *common])
    assert rand["random_init"] and (tmp_path / "r.json").is_file()


def test_probe_every_without_labelled_list_fails_before_training(tmp_path):
    from types import SimpleNamespace

    from voco.probe import online_probe
    args = train.get_parser().parse_args(["--json_list", str(tmp_path / "x.json"), "--probe_every", "1"])
    model = SimpleNamespace(teacher=torch.nn.Linear(1, 1), student=torch.nn.Linear(1, 1))
    with pytest.raises(FileNotFoundError, match="--probe_data"):
        online_probe(args, model, None, "cpu", True)
