"""Fine-tuning: released checkpoint layouts load completely; logits head; runs on arrays and LUNA16."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semantic_genesis import finetune_classification, finetune_segmentation
from shared.genesis.finetune import TargetNet, luna16_nodule_cubes, roc_auc
from shared.unet3d import UNet3D, YNet3D
from shared.weights import WeightLoadError, load_pretrained

WIDTH = 2
ROOT = Path(__file__).resolve().parents[2]
SEG_RUN = "semantic_genesis_chest_ct_segmentation"  # the default --exp_name of finetune_segmentation.py


def _released_semantic_genesis(path):
    """The layout train.py writes under --multi_gpu, plus the README's projection/prototype heads."""
    model = YNet3D(cls_classes=44, width=WIDTH)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.projection_head.0.weight"] = torch.zeros(4, 4)
    state["module.prototypes.weight"] = torch.zeros(4, 4)
    torch.save({"epoch": 7, "state_dict": state, "optimizer_state_dict": {}, "num_epoch_no_improvement": 0,
                "best_loss": np.float64(0.01), "best_acc": np.float64(0.9)}, path)
    return model


def _released_models_genesis(path):
    model = UNet3D(width=WIDTH)
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer_state_dict": {}}, path)
    return model


def _wrapped(path):
    """The README loader's third case: a `classficationNet.` wrapper (sic)."""
    model = UNet3D(width=WIDTH)
    torch.save({"state_dict": {f"module.classficationNet.{k}": v for k, v in model.state_dict().items()},
                "best_loss": np.float64(1.0)}, path)
    return model


@pytest.mark.parametrize("make", [_released_semantic_genesis, _released_models_genesis, _wrapped])
def test_released_layouts_fill_every_unet_tensor(tmp_path, make):
    path = tmp_path / "released.pt"
    source = make(path)
    target = UNet3D(width=WIDTH)
    holds_numpy = make is not _released_models_genesis
    if holds_numpy:
        with pytest.raises(WeightLoadError, match="trusted=True"):
            load_pretrained(target, path, verbose=False)
    report = load_pretrained(target, path, trusted=holds_numpy, verbose=False)
    assert report.missing == [] and len(report.matched) == 106
    expected = source.state_dict()
    for key, value in target.state_dict().items():
        assert torch.equal(value, expected[key]), key
    if make is _released_semantic_genesis:
        assert len(report.dropped) == 2 and all(k.startswith("module.clc_out.") for k in report.unexpected)


def test_an_encoder_only_en_checkpoint_fills_the_encoder(tmp_path):
    from shared.unet3d import ClassificationNet3D

    source = ClassificationNet3D(cls_classes=44, width=WIDTH)
    report = load_pretrained(UNet3D(width=WIDTH), {"state_dict": source.state_dict()}, verbose=False)
    assert len(report.matched) == 56 and all(k.startswith(("up_tr", "out_tr")) for k in report.missing)


def test_original_checkpoint_needs_its_numpy_scalars_allowed(tmp_path):
    path = tmp_path / "semantic_genesis_chest_ct.pt"
    _released_semantic_genesis(path)
    with pytest.raises(Exception, match="weights_only|Unpickl|numpy"):
        torch.load(path, weights_only=True)  # what the original's files do to PyTorch >= 2.6
    with pytest.raises(WeightLoadError):
        load_pretrained(UNet3D(width=WIDTH), path, verbose=False)  # refused unless trusted
    assert load_pretrained(UNet3D(width=WIDTH), path, trusted=True, verbose=False).fraction == 1.0


def test_target_net_returns_unclamped_logits():
    net = TargetNet(UNet3D(width=WIDTH), n_class=1)
    with torch.no_grad():
        net.dense_1.bias.fill_(-5.0)  # the README's ReLU head could never output below 0
        out = net(torch.rand(2, 1, 16, 16, 16))
    assert out.shape == (2, 1) and float(out.max()) < 0
    assert net.dense_1.in_features == 16 * WIDTH


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 40).astype(float), rng.integers(0, 2, 40)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(scores, labels) == pytest.approx(pairwise)


def _arrays(root, masks):
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        y = np.arange(n) % 2
        x = rng.random((n, 16, 16, 8)).astype(np.float32) * 0.2 + y[:, None, None, None] * 0.5
        np.save(root / f"{split}_x.npy", x)
        np.save(root / f"{split}_y.npy", (x > 0.6).astype(np.float32) if masks else y.astype(np.float32))
    return root


def _args(data, weights, out, *extra):
    args = ["--data_dir", str(data), "--width", str(WIDTH), "--input_rows", "16", "--input_cols", "16",
            "--input_deps", "8", "--nb_epoch", "2", "--batch_size", "4", "--output_dir", str(out), *extra]
    return args + (["--weights", str(weights)] if weights else [])


def test_classification_from_a_released_checkpoint_runs(tmp_path, capsys):
    weights = tmp_path / "semantic_genesis_chest_ct.pt"
    _released_semantic_genesis(weights)
    data = _arrays(tmp_path, masks=False)
    result = finetune_classification.main(_args(data, weights, tmp_path / "cls", "--trusted"))
    assert "loaded 106/106 tensors" in capsys.readouterr().out
    assert result["metric"] == "auc" and 0 <= result["test_metric"] <= 1
    run = tmp_path / "cls" / "semantic_genesis_chest_ct_classification"  # the default --exp_name
    assert torch.load(f"{run}.best.pt", weights_only=True)["epoch"] >= 1
    assert json.loads(Path(f"{run}.config.json").read_text())["weights"] == str(weights)


def test_segmentation_runs_and_resume_continues(tmp_path):
    data = _arrays(tmp_path, masks=True)
    full = finetune_segmentation.main(_args(data, None, tmp_path / "a", "--optimizer", "adam"))
    finetune_segmentation.main(_args(data, None, tmp_path / "b", "--optimizer", "adam", "--nb_epoch", "1"))
    resumed = finetune_segmentation.main(_args(data, None, tmp_path / "b", "--optimizer", "adam", "--resume"))
    assert full["metric"] == "dice"
    a = torch.load(tmp_path / "a" / f"{SEG_RUN}.last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / f"{SEG_RUN}.last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_metric"] == pytest.approx(full["test_metric"])


def test_two_process_ddp_fine_tuning_on_cpu(tmp_path):
    """torchrun with 2 CPU processes (gloo): one writer, a plain state dict, both ranks through every epoch."""
    data = _arrays(tmp_path, masks=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "semantic_genesis/finetune_segmentation.py", *_args(data, None, tmp_path / "ddp", "--batch_size", "2")]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("test: loss") == 1  # rank 0 prints
    ckpt = torch.load(tmp_path / "ddp" / f"{SEG_RUN}.last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["state_dict"])
    with open(tmp_path / "ddp" / f"{SEG_RUN}.metrics.csv", newline="") as f:
        epochs = [float(r["epoch"]) for r in csv.DictReader(f) if r.get("epoch")]
    assert epochs == [1, 2]  # one writer


def test_bf16_autocast_fine_tuning_runs(tmp_path, monkeypatch):
    """--amp on: the forward pass in bf16 (CPU autocast here, GPU in real use), losses and metrics in fp32.

    On a CPU the run warns and switches oneDNN off (its bf16 conv3d backward gave garbage gradients for
    these tiny cubes once other fine-tuning had run in the process), so the result no longer depends on
    what ran before: an fp32 run first, then two bf16 runs that must agree exactly."""
    data = _arrays(tmp_path, masks=False)
    finetune_classification.main(_args(data, None, tmp_path / "fp32", "--nb_epoch", "1"))
    seen = []
    original = torch.nn.functional.conv3d

    def conv3d(*a, **k):  # record whether oneDNN was allowed where the network ran
        seen.append(torch.backends.mkldnn.enabled)
        return original(*a, **k)

    monkeypatch.setattr(torch.nn.functional, "conv3d", conv3d)
    results = []
    for run in ("amp1", "amp2"):
        with pytest.warns(UserWarning, match="oneDNN switched off"):
            results.append(finetune_classification.main(_args(data, None, tmp_path / run, "--amp", "on")))
    assert seen and not any(seen) and torch.backends.mkldnn.enabled  # off inside, restored after
    assert np.isfinite(results[0]["test_loss"]) and 0 <= results[0]["test_metric"] <= 1
    assert results[0]["test_loss"] == results[1]["test_loss"]


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_x.npy"):
        finetune_classification.main(_args(tmp_path, None, tmp_path / "o"))
    with pytest.raises(WeightLoadError):
        load_pretrained(UNet3D(width=WIDTH), {"state_dict": {"x": torch.zeros(1)}}, verbose=False)


def test_luna16_nodule_cubes(sample_data):
    data = luna16_nodule_cubes(sample_data / "luna16", size=(32, 32, 16))
    x, y = data["train"]
    assert x.shape[1:] == (32, 32, 16) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert set(np.unique(np.concatenate([data[s][1] for s in data]))) == {0.0, 1.0}
    seg = luna16_nodule_cubes(sample_data / "luna16", size=(32, 32, 16), masks=True)
    xs, masks = seg["train"]
    assert masks.shape == xs.shape and masks.max() == 1.0
    positives = masks.reshape(len(masks), -1).max(1) > 0
    # the nodule (about 0 HU -> 0.5) is brighter than the lung around it
    assert xs[positives][masks[positives] > 0].mean() > xs[positives][masks[positives] == 0].mean()


def test_luna16_corrupt_scan_is_skipped_with_its_name(sample_data, tmp_path):
    import shutil

    root = tmp_path / "luna16"
    shutil.copytree(sample_data / "luna16", root)
    broken = sorted(root.glob("subset0/*.mhd"))[0]
    broken.with_suffix(".raw").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match=broken.name):
        data = luna16_nodule_cubes(root, size=(16, 16, 8))
    assert sum(len(data[s][0]) for s in data) > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "candidates.csv").write_text("seriesuid,coordX,coordY,coordZ,class\n")
    (empty / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    with pytest.raises(FileNotFoundError, match="no subset"):
        luna16_nodule_cubes(empty)


def test_positive_dice_and_empty_fp_separate_nodule_and_empty_cubes():
    import torch

    from shared.genesis.finetune import positive_dice_and_empty_fp

    target = torch.zeros(4, 4, 4, 2)
    target[0, :2, :2, 0] = 1  # 4 nodule voxels in cube 0, 2 in cube 1; cubes 2 and 3 empty
    target[1, 0, :2, 0] = 1
    pred = target.clone()
    pred[1] = 0  # cube 1 missed: voxel Dice over the nodule cubes = 2 * 4 / (4 + 6)
    pred[3, 0, 0, 0] = 1  # one voxel on an empty cube: a false positive on half the empty cubes
    assert positive_dice_and_empty_fp(pred, target) == pytest.approx((0.8, 0.5))
    nothing = positive_dice_and_empty_fp(torch.zeros_like(target), target)
    assert nothing == (0.0, 0.0)  # predicting nothing: no overlap, no false positive
    import math
    assert math.isnan(positive_dice_and_empty_fp(pred[2:], target[2:])[0])  # no nodule cube: undefined
