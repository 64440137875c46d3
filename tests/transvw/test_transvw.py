"""TransVW: its names and defaults, its checkpoint, its released layout, and the script entry points."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.genesis.data import write_pattern_files
from shared.genesis.pretrain import ORIGINAL_KEYS
from shared.unet3d import UNet3D, YNet3D
from transvw import config, finetune_segmentation, train

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--cls_classes", "2", "--nb_instances", "3", "--nb_val_instances", "2", "--nb_multires_patch", "1",
         "--batch_size", "3", "--num_workers", "0", "--width", "2", "--n_images", "1"]


@pytest.fixture(scope="module")
def visual_words(tmp_path_factory):
    return write_pattern_files(tmp_path_factory.mktemp("TransVW_data"), cubes_per_class=3, n_classes=2,
                               n_val_per_class=2, shape=(16, 16, 8), resolutions=1, dtype=np.float64)


def test_names_and_defaults():
    assert config.EXP_NAME == "TransVW_chest_ct" and config.PATTERN_DIR == "TransVW_data"
    from transvw.train import main as entry
    assert callable(entry)
    args = train.build_parser(config.DESCRIPTION, config.EXP_NAME).parse_args(["--data_dir", "x"])
    assert (args.exp, args.batch_size, args.cls_classes, args.lambda_cls, args.lr) == ("en_de", 64, 44, 0.01, 1e-3)
    assert (args.nb_instances, args.nb_val_instances, args.nb_multires_patch, args.patience) == (200, 30, 3, 50)


def test_pretraining_writes_transvw_checkpoint(visual_words, tmp_path):
    summary = train.main(["--data_dir", str(visual_words), "--output_dir", str(tmp_path), *SMALL,
                          "--nb_epoch", "2", "--warped_target"])
    ckpt = torch.load(tmp_path / "en_de" / "TransVW_chest_ct.pt", weights_only=True)
    assert tuple(ckpt) == ORIGINAL_KEYS
    assert ckpt["best_loss"] == pytest.approx(summary["best_loss"])
    assert list(ckpt["state_dict"]) == list(YNet3D(cls_classes=2, width=2).state_dict())
    assert summary["steps"] == 2 * 2  # 6 cubes / batch 3, two epochs


def test_released_transvw_layout_loads_for_segmentation(tmp_path, capsys):
    source = YNet3D(cls_classes=50, width=2)  # the released data has 50 classes
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "TransVW_chest_ct.pt"
    torch.save({"epoch": 3, "state_dict": state, "optimizer_state_dict": {}, "num_epoch_no_improvement": 0,
                "best_loss": np.float64(0.02), "best_acc": np.float64(0.8)}, path)
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        x = rng.random((4, 16, 16, 8)).astype(np.float32)
        np.save(tmp_path / f"{split}_x.npy", x)
        np.save(tmp_path / f"{split}_y.npy", (x > 0.7).astype(np.float32))
    args = ["--data_dir", str(tmp_path), "--weights", str(path), "--width", "2", "--input_rows", "16",
            "--input_cols", "16", "--input_deps", "8", "--nb_epoch", "0", "--output_dir", str(tmp_path / "seg"),
            "--trusted"]
    finetune_segmentation.main(args)
    assert "loaded 106/106 tensors" in capsys.readouterr().out
    unet = UNet3D(width=2)
    assert len(unet.state_dict()) == 106


def test_runs_as_a_script_and_as_a_module():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for cmd in ([sys.executable, "transvw/train.py", "--help"], [sys.executable, "-m", "transvw.train", "--help"]):
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--lambda_cls" in out.stdout and "TransVW_chest_ct" in out.stdout


@pytest.mark.slow
def test_two_process_ddp_on_cpu(visual_words, tmp_path):
    """Slow-marked duplicate: tests/test_gpu_check.py::test_two_nodes_genesis runs the same engine
    (shared/genesis/pretrain.py, which transvw/train.py calls with its --exp_name) in a 2-process gloo DDP run
    and checks the plain state dict; semantic_genesis/test_finetune.py covers torchrun --nproc_per_node=2."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "transvw/train.py",
           "--data_dir", str(visual_words), "--output_dir", str(tmp_path), *SMALL, "--nb_epoch", "2"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = torch.load(tmp_path / "en_de" / "TransVW_chest_ct.last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["state_dict"])


def test_transforms_on_device_or_in_workers_train_identically(visual_words, tmp_path):
    for where in ("device", "workers"):
        train.main(["--data_dir", str(visual_words), "--output_dir", str(tmp_path / where), *SMALL,
                    "--nb_epoch", "1", "--transform_on", where])
    a = torch.load(tmp_path / "device" / "en_de" / "TransVW_chest_ct.last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "workers" / "en_de" / "TransVW_chest_ct.last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
