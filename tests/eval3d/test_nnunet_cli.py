"""The commands of eval3d/nnunet/README.md, as a user runs them, on the sample BTCV data with SwinUNETR from
a checkpoint in our VoCo layout: dataset conversion, nnUNetv2_plan_and_preprocess, our configuration,
weights conversion, nnUNetv2_preprocess, nnUNetv2_train -pretrained_weights -tr, nnUNetv2_predict.

Marked slow (13 min wall, 4.5 min CPU on 2 shared cores: each command starts Python and nnU-Net anew, and
nnUNetv2_train's final validation slides SwinUNETR with mirroring);
test_nnunet_pipeline.py runs the same steps in process in the default suite. The dataset conversion,
which needs no nnU-Net run, is tested here in the default suite too."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pytest
import torch

from eval3d.nnunet.dataset import convert_dataset
from eval3d.nnunet.networks import VoCoSwinUNETR

pytest.importorskip("nnunetv2")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FEATURE_SIZE, WINDOW = 12, 2


def test_btcv_json_becomes_an_nnunet_raw_dataset(sample_data, tmp_path):
    folder = convert_dataset(sample_data / "btcv" / "dataset_0.json", tmp_path, 501, "BTCV")
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"]["background"] == 0 and dataset["labels"]["lad"] == 13 and dataset["numTraining"] == 8
    assert sorted(p.name for p in (folder / "imagesTr").iterdir())[0] == "img0001_0000.nii.gz"
    assert (folder / "labelsTr" / "img0035.nii.gz").is_file()
    assert json.loads((folder / "splits_final.json").read_text())[0]["val"] == ["img0035", "img0036"]


def run(command, env):
    start = time.perf_counter()
    done = subprocess.run([str(c) for c in command], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    print(f"{Path(str(command[0])).name} {command[2] if command[1] == '-m' else ''}: "
          f"{time.perf_counter() - start:.0f} s")  # where the minutes go (pytest -s)
    return done.stdout


@pytest.mark.slow
def test_readme_commands_fine_tune_swinunetr_from_our_voco_checkpoint(sample_data, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), nnUNet_raw=str(tmp_path / "raw"),
               nnUNet_preprocessed=str(tmp_path / "preprocessed"), nnUNet_results=str(tmp_path / "results"),
               nnUNet_extTrainer=str(ROOT / "eval3d" / "nnunet" / "trainers"), nnUNet_compile="f",
               nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1", OMP_NUM_THREADS="1")
    py = [sys.executable, "-m"]
    run(py + ["eval3d.nnunet.dataset", "--json", sample_data / "btcv" / "dataset_0.json", "--out",
              tmp_path / "raw", "--id", "501", "--name", "BTCV"], env)
    run([BIN / "nnUNetv2_plan_and_preprocess", "-d", "501", "--verify_dataset_integrity", "--no_pp",
         "-npfp", "1"], env)
    plans = tmp_path / "preprocessed" / "Dataset501_BTCV" / "nnUNetPlans.json"
    run(py + ["eval3d.nnunet.plans", "--plans", plans, "--arch", "voco", "--patch_size", "32", "64", "64",
              "--batch_size", "1", "--feature_size", FEATURE_SIZE, "--window_size", WINDOW], env)

    encoder = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in
               VoCoSwinUNETR(1, 14, False, feature_size=FEATURE_SIZE, window_size=WINDOW).state_dict().items()
               if k.startswith(("swinViT.", "encoder"))}
    torch.save({"global_step": 1, "state_dict": {**{f"student.{k}": v * 2 for k, v in encoder.items()},
                                                 **{f"teacher.{k}": v for k, v in encoder.items()}}},
               tmp_path / "voco.pt")
    report = run(py + ["eval3d.nnunet.convert", "--plans", plans, "--configuration", "3d_voco", "--checkpoint",
                       tmp_path / "voco.pt", "--out", tmp_path / "init.pt"], env)
    assert "loaded 145/167 tensors" in report

    run([BIN / "nnUNetv2_preprocess", "-d", "501", "-c", "3d_voco", "-np", "1"], env)
    run([BIN / "nnUNetv2_train", "501", "3d_voco", "0", "-tr", "nnUNetTrainerOurs_tiny", "-device", "cpu",
         "-pretrained_weights", tmp_path / "init.pt"], dict(env, nnUNet_n_proc_DA="0"))
    model = tmp_path / "results" / "Dataset501_BTCV" / "nnUNetTrainerOurs_tiny__nnUNetPlans__3d_voco"
    trained = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    first = "swinViT.patch_embed.proj.weight"
    fresh = VoCoSwinUNETR(1, 14, False, feature_size=FEATURE_SIZE, window_size=WINDOW).state_dict()[first]
    moved = (trained["network_weights"][first] - encoder[first]).abs().mean()
    assert 0 < moved < 0.1 * (trained["network_weights"][first] - fresh).abs().mean()  # trained from ours

    images = tmp_path / "to_predict"  # two cases: sliding windows of SwinUNETR on a CPU take minutes
    images.mkdir()
    for case in ("img0035", "img0036"):
        shutil.copy(tmp_path / "raw" / "Dataset501_BTCV" / "imagesTr" / f"{case}_0000.nii.gz", images)
    run([BIN / "nnUNetv2_predict", "-i", images, "-o",
         tmp_path / "predicted", "-d", "501", "-c", "3d_voco", "-tr", "nnUNetTrainerOurs_tiny", "-f", "0",
         "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta"], env)
    predicted = sorted((tmp_path / "predicted").glob("*.nii.gz"))
    assert [p.name for p in predicted] == ["img0035.nii.gz", "img0036.nii.gz"]
    assert nib.load(predicted[0]).shape == nib.load(sample_data / "btcv" / "imagesTr" / "img0035.nii.gz").shape
