"""Faults injected into VoCo: pre-training (`voco/train.py`) and BTCV fine-tuning (`voco/finetune.py`).

Tiny SwinUNETR (feature size 12, window 2) on 64^3 crops of the sample BTCV-style CT; kill -9 runs the
real CLI in a subprocess.
"""

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from shared.checkpoint import CheckpointError, load_checkpoint
from shared.guards import NonFiniteLossError
from shared.runfolder import RunFolderClash
from shared.weights import WeightLoadError
from voco import finetune, train
from voco.data import SafeDataset, VoCoCrops, VoCoDataset, base_dataset, btcv_transforms, pretrain_transforms
from voco.engine import pass_indices

ROOT = Path(__file__).resolve().parents[2]

OUTCOMES = {
    "kill_resume": "kill -9 between checkpoints, then --resume: final weights bit-identical; metrics rows "
                   "after the checkpoint not repeated",
    "kill_during_save": "kill -9 while a checkpoint is written: the previous model_current_epoch.pt loads",
    "corrupt_file": "truncated NIfTI: skipped with a warning naming it and counted (pre-training, "
                    "validation); a bad label is named under the label's file",
    "missing_file": "listed files that do not exist: error naming the list and every missing file",
    "empty_data": "empty training or validation list: error naming the json",
    "wrong_label_shape": "label map of another shape or grid (transposed): refused naming the label file; "
                         "validation skips and reports the case, never substitutes another",
    "nonfinite_input": "NaN/inf voxels: refused naming the file (skipped and counted in long runs), not cast to 0",
    "wrong_ndim": "a 2-D image or label: error naming the file",
    "run_folder_clash": "pre-training and fine-tuning share --logdir (files named per stage); one "
                        "stage with other settings: refused naming them, its logs untouched",
    "nonfinite_loss": "injected NaN loss: stops with NonFiniteLossError naming the step",
    "wrong_checkpoint": "wrong-size checkpoint to --resume / --pretrained_checkpoint / --checkpoint: error "
                        "naming the file",
}
NOT_APPLICABLE = {}

TINY_MODEL = ["--feature_size", "12", "--hidden_dim", "32", "--out_dim", "32", "--window_size", "2",
              "--use_checkpoint", "False"]
TINY_GEOMETRY = ["--base_roi", "32", "--num_crops", "2", "--roi_x", "64", "--sw_batch_size", "1"]
FT_TINY = ["--feature_size", "12", "--window_size", "2", "--use_checkpoint", "False", "--roi_x", "64",
           "--roi_y", "32", "--roi_z", "32", "--space_x", "4", "--space_y", "4", "--space_z", "5",
           "--sw_batch_size", "1", "--workers", "0", "--infer_overlap", "0.25",
           "--use_ssl_pretrained", "False", "--warmup_epochs", "0"]


@pytest.fixture(scope="module")
def btcv(sample_data):
    return sample_data / "btcv"


def pretrain_argv(btcv, logdir, steps, *extra, json_list=None):
    return ["--logdir", str(logdir), "--json_list", str(json_list or btcv / "btcv.json"), "--data_dir", str(btcv),
            "--batch_size", "1", "--num_steps", str(steps), "--warmup_steps", "1", "--lr", "1e-3", "--eval_num", "1",
            "--save_every", "0", "--workers", "0", *TINY_MODEL, *TINY_GEOMETRY, *extra]


@pytest.fixture(scope="module")
def full_run(btcv, tmp_path_factory):
    """An uninterrupted 2-step pre-training (a checkpoint after every step)."""
    logdir = tmp_path_factory.mktemp("voco_full")
    train.main(pretrain_argv(btcv, logdir, 2))
    return logdir


@pytest.fixture(scope="module")
def killed_in_save(btcv, tmp_path_factory):
    """The same run as a CLI, SIGKILLed while writing its second checkpoint (step 2 logged, not saved)."""
    logdir = tmp_path_factory.mktemp("voco_killed")
    result = cli("voco/train.py", pretrain_argv(btcv, logdir, 2), {"SSL_MED_FAULT_KILL_IN_SAVE": "2"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    return logdir


def cli(script, argv, env_extra):
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), **env_extra)
    return subprocess.run([sys.executable, script, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def nifti(path, array, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def truncated_copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(Path(src).read_bytes()[:4000])
    return dst


def write_list(path, training, validation=()):
    path.write_text(json.dumps({"training": list(training), "validation": list(validation)}))
    return path


def sample_case(btcv, i=0):
    spec = json.loads((btcv / "dataset_0.json").read_text())
    entry = (spec["training"] + spec["validation"])[i]
    return btcv / entry["image"], btcv / entry["label"]


def steps_logged(csv_path):
    with open(csv_path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


# ----------------------------------------------------------------------------------------- kill -9

def test_kill_resume_between_checkpoints_gives_the_uninterrupted_weights(btcv, full_run, killed_in_save, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(killed_in_save, logdir)
    assert steps_logged(logdir / "voco_pretrain.metrics.csv") == [1, 2]  # step 2 was logged after the step-1 checkpoint
    train.main(pretrain_argv(btcv, logdir, 2, "--resume", str(logdir / "model_current_epoch.pt")))
    a = torch.load(full_run / "final_model.pth", weights_only=True)
    b = torch.load(logdir / "final_model.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert steps_logged(logdir / "voco_pretrain.metrics.csv") == [1, 2]  # step 2 once


def test_kill_during_save_keeps_the_previous_checkpoint(killed_in_save):
    assert list(killed_in_save.glob(".model_current_epoch.pt.*.tmp"))  # the half-written one, never renamed
    assert load_checkpoint(killed_in_save / "model_current_epoch.pt")["global_step"] == 1


# ------------------------------------------------------------------------------------ bad inputs

@pytest.fixture(scope="module")
def bad_pretraining(btcv, tmp_path_factory):
    """One pre-training step of batch 1 on a list of one truncated, one NaN and one good volume, listed so that
    the step's first drawn index is the truncated one: the loader skips it, then the NaN one, and trains on the
    good one (a batch of 3 would cost three volumes' steps for the same two skips)."""
    root = tmp_path_factory.mktemp("voco_bad")
    good, _ = sample_case(btcv)
    truncated = truncated_copy(good, root / "truncated.nii.gz")
    volume = nib.load(str(good)).get_fdata().astype(np.float32)
    volume[10, 10, 10] = np.nan
    nan = nifti(root / "nan.nii.gz", volume)
    first = pass_indices(3, train.get_parser().get_default("seed"), 0)[0]  # the index the one step draws
    order = [None] * 3
    for offset, path in enumerate((truncated, nan, good)):  # a bad item is replaced by the next one listed
        order[(first + offset) % 3] = {"image": str(path)}
    listing = write_list(root / "list.json", order)
    argv = pretrain_argv(btcv, root / "run", 1, json_list=listing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stdout(io.StringIO()) as out:
            train.main(argv)
    return out.getvalue(), "\n".join(str(w.message) for w in caught), truncated, nan


def test_corrupt_file_truncated_volume_skipped_named_and_counted(bad_pretraining):
    out, warned, truncated, _ = bad_pretraining
    assert f"skipping unreadable volume: {truncated}" in warned
    assert "skipped 2 unreadable volume(s)" in out and str(truncated) in out


def test_nonfinite_input_nan_voxels_refused_not_cast_to_zero(bad_pretraining, tmp_path):
    _, warned, _, nan = bad_pretraining
    assert f"{nan}: 1 NaN or infinite voxels in the volume (refused rather than cast to 0)" in warned
    crops = VoCoCrops(roi_small=16, base_roi=16, num_crops=2, sw_batch_size=1)
    items = [{"image": str(nan)}]
    ds = VoCoDataset(items, base_dataset(items, pretrain_transforms(size=crops.volume_size)), crops, skip_bad=False)
    with pytest.raises(ValueError, match="NaN or infinite voxels"):
        ds[0]


def test_corrupt_file_validation_never_substitutes_a_case_and_eval_only_writes_results(btcv, tmp_path):
    (img_a, lab_a), (img_b, lab_b) = sample_case(btcv, 6), sample_case(btcv, 7)
    bad_image = truncated_copy(img_a, tmp_path / "imagesTr" / "bad_image.nii.gz")
    bad_label = truncated_copy(lab_b, tmp_path / "labelsTr" / "bad_label.nii.gz")
    listing = write_list(tmp_path / "list.json", [{"image": str(img_a), "label": str(lab_a)}],
                         [{"image": str(bad_image), "label": str(lab_a)},
                          {"image": str(img_b), "label": str(bad_label)},
                          {"image": str(img_b), "label": str(lab_b)}])
    out = tmp_path / "eval"
    result = finetune.main(["--data_dir", str(tmp_path), "--json_list", str(listing), "--logdir", str(out),
                            "--eval_only", "True", "--cache_dir", str(tmp_path / "cache"), *FT_TINY])
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["per_case"]) == 1 and saved["cases"] == [str(img_b)]  # the good case, once
    assert [s.split(":")[0] for s in saved["skipped"]] == [str(bad_image), str(bad_label)]  # label under its name
    assert result["skipped"] == saved["skipped"] and "skipped 2 unreadable" in (out / "results.md").read_text()


def test_missing_file_listed_files_are_named(btcv, tmp_path):
    image, label = sample_case(btcv)
    listing = write_list(tmp_path / "list.json", [{"image": str(image), "label": str(tmp_path / "gone.nii.gz")}],
                         [{"image": str(image), "label": str(label)}])
    with pytest.raises(FileNotFoundError, match=r"list.json: 1 listed file\(s\) do not exist:\n  .*gone.nii.gz"):
        finetune.main(["--data_dir", str(tmp_path), "--json_list", str(listing), "--logdir", str(tmp_path / "o"),
                       "--cache_dir", str(tmp_path / "cache"), *FT_TINY])


def test_empty_data_lists_are_named(btcv, tmp_path):
    listing = write_list(tmp_path / "empty.json", [])
    with pytest.raises(ValueError, match="empty.json: the 'training' list is empty"):
        train.main(pretrain_argv(btcv, tmp_path / "o", 1, json_list=listing))


def _pair_dataset(image, label, train_mode=False, skip_bad=False):
    args = finetune.get_parser().parse_args(["--roi_x", "64", "--roi_y", "32", "--roi_z", "32", "--space_x", "4",
                                             "--space_y", "4", "--space_z", "5", "--sw_batch_size", "1"])
    items = [{"image": str(image), "label": str(label)}]
    return SafeDataset(base_dataset(items, btcv_transforms(args, train_mode)), items, skip_bad=skip_bad,
                       substitute=train_mode)


def test_wrong_label_shape_and_transposed_labels_are_refused_naming_the_label(tmp_path):
    image = nifti(tmp_path / "img.nii.gz", np.full((40, 36, 20), 100, np.int16))
    small = nifti(tmp_path / "small_label.nii.gz", np.zeros((20, 18, 10), np.uint8))
    transposed = nifti(tmp_path / "transposed_label.nii.gz", np.zeros((36, 40, 20), np.uint8))
    flipped = nifti(tmp_path / "affine_label.nii.gz", np.zeros((40, 36, 20), np.uint8), np.diag([-1, 1, 1, 1]))
    for label, words in ((small, r"label map of shape \(20, 18, 10\) does not match"),
                         (transposed, r"shape \(36, 40, 20\) \(transposed\?\)"), (flipped, "affine differs")):
        with pytest.raises(ValueError, match=words) as err:
            _pair_dataset(image, label, train_mode=True)[0]
        assert str(err.value).startswith(str(label))
    with pytest.warns(UserWarning, match="transposed_label"):
        assert _pair_dataset(image, transposed, skip_bad=True)[0]["skipped"] == str(image)  # validation: reported


def test_nonfinite_input_in_a_fine_tuning_image_is_refused(tmp_path):
    volume = np.full((40, 36, 20), 100.0, np.float32)
    volume[3, 3, 3] = np.inf
    image = nifti(tmp_path / "inf.nii.gz", volume)
    label = nifti(tmp_path / "label.nii.gz", np.zeros((40, 36, 20), np.uint8))
    with pytest.raises(ValueError, match=f"{image}: 1 NaN or infinite voxels"):
        _pair_dataset(image, label)[0]


def test_wrong_ndim_two_d_images_and_labels_are_named(tmp_path):
    flat = nifti(tmp_path / "flat.nii.gz", np.zeros((40, 36), np.int16))
    with pytest.raises(ValueError, match="expected a 3-D") as err:
        _pair_dataset(nifti(tmp_path / "img.nii.gz", np.zeros((40, 36, 20), np.int16)), flat)[0]
    assert "flat.nii.gz" in str(err.value)
    crops = VoCoCrops(roi_small=16, base_roi=16, num_crops=2, sw_batch_size=1)
    items = [{"image": str(flat)}]
    with pytest.raises(ValueError, match="flat.nii.gz: expected a 3-D volume"):
        VoCoDataset(items, base_dataset(items, pretrain_transforms(size=crops.volume_size)), crops, skip_bad=False)[0]


def test_wrong_ndim_roi_too_small_for_swinunetr_is_explained(btcv, tmp_path, capsys):
    argv = pretrain_argv(btcv, tmp_path, 1)
    argv[argv.index("--roi_x") + 1] = "32"
    with pytest.raises(SystemExit):
        train.main(argv)
    assert "--roi_x 32: SwinUNETR needs crops of at least 64 voxels per side and a multiple of 32" in \
        capsys.readouterr().err


def test_wrong_ndim_roi_rule_counts_the_doubled_input():
    import argparse

    from voco.utils import check_roi

    parser = argparse.ArgumentParser()
    check_roi(parser, "--roi_x", 32, double_input=True)  # the network sees 64 x 32 x 32: accepted (the demo's size)
    for roi, double in ((32, False), (48, True), (16, True)):
        with pytest.raises(SystemExit):
            check_roi(parser, "--roi_x", roi, double_input=double)


# ------------------------------------------------------------------------------------ run folder

def test_run_folder_clash_another_configuration_is_refused(btcv, full_run):
    before = {f: (full_run / f"voco_pretrain.{f}").read_bytes() for f in ("metrics.csv", "config.json", "run.json")}
    argv = pretrain_argv(btcv, full_run, 2, "--resume", str(full_run / "model_current_epoch.pt"))
    argv[argv.index("--hidden_dim") + 1] = "64"
    with pytest.raises(RunFolderClash, match="hidden_dim: 32 there, 64 now"):
        train.main(argv)
    with pytest.raises(RunFolderClash, match="voco_pretrain.run.json holds a run of 'voco'.*lr: 0.001 there, 0.01 now"):
        train.main(pretrain_argv(btcv, full_run, 2, "--lr", "1e-2"))
    assert {f: (full_run / f"voco_pretrain.{f}").read_bytes() for f in before} == before


# ----------------------------------------------------------------------------------- training

def test_nonfinite_loss_stops_naming_the_step(btcv, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_MED_FAULT_NAN_STEP", "1")
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 1"):
        train.main(pretrain_argv(btcv, tmp_path, 2))
    assert not list(tmp_path.glob("*.pt*"))  # nothing saved from NaN weights


def test_wrong_checkpoint_to_resume_pretrained_and_checkpoint_is_named(btcv, full_run, tmp_path):
    ckpt = full_run / "model_current_epoch.pt"
    argv = pretrain_argv(btcv, tmp_path / "wide", 2, "--resume", str(ckpt))
    argv[argv.index("--feature_size") + 1] = "24"
    with pytest.raises(RunFolderClash, match=f"{ckpt}: .*feature_size: 12 there, 24 now"):
        train.main(argv)
    unrecorded = tmp_path / "unrecorded.pt"
    torch.save({k: v for k, v in torch.load(ckpt, weights_only=True).items() if k != "run"}, unrecorded)
    argv[argv.index("--resume") + 1] = str(unrecorded)
    with pytest.raises(CheckpointError, match=f"{unrecorded}: its weights do not fit"):
        train.main(argv)
    image, label = sample_case(btcv)
    listing = write_list(tmp_path / "list.json", [{"image": str(image), "label": str(label)}],
                         [{"image": str(image), "label": str(label)}])
    ft = ["--data_dir", str(btcv), "--json_list", str(listing), "--logdir", str(tmp_path / "ft"), "--cache_dir",
          str(tmp_path / "cache"), *FT_TINY]
    ft[ft.index("--feature_size") + 1] = "24"
    with pytest.raises(WeightLoadError, match=f"{ckpt}: .*tensors matched"):
        finetune.main([*ft, "--use_ssl_pretrained", "True", "--pretrained_checkpoint", str(ckpt)])
    with pytest.raises(CheckpointError, match=f"{unrecorded}: its weights do not fit"):
        finetune.main([*ft, "--checkpoint", str(unrecorded), "--eval_only", "True"])
