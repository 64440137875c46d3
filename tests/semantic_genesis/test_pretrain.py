"""Semantic Genesis pre-training: flags, loss, checkpoints, resume, two-stage warm start."""

import csv
import pickle

import numpy as np
import pytest
import torch

from semantic_genesis import train
from semantic_genesis.config import EXP_NAME
from shared.checkpoint import load_checkpoint
from shared.genesis.data import load_patterns, write_pattern_files
from shared.genesis.pretrain import ORIGINAL_KEYS, Trainer, genesis_loss
from shared.unet3d import ClassificationNet3D, YNet3D

TINY = ["--cls_classes", "3", "--nb_instances", "4", "--nb_val_instances", "2", "--nb_multires_patch", "2",
        "--batch_size", "4", "--num_workers", "0", "--width", "2", "--n_images", "2"]


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    return write_pattern_files(tmp_path_factory.mktemp("patterns"), cubes_per_class=4, n_classes=3,
                               n_val_per_class=2, shape=(16, 16, 8), resolutions=2)


def _run(patterns, out, *extra):
    return train.main(["--data_dir", str(patterns), "--output_dir", str(out), *TINY, *extra])


def test_flags_parse_with_the_original_defaults():
    args = train.get_parser().parse_args(["--data_dir", "d"])
    expected = {"exp": "en_de", "batch_size": 64, "num_workers": 4, "lr": 1e-3, "cls_classes": 44,
                "nb_instances": 200, "nb_val_instances": 30, "nb_multires_patch": 3, "lambda_rec": 1.0,
                "lambda_cls": 0.01, "multi_gpu": False, "pre_path": None, "input_rows": 64, "input_cols": 64,
                "input_deps": 32, "verbose": 1, "notes": None, "exp_name": "semantic_genesis_chest_ct",
                "nb_epoch": 10000, "patience": 50, "width": 32, "warped_target": False}
    assert {k: getattr(args, k) for k in expected} == expected
    args = train.get_parser().parse_args(["--data_dir", "d", "--lambda_cls", "0.5", "--lr", "0.02"])
    assert args.lambda_cls == 0.5 and args.lr == 0.02  # the original rejected non-integer lambdas


def test_lr_and_lambda_cls_really_work(patterns, tmp_path):
    args = train.get_parser().parse_args(["--data_dir", str(patterns), "--output_dir", str(tmp_path), *TINY,
                                          "--lr", "0.0123", "--lambda_cls", "0.5"])
    trainer = Trainer(args)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0123)
    restored, logits = torch.full((2, 1, 8, 8, 8), 0.5), torch.zeros(2, 3)
    target, labels = torch.zeros(2, 1, 8, 8, 8), torch.tensor([0, 1])
    total, mse, ce = genesis_loss((restored, logits), target, labels, 1.0, args.lambda_cls)
    assert mse.item() == pytest.approx(0.25) and ce.item() == pytest.approx(np.log(3))
    assert total.item() == pytest.approx(0.25 + 0.5 * np.log(3))


def test_pattern_files_are_selected_like_the_original(patterns):
    train_cubes, val_cubes = load_patterns(patterns, cls_classes=2, nb_instances=3, nb_val_instances=1,
                                           nb_multires_patch=2)
    assert len(train_cubes) == 2 * 2 * 3 and len(val_cubes) == 2  # 2 resolutions x 2 classes x 3
    cubes, labels = train_cubes.get([0, 5, 6])
    assert cubes.shape == (3, 1, 16, 16, 8) and cubes.dtype == torch.float32
    assert labels.tolist() == [0, 1, 0]  # class-major rows, resolution 2 after resolution 1
    with pytest.warns(UserWarning, match="train_data3_vwGen_ex_ref_fold1.0.npy"):
        assert len(load_patterns(patterns, cls_classes=3, nb_instances=4, nb_multires_patch=3)[0]) == 24
    with pytest.raises(FileNotFoundError, match="train_data3_vwGen_ex_ref_fold1.0.npy"):
        load_patterns(patterns, cls_classes=3, nb_multires_patch=3, skip_blank=False)
    with pytest.raises(FileNotFoundError, match="val_data1_vwGen_ex_ref_fold2.0.npy|train_data1_vwGen_ex_ref_fold2"):
        load_patterns(patterns, cls_classes=60, nb_multires_patch=1)
    with pytest.raises(ValueError, match="--cls_classes"):
        load_patterns(patterns, cls_classes=2, nb_instances=4, nb_multires_patch=1)


def test_blank_resolution_files_are_skipped(tmp_path):
    root = write_pattern_files(tmp_path, 2, 2, 1, shape=(8, 8, 8), resolutions=2)
    np.save(root / "train_data2_vwGen_ex_ref_fold1.0.npy", np.zeros((4, 8, 8, 8), np.float32))
    with pytest.warns(UserWarning, match="all-zero"):
        train_cubes, _ = load_patterns(root, cls_classes=2, nb_instances=2, nb_multires_patch=2)
    assert len(train_cubes) == 4
    assert len(load_patterns(root, 2, 2, 1, 2, skip_blank=False)[0]) == 8


def test_bad_pattern_file_is_named(tmp_path):
    root = write_pattern_files(tmp_path, 2, 2, 1, shape=(8, 8, 8), resolutions=1)
    (root / "val_data1_vwGen_ex_ref_fold1.0.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="val_data1_vwGen_ex_ref_fold1.0.npy"):
        load_patterns(root, cls_classes=2, nb_instances=2, nb_multires_patch=1)


def test_loss_falls_and_run_folder_is_complete(patterns, tmp_path):
    _run(patterns, tmp_path, "--nb_epoch", "6", "--lr", "0.003")
    run = tmp_path / "en_de"
    with open(run / f"{EXP_NAME}.metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    val = [float(r["val_loss"]) for r in rows]
    train_loss = [float(r["train_loss_epoch"]) for r in rows]
    assert len(val) == 6
    assert val[-1] < val[0] and train_loss[-1] < train_loss[0]
    assert (run / f"{EXP_NAME}.config.json").is_file() and any((run / "tensorboard" / EXP_NAME).iterdir())
    assert sorted(p.name for p in (run / "images" / EXP_NAME).glob("*.png"))[-1] == "epoch_0006.png"


def test_checkpoint_has_exactly_the_original_keys_and_loads_weights_only(patterns, tmp_path):
    _run(patterns, tmp_path, "--nb_epoch", "1")
    ckpt = torch.load(tmp_path / "en_de" / "semantic_genesis_chest_ct.pt", weights_only=True)
    assert tuple(ckpt) == ORIGINAL_KEYS
    assert type(ckpt["best_loss"]) is float and type(ckpt["best_acc"]) is float
    assert type(ckpt["epoch"]) is int and ckpt["epoch"] == 1 and ckpt["num_epoch_no_improvement"] == 0
    assert list(ckpt["state_dict"]) == list(YNet3D(cls_classes=3, width=2).state_dict())
    assert len(ckpt["state_dict"]) == 115
    assert "initial_lr" in ckpt["optimizer_state_dict"]["param_groups"][0]  # StepLR's, as the original

    _run(patterns, tmp_path, "--nb_epoch", "1", "--exp", "en")
    ckpt = torch.load(tmp_path / "en" / "semantic_genesis_chest_ct.pt", weights_only=True)
    assert list(ckpt["state_dict"]) == list(ClassificationNet3D(cls_classes=3, width=2).state_dict())
    assert len(ckpt["state_dict"]) == 65


def test_resume_equals_uninterrupted(patterns, tmp_path):
    _run(patterns, tmp_path / "a", "--nb_epoch", "2")
    _run(patterns, tmp_path / "b", "--nb_epoch", "1")
    _run(patterns, tmp_path / "b", "--nb_epoch", "2", "--resume")
    a = torch.load(tmp_path / "a" / "en_de" / f"{EXP_NAME}.last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "en_de" / f"{EXP_NAME}.last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["best_loss"] == b["best_loss"]
    assert a["scheduler_state_dict"] == b["scheduler_state_dict"]
    sa, sb = a["optimizer_state_dict"]["state"], b["optimizer_state_dict"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_two_stage_pre_path_from_a_dataparallel_checkpoint(patterns, tmp_path):
    _run(patterns, tmp_path, "--nb_epoch", "1", "--exp", "en")
    en = torch.load(tmp_path / "en" / "semantic_genesis_chest_ct.pt", weights_only=True)
    # the original's --multi_gpu runs prefix every key with 'module.' and store numpy scalars
    original = dict(en, state_dict={f"module.{k}": v for k, v in en["state_dict"].items()},
                    best_loss=np.float64(en["best_loss"]), best_acc=np.float64(0.5))
    path = tmp_path / "original_en.pt"
    torch.save(original, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)  # plain weights_only refuses numpy scalars
    args = train.get_parser().parse_args(["--data_dir", str(patterns), "--output_dir", str(tmp_path / "s2"),
                                          *TINY, "--pre_path", str(path), "--trusted"])
    model = Trainer(args).model
    for key, value in en["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_pretraining_on_patterns_self_discovered_from_the_sample_ct(sample_data, tmp_path):
    from shared.genesis.self_discovery.pipeline import run_self_discovery

    found = run_self_discovery(sample_data / "luna16", tmp_path / "sd", nb_classes=3, nb_instances=6,
                               nb_instances_val=2, cube=(32, 32, 16), ae_epochs=1)
    train.main(["--data_dir", str(found["save"]), "--output_dir", str(tmp_path), "--cls_classes", "3",
                "--nb_instances", "6", "--nb_val_instances", "2", "--batch_size", "9", "--num_workers", "0",
                "--width", "2", "--nb_epoch", "3", "--lr", "0.003", "--n_images", "0"])
    with open(tmp_path / "en_de" / f"{EXP_NAME}.metrics.csv") as f:
        val = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
    assert len(val) == 3 and val[-1] < val[0]
