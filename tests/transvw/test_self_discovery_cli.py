"""TransVW's self-discovery entry points: its own defaults, the skip-less autoencoder, `python -m` runs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from shared.genesis.self_discovery.cli import feature_extractor_main, prepare_main, train_autoencoder_main

ROOT = Path(__file__).resolve().parents[2]


def tiny_luna(root, n=8, shape=(48, 48, 24)):
    """LUNA16-style subset folders of int16 HU scans: air-filled 'lungs' with dense speckles."""
    rng = np.random.default_rng(1)
    for i in range(n):
        hu = np.where(rng.uniform(size=shape) > 0.9, 60, -850).astype(np.int16)
        folder = root / f"subset{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(hu.transpose(2, 1, 0).copy()), str(folder / f"1.3.{i}.mhd"))
    return root


def test_transvw_chain_with_vnet_and_module_entry_point(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare_main(["--input_dir", str(tiny_luna(tmp_path / "luna")), "--val_subsets", "1",
                  "--min_shape", "16", "16", "8"])
    assert len(list(Path("dataset/validation").glob("*.npy"))) == 4  # subset1 -> validation
    common = ["--data_dir", "dataset", "--arch", "Vnet", "--input_rows", "16", "--input_cols", "16",
              "--batch_size", "2", "--width", "2", "--verbose", "0", "--workers", "0"]
    best = train_autoencoder_main([*common, "--input_deps", "8", "--nb_epoch", "1"])
    assert best.name == "Vnet_autoencoder.pt"
    with pytest.raises(ValueError, match="trained with --arch Vnet"):
        feature_extractor_main([*common[:2], "--arch", "Unet", "--weights", str(best)])
    # --arch left out: taken from the checkpoint
    feature_extractor_main([*common[:2], *common[4:], "--input_depth", "8", "--weights", str(best)])
    assert np.load("train_features.npy").shape == (4, 32)
    args = ["--data_dir", "dataset", "--input_rows", "16", "--input_cols", "16", "--input_deps", "8",
            "--crop_rows", "16", "--crop_cols", "16", "--nb_instances", "3", "--nb_instances_val", "2",
            "--nb_classes", "2", "--len_border", "4", "--len_border_z", "2", "--verbose", "0", "--no_png"]
    out = subprocess.run([sys.executable, "-m", "transvw.pattern_generator_3D", *args], cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": ""},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    save = tmp_path / "TransVW_data"  # TransVW's default --save
    assert np.load(save / "train_data1_vwGen_ex_ref_fold1.0.npy").shape == (6, 16, 16, 8)
    np.testing.assert_array_equal(np.load(save / "val_label1_vwGen_ex_ref_fold1.0.npy")[:, 0], [0, 0, 1, 1])
    # without --multi_res only resolution 1 is written (the original wrote blank data2/data3)
    assert not (save / "train_data2_vwGen_ex_ref_fold1.0.npy").exists()


def test_transvw_script_help_shows_its_defaults():
    out = subprocess.run([sys.executable, "transvw/train_autoencoder.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--input_deps" in out.stdout and "Checkpoints/Autoencoder" in out.stdout
