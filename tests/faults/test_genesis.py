"""Faults injected into Semantic Genesis and TransVW (one engine, shared/genesis/): every test runs for both
(the kill -9 ones for TransVW in `make test-all` only, see `method_killed`).

Pre-training (`<method>/train.py`) on tiny synthetic pattern files, fine-tuning (`finetune_*.py`) on tiny
arrays, self-discovery's pattern generator on tiny volumes. Kill -9 runs the real CLI in a subprocess.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import semantic_genesis.finetune_classification as sg_cls
import semantic_genesis.finetune_segmentation as sg_seg
import semantic_genesis.train as sg_train
import transvw.finetune_classification as tv_cls
import transvw.finetune_segmentation as tv_seg
import transvw.train as tv_train
from shared.checkpoint import CheckpointError, load_checkpoint
from shared.genesis.data import pattern_file, write_pattern_files
from shared.genesis.finetune import luna16_nodule_cubes
from shared.guards import NonFiniteLossError
from shared.runfolder import RunFolderClash
from shared.weights import WeightLoadError

ROOT = Path(__file__).resolve().parents[2]

OUTCOMES = {
    "kill_resume": "kill -9 mid-epoch, then --resume: final weights bit-identical to an uninterrupted run; "
                   "metrics rows after the checkpoint are not repeated",
    "kill_during_save": "kill -9 while last.pt is written: the previous last.pt loads and --resume finishes",
    "corrupt_file": "truncated pattern/fine-tuning .npy or LUNA16 .raw: error (or skip, for scans) naming the "
                    "file and saying truncated",
    "missing_file": "missing pattern or split file: error naming it",
    "empty_data": "empty data folder or array: error naming it; a failed pattern generator leaves no empty logs",
    "wrong_label_shape": "mask of the wrong shape, label count mismatch or out-of-range class: error naming "
                         "the label file",
    "nonfinite_input": "NaN/inf in pattern cubes, fine-tuning arrays or a CT scan: refused naming the file "
                       "(scan skipped and counted)",
    "wrong_ndim": "cubes that are not N x X x Y x Z: error naming the file and its shape",
    "run_folder_clash": "both methods, or two --exp_name, share Checkpoints/en_de (files named per run); "
                        "the same --exp_name with other settings: refused naming them",
    "nonfinite_loss": "injected NaN loss: stops with NonFiniteLossError naming the step; checkpoints before it "
                      "intact",
    "wrong_checkpoint": "wrong-size checkpoint to --resume / --pre_path / --weights: error naming the file",
}
NOT_APPLICABLE = {}

METHODS = {
    "semantic_genesis": (sg_train, sg_cls, sg_seg, "semantic_genesis_chest_ct"),
    "transvw": (tv_train, tv_cls, tv_seg, "TransVW_chest_ct"),
}
TINY = ["--cls_classes", "2", "--nb_instances", "3", "--nb_val_instances", "2", "--nb_multires_patch", "1",
        "--batch_size", "2", "--num_workers", "0", "--width", "2", "--n_images", "0"]
STEPS_PER_EPOCH = 3  # 6 training cubes / batch 2
method = pytest.mark.parametrize("name", list(METHODS))
# The kill -9 tests run a CLI in a child process (a torch start-up each). transvw/train.py is the Semantic Genesis
# engine (shared/genesis/pretrain.py) under its own --exp_name, so its kill tests repeat the semantic_genesis ones
# and run in `make test-all` only; TransVW's run-file names are checked by every other test here.
method_killed = pytest.mark.parametrize("name", ["semantic_genesis", pytest.param("transvw", marks=pytest.mark.slow)])


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    return write_pattern_files(tmp_path_factory.mktemp("patterns"), cubes_per_class=3, n_classes=2,
                               n_val_per_class=2, shape=(16, 16, 8), resolutions=1)


def copy_patterns(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.glob("*.npy"):
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def pretrain(name, patterns, out, *extra):
    return METHODS[name][0].main(["--data_dir", str(patterns), "--output_dir", str(out), *TINY, *extra])


def pretrain_cli(name, patterns, out, env_extra, *extra):
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), **env_extra)
    cmd = [sys.executable, f"{name}/train.py", "--data_dir", str(patterns), "--output_dir", str(out), *TINY, *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def arrays(root, masks=False, n=(4, 2, 2)):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, k in zip(("train", "val", "test"), n):
        y = np.arange(k) % 2
        x = rng.random((k, 16, 16, 8)).astype(np.float32) * 0.2 + y[:, None, None, None] * 0.5
        np.save(root / f"{split}_x.npy", x)
        np.save(root / f"{split}_y.npy", (x > 0.6).astype(np.float32) if masks else y.astype(np.float32))
    return root


def finetune(name, task, data, out, *extra):
    module = METHODS[name][1 if task == "classification" else 2]
    return module.main(["--data_dir", str(data), "--width", "2", "--input_rows", "16", "--input_cols", "16",
                        "--input_deps", "8", "--nb_epoch", "1", "--batch_size", "2", "--output_dir", str(out), *extra])


def run_file(out, name, file):
    """`<out>/en_de/<exp_name>.<file>`: a file of method `name`'s pre-training run."""
    return out / "en_de" / f"{METHODS[name][3]}.{file}"


def state_of(path):
    return torch.load(path, weights_only=True)["state_dict"]


def steps_logged(csv_path):
    with open(csv_path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train_loss")]


# ----------------------------------------------------------------------------------------- kill -9

@method_killed
def test_kill_resume_mid_epoch_gives_the_uninterrupted_weights(name, patterns, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    pretrain(name, patterns, full, "--nb_epoch", "3")
    killed = pretrain_cli(name, patterns, cut, {"SSL_MED_FAULT_KILL_STEP": str(STEPS_PER_EPOCH + 2)},
                          "--nb_epoch", "3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert load_checkpoint(run_file(cut, name, "last.pt"))["epoch"] == 1  # killed in epoch 2
    pretrain(name, patterns, cut, "--nb_epoch", "3", "--resume")
    a, b = state_of(run_file(full, name, "last.pt")), state_of(run_file(cut, name, "last.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the rows step 4 (logged before the kill, after the checkpoint) appear once
    assert steps_logged(run_file(cut, name, "metrics.csv")) == steps_logged(run_file(full, name, "metrics.csv"))


@method
def test_kill_resume_metrics_rows_after_the_checkpoint_are_dropped(name, patterns, tmp_path):
    """The original defect: rows logged after the last checkpoint stayed, so a step appeared twice."""
    pretrain(name, patterns, tmp_path, "--nb_epoch", "1")
    metrics = run_file(tmp_path, name, "metrics.csv")
    header = metrics.read_text().splitlines()[0].split(",")
    with open(metrics, "a", newline="") as f:  # what a run killed in epoch 2 leaves behind
        csv.DictWriter(f, header).writerow({"step": STEPS_PER_EPOCH + 1, "train_loss": 1.0})
    pretrain(name, patterns, tmp_path, "--nb_epoch", "2", "--resume")
    steps = steps_logged(metrics)
    assert len(steps) == len(set(steps)) and steps == sorted(steps)


@method_killed
def test_kill_during_save_keeps_the_previous_checkpoint(name, patterns, tmp_path):
    # saves per epoch: the method's checkpoint (when the validation loss improves) and last.pt;
    # epoch 1 always improves: saves 1 and 2, so save 4 is the second last.pt or later
    killed = pretrain_cli(name, patterns, tmp_path, {"SSL_MED_FAULT_KILL_IN_SAVE": "4"}, "--nb_epoch", "3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list((tmp_path / "en_de").glob(".*.tmp"))  # the half-written file, never renamed
    kept = load_checkpoint(run_file(tmp_path, name, "last.pt"))
    assert kept["epoch"] in (1, 2)
    load_checkpoint(tmp_path / "en_de" / f"{METHODS[name][3]}.pt")
    result = pretrain(name, patterns, tmp_path, "--nb_epoch", "3", "--resume")
    assert result["steps"] == 3 * STEPS_PER_EPOCH


# ------------------------------------------------------------------------------------ bad inputs

@method
def test_corrupt_file_truncated_pattern_array_is_named(name, patterns, tmp_path):
    data = copy_patterns(patterns, tmp_path / "p")
    bad = pattern_file(data, "train_data", 1, 1)
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{bad.name}: not a readable .npy"):
        pretrain(name, data, tmp_path / "o", "--nb_epoch", "1")


@method
def test_corrupt_file_truncated_finetuning_array_is_named(name, tmp_path):
    data = arrays(tmp_path / "a")
    bad = data / "val_x.npy"
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"val_x.npy: not a readable .npy array \(1000 bytes; truncated"):
        finetune(name, "classification", data, tmp_path / "o")


def test_corrupt_file_truncated_raw_is_skipped_as_truncated_and_counted(sample_data, tmp_path, capsys):
    root = tmp_path / "luna16"  # the sample tree, linked, with one .raw truncated
    for src in (sample_data / "luna16").rglob("*"):
        if src.is_file():
            (root / src.relative_to(sample_data / "luna16")).parent.mkdir(parents=True, exist_ok=True)
            (root / src.relative_to(sample_data / "luna16")).symlink_to(src)
    scans = sorted(root.glob("subset*/*.mhd"))
    raw = scans[0].with_suffix(".raw")
    data = raw.read_bytes()[:5000]
    raw.unlink()
    raw.write_bytes(data)
    with pytest.warns(UserWarning, match=f"{raw.name}: truncated: 5000 bytes") as caught:
        luna16_nodule_cubes(root, size=(16, 16, 8))
    assert not any("No such file" in str(w.message) for w in caught)
    assert f"skipped 1 of {len(scans)} scans: {scans[0].name}" in capsys.readouterr().out


@method
def test_missing_file_pattern_and_split_files_are_named(name, patterns, tmp_path):
    data = copy_patterns(patterns, tmp_path / "p")
    pattern_file(data, "val_label", 1, 1).unlink()
    with pytest.raises(FileNotFoundError, match="val_label1_vwGen_ex_ref_fold1.0.npy: pattern file not found"):
        pretrain(name, data, tmp_path / "o", "--nb_epoch", "1")
    split = arrays(tmp_path / "a")
    (split / "test_y.npy").unlink()
    with pytest.raises(FileNotFoundError, match="test_y.npy: missing"):
        finetune(name, "classification", split, tmp_path / "o2")


@method
def test_empty_data_folder_and_empty_arrays(name, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train_data1_vwGen_ex_ref_fold1.0.npy: pattern file not found"):
        pretrain(name, tmp_path / "empty", tmp_path / "o", "--nb_epoch", "1")
    data = arrays(tmp_path / "a")
    np.save(data / "val_x.npy", np.zeros((0, 16, 16, 8), np.float32))
    np.save(data / "val_y.npy", np.zeros((0,), np.float32))
    with pytest.raises(ValueError, match="val_x.npy: no cubes"):
        finetune(name, "classification", data, tmp_path / "o2")


def test_empty_data_failed_pattern_generator_leaves_no_logs_and_says_too_small(tmp_path):
    """Volumes that hold a crop but not the crop plus its borders: no corner anywhere."""
    from shared.genesis.self_discovery.patterns import PatternConfig, generate_patterns

    paths = {}
    for split, n in (("train", 3), ("validation", 2)):
        (tmp_path / split).mkdir()
        paths[split] = []
        for i in range(n):
            paths[split].append(tmp_path / split / f"{split}{i}.npy")
            np.save(paths[split][-1], np.random.default_rng(i).random((24, 24, 12), dtype=np.float32))
    cfg = PatternConfig(input_rows=16, input_cols=16, input_deps=8, crop_rows=16, crop_cols=16, nb_instances=2,
                        nb_instances_val=1, nb_classes=2, minPatchSize=12, maxPatchSize=20, len_border=8,
                        len_border_z=2, png=False)
    save = tmp_path / "out"
    with pytest.warns(UserWarning, match="too small for the borders") as caught, \
            pytest.raises(RuntimeError, match="every one of the 3 training volumes"):
        generate_patterns(paths["train"], paths["validation"], np.eye(3), np.eye(2, 3), save, cfg, progress=False)
    assert "x needs at least 33" in str(caught[0].message)
    assert not list(save.glob("*_vwGen_exRef.txt")) and not list(save.glob(".*partial"))


@method
def test_wrong_label_shape_mask_labels_and_counts_are_named(name, patterns, tmp_path):
    seg = arrays(tmp_path / "seg", masks=True)
    np.save(seg / "train_y.npy", np.zeros((4, 16, 16, 4), np.float32))
    with pytest.raises(ValueError, match=r"train_y.npy: masks of shape \(4, 16, 16, 4\) for cubes of shape"):
        finetune(name, "segmentation", seg, tmp_path / "o")
    cls = arrays(tmp_path / "cls")
    np.save(cls / "val_y.npy", np.array([0, 3], np.float32))
    with pytest.raises(ValueError, match="val_y.npy: labels must be integers 0..1"):
        finetune(name, "classification", cls, tmp_path / "o2")
    data = copy_patterns(patterns, tmp_path / "p")
    np.save(pattern_file(data, "train_label", 1, 1), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="train_label1_vwGen_ex_ref_fold1.0.npy: 5 labels for 6 cubes"):
        pretrain(name, data, tmp_path / "o3", "--nb_epoch", "1")


@method
def test_nonfinite_input_pattern_cube_and_finetuning_array_refused(name, patterns, tmp_path):
    data = copy_patterns(patterns, tmp_path / "p")
    bad = pattern_file(data, "train_data", 1, 1)
    cubes = np.load(bad)
    cubes[4, 3, 3, 3] = np.nan
    np.save(bad, cubes)
    with pytest.raises(ValueError, match=f"{bad.name}: NaN or infinite values in row 4"):
        pretrain(name, data, tmp_path / "o", "--nb_epoch", "1")
    split = arrays(tmp_path / "a")
    x = np.load(split / "train_x.npy")
    x[2, 0, 0, 0] = np.inf
    np.save(split / "train_x.npy", x)
    with pytest.raises(ValueError, match=r"train_x.npy: 1 NaN or infinite values \(first in row 2\)"):
        finetune(name, "classification", split, tmp_path / "o2")


@method
def test_wrong_ndim_cubes_are_named_with_their_shape(name, patterns, tmp_path):
    data = copy_patterns(patterns, tmp_path / "p")
    np.save(pattern_file(data, "val_data", 1, 1), np.zeros((4, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"val_data1_vwGen_ex_ref_fold1.0.npy: expected N x X x Y x Z cubes, got "
                                         r"shape \(4, 16, 16\)"):
        pretrain(name, data, tmp_path / "o", "--nb_epoch", "1")
    split = arrays(tmp_path / "a")
    np.save(split / "train_x.npy", np.zeros((4, 16, 16), np.float32))
    with pytest.raises(ValueError, match="train_x.npy: expected N x X x Y x Z cubes"):
        finetune(name, "classification", split, tmp_path / "o2")


# ------------------------------------------------------------------------------------ run folder

def files_of(out, name):
    """{path: bytes} of everything method `name`'s pre-training run owns in <out>/en_de."""
    run, stem = out / "en_de", METHODS[name][3]
    owned = [*run.glob(f"{stem}.*"), *(run / "tensorboard" / stem).glob("*")]
    return {p: p.read_bytes() for p in sorted(owned) if p.is_file()}


@method
def test_run_folder_clash_only_the_same_name_with_other_settings(name, patterns, tmp_path):
    other = next(m for m in METHODS if m != name)
    pretrain(other, patterns, tmp_path, "--nb_epoch", "1")
    before = files_of(tmp_path, other)
    assert run_file(tmp_path, other, "last.pt") in before and run_file(tmp_path, other, "run.json") in before
    # the other method in the same default folder (Checkpoints/en_de): runs beside it, resumes its own run
    pretrain(name, patterns, tmp_path, "--nb_epoch", "1")
    pretrain(name, patterns, tmp_path, "--nb_epoch", "2", "--resume")
    assert load_checkpoint(run_file(tmp_path, name, "last.pt"))["epoch"] == 2
    assert steps_logged(run_file(tmp_path, name, "metrics.csv")) == [1, 5]  # its own rows, each once
    with pytest.raises(RunFolderClash, match=f"checkpoint of a '{METHODS[other][3]}' run.*refusing to resume"):
        pretrain(name, patterns, tmp_path, "--nb_epoch", "3", "--resume", str(run_file(tmp_path, other, "last.pt")))
    # the one clash left: the same --exp_name with other settings, named, with or without --resume
    for extra in (("--width", "4", "--resume"), ("--lr", "0.01")):
        with pytest.raises(RunFolderClash, match=f"{METHODS[other][3]}.run.json holds a run of '{METHODS[other][3]}'"
                                                 " with other settings \\((lr|width): .* there, .* now\\)"):
            pretrain(other, patterns, tmp_path, *extra)
    assert files_of(tmp_path, other) == before
    assert json.loads(run_file(tmp_path, other, "config.json").read_text())["exp_name"] == METHODS[other][3]


@method
def test_run_folder_clash_fine_tuning_and_a_fresh_start_keeps_the_old_log(name, tmp_path):
    data, out = arrays(tmp_path / "a"), tmp_path / "o"
    finetune(name, "classification", data, out)
    run = out / f"{METHODS[name][3]}_classification"  # the default --exp_name: the method's, the task
    with pytest.raises(RunFolderClash, match="lr: 0.001 there, 0.01 now"):
        finetune(name, "classification", data, out, "--lr", "0.01", "--resume")
    finetune(name, "classification", data, out, "--lr", "0.01", "--exp_name", "other_lr")  # beside it
    assert (out / "other_lr.best.pt").is_file() and (out / "other_lr.metrics.csv").is_file()
    with pytest.warns(UserWarning, match=f"{run.name}.metrics.1.csv"):
        finetune(name, "classification", data, out)  # same settings, no --resume: a new log
    assert Path(f"{run}.metrics.1.csv").is_file() and Path(f"{run}.metrics.csv").is_file()
    assert not (out / "other_lr.metrics.1.csv").exists()


def legacy_layout(out, name):
    """Turn method `name`'s run folder into the layout before runs were named (run.json, last.pt, ...)."""
    run, stem = out / "en_de", METHODS[name][3]
    for file in ("run.json", "last.pt", "metrics.csv", "config.json"):
        (run / f"{stem}.{file}").rename(run / file)
    for event in (run / "tensorboard" / stem).glob("*"):
        event.rename(run / "tensorboard" / event.name)
    return run


@method
def test_run_folder_clash_earlier_layout_resumed_by_its_run_left_to_others(name, patterns, tmp_path, capsys):
    other = next(m for m in METHODS if m != name)
    pretrain(name, patterns, tmp_path, "--nb_epoch", "1")
    run = legacy_layout(tmp_path, name)
    legacy = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    pretrain(other, patterns, tmp_path, "--nb_epoch", "1")  # another method's run: the old files stay put
    assert "left untouched" in capsys.readouterr().out
    assert all(p.read_bytes() == data for p, data in legacy.items())
    with pytest.raises(RunFolderClash, match="run.json \\(written before runs were named\\) holds a run of "
                                             f"'{METHODS[name][3]}' with other settings \\(lr: 0.001 there"):
        pretrain(name, patterns, tmp_path, "--nb_epoch", "2", "--resume", "--lr", "0.01")
    pretrain(name, patterns, tmp_path, "--nb_epoch", "2", "--resume")  # its own run: renamed, then resumed
    assert "renamed this run's files" in capsys.readouterr().out
    assert not (run / "last.pt").exists() and not (run / "run.json").exists()
    assert load_checkpoint(run_file(tmp_path, name, "last.pt"))["epoch"] == 2
    assert steps_logged(run_file(tmp_path, name, "metrics.csv")) == [1, 5]


# ----------------------------------------------------------------------------------- training

@method
def test_nonfinite_loss_stops_naming_the_step(name, patterns, tmp_path, monkeypatch):
    pretrain(name, patterns, tmp_path, "--nb_epoch", "1")
    kept = run_file(tmp_path, name, "last.pt").read_bytes()
    monkeypatch.setenv("SSL_MED_FAULT_NAN_STEP", str(STEPS_PER_EPOCH + 2))
    with pytest.raises(NonFiniteLossError, match=f"loss is nan at step {STEPS_PER_EPOCH + 2} \\(epoch 2\\)"):
        pretrain(name, patterns, tmp_path, "--nb_epoch", "2", "--resume")
    assert run_file(tmp_path, name, "last.pt").read_bytes() == kept
    monkeypatch.setenv("SSL_MED_FAULT_NAN_STEP", "1")
    with pytest.raises(NonFiniteLossError, match="at step 1 \\(epoch 1\\)"):
        finetune(name, "segmentation", arrays(tmp_path / "a", masks=True), tmp_path / "ft")


@method
def test_wrong_checkpoint_to_resume_pre_path_and_weights_is_named(name, patterns, tmp_path):
    pretrain(name, patterns, tmp_path / "wide", "--nb_epoch", "1", "--width", "4")
    wide_last = run_file(tmp_path / "wide", name, "last.pt")
    with pytest.raises(RunFolderClash, match=f"{wide_last}: .*width: 4 there, 2 now"):
        pretrain(name, patterns, tmp_path / "narrow", "--nb_epoch", "1", "--resume", str(wide_last))
    unrecorded = tmp_path / "unrecorded.pt"  # no run record (as before runs were recorded): the shapes decide
    torch.save({k: v for k, v in torch.load(wide_last, weights_only=True).items() if k != "run"}, unrecorded)
    with pytest.raises(CheckpointError, match=f"{unrecorded}: its weights do not fit this model"):
        pretrain(name, patterns, tmp_path / "narrow", "--nb_epoch", "1", "--resume", str(unrecorded))
    with pytest.raises(WeightLoadError, match="too few tensors matched"):
        pretrain(name, patterns, tmp_path / "n2", "--nb_epoch", "1", "--pre_path", str(wide_last))
    with pytest.raises(WeightLoadError, match=str(wide_last)):
        finetune(name, "segmentation", arrays(tmp_path / "a", masks=True), tmp_path / "ft", "--weights",
                 str(wide_last))
    with pytest.raises(RunFolderClash, match="refusing to resume from it"):
        finetune(name, "segmentation", arrays(tmp_path / "a", masks=True), tmp_path / "ft2", "--resume",
                 str(wide_last))


# ------------------------------------------------------------------- other defects of issue 14

def test_auc_with_one_class_in_a_split_says_why_in_one_line(tmp_path):
    """Through the CLI: the warning is one line (no source line of the library that raised it)."""
    data = arrays(tmp_path / "a")
    np.save(data / "test_y.npy", np.zeros(2, np.float32))
    cmd = [sys.executable, "transvw/finetune_classification.py", "--data_dir", str(data), "--width", "2",
           "--input_rows", "16", "--input_cols", "16", "--input_deps", "8", "--nb_epoch", "1", "--batch_size", "2",
           "--output_dir", str(tmp_path / "o")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "UserWarning: AUC is undefined (nan) on the test split: all its 2 cubes are of class 0" in out.stderr
    assert "warnings.warn" not in out.stderr and "test: loss" in out.stdout and "auc nan" in out.stdout


def test_cpu_bf16_warns_and_trains_with_onednn_off(patterns, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain("transvw", patterns, tmp_path, "--nb_epoch", "1", "--amp", "on")
    assert any("oneDNN switched off" in str(w.message) for w in caught)
    assert torch.backends.mkldnn.enabled
    assert all(torch.isfinite(v).all() for v in state_of(run_file(tmp_path, "transvw", "last.pt")).values()
               if v.is_floating_point())
