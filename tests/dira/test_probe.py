"""DiRA frozen probe: ChestX-ray14 finding labels, online columns, offline probe.py on checkpoints."""

import csv
import json

import pytest
import torch

from dira import probe, train
from dira.probe import FINDINGS, chestxray14_probe_set, feature_fn
from dira.transfer import build_resnet
from shared.probe import PROBE_COLUMNS


def test_probe_set_from_official_lists_and_from_data_entry(xray, tmp_path):
    ps = chestxray14_probe_set(xray, img_size=32, max_per_split=None)
    assert ps.train_x.dtype == torch.uint8 and ps.train_x.shape[1:] == (3, 32, 32)
    assert ps.train_y.shape == (len(ps.train_x), len(FINDINGS)) and "official" in ps.name
    assert len(ps.test_x) == len((xray / "Xray14_test_official.txt").read_text().split("\n")) - 1
    # only Data_Entry_2017.csv: labels parsed from "Finding Labels", seeded held-out split
    (tmp_path / "Data_Entry_2017.csv").write_text((xray / "Data_Entry_2017.csv").read_text())
    alt = chestxray14_probe_set(tmp_path, images_dir=xray / "images", img_size=32, max_per_split=20)
    assert len(alt.train_x) == 20 and alt.train_y.shape[1] == 14 and "Data_Entry" in alt.name
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017.csv"):
        chestxray14_probe_set(tmp_path / "nothing")


def test_feature_fn_is_the_last_stage_of_resnet_and_unet():
    torch.manual_seed(0)
    resnet = build_resnet("resnet18").eval()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert feature_fn(resnet)(x).shape == (2, 512, 2, 2)
    import segmentation_models_pytorch as smp
    unet = smp.Unet("resnet18", encoder_weights=None).eval()
    unet.encoder.load_state_dict({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")})
    torch.testing.assert_close(feature_fn(unet)(x), feature_fn(resnet)(x))


def test_online_probe_writes_its_columns(tiny_argv, xray, tmp_path):
    run_dir = train.main(tiny_argv("--mode", "dir", "--epochs", "2", "--max_steps_per_epoch", "1",
                                   "--probe_every", "1", "--probe_data", str(xray), "--probe_max", "24",
                                   out=tmp_path))
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("probe_knn_auroc")]
    assert len(rows) == 2
    assert all(0.0 <= float(r[c]) <= 1.0 for r in rows for c in PROBE_COLUMNS)


def test_offline_probe_on_a_run_checkpoint_and_random_init(tiny_argv, xray, tmp_path):
    run_dir = train.main(tiny_argv("--mode", "dir", "--epochs", "1", "--max_steps_per_epoch", "1",
                                   out=tmp_path))
    common = ["--data", str(xray), "-a", "resnet18", "--img_size", "32", "--max_per_split", "24"]
    for name in ("checkpoint.pth", "best_checkpoint.pth"):
        rec = probe.main([str(run_dir / name), *common])
        assert rec["arch"] == "resnet18" and 0.0 <= rec["probe_linear_auroc"] <= 1.0
        assert json.loads((run_dir / f"{name}.probe.json").read_text())["probe_knn_auroc"] == rec["probe_knn_auroc"]
    a = probe.main(["--random_init", "--out", str(tmp_path / "r.json"), *common])
    b = probe.main(["--random_init", "--out", str(tmp_path / "r2.json"), *common])
    assert a["probe_linear_auroc"] == b["probe_linear_auroc"]  # seeded: same init, same scores


def test_probe_every_without_labels_fails_before_training(tmp_path):
    from types import SimpleNamespace

    from dira.probe import online_probe
    args = train.parse_args([str(tmp_path), "--train_list", str(tmp_path / "t.txt"), "--probe_every", "1"])
    with pytest.raises(FileNotFoundError, match="--probe_data"):
        online_probe(args, SimpleNamespace(encoder_q=torch.nn.Linear(1, 1)), None, "cpu", True)
    args.probe_every = 0  # off: nothing is checked or read
    assert not online_probe(args, SimpleNamespace(encoder_q=torch.nn.Linear(1, 1)), None, "cpu", True).active
