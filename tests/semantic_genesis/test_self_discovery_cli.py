"""The four self-discovery scripts of Semantic Genesis, in the README's order, on the sample LUNA16 CT."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from shared.genesis.self_discovery.cli import (
    feature_extractor_main,
    pattern_generator_main,
    prepare_main,
    train_autoencoder_main,
)

ROOT = Path(__file__).resolve().parents[2]


def test_scripts_in_order_on_sample_ct(sample_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the original writes relative to the working directory
    prepare_main(["--input_dir", str(sample_data / "luna16"), "--output_dir", "dataset", "--val_fraction", "0.25",
                  "--min_shape", "32", "32", "16"])
    n_train = len(list(Path("dataset/train").glob("*.npy")))
    n_val = len(list(Path("dataset/validation").glob("*.npy")))
    assert n_train + n_val == 16 and n_val == 4
    small = ["--input_rows", "32", "--input_cols", "32", "--batch_size", "4", "--width", "2", "--verbose", "0",
             "--workers", "0"]
    best = train_autoencoder_main(["--data_dir", "dataset", "--input_deps", "16", "--nb_epoch", "2", *small])
    assert best == Path("Checkpoints/Autoencoder/Unet_autoencoder.pt") and best.exists()
    feature_extractor_main(["--data_dir", "dataset", "--input_depth", "16", "--weights", str(best), *small])
    assert np.load("train_features.npy").shape == (n_train, 32)
    assert np.load("validation_features.npy").shape == (n_val, 32)
    pattern_generator_main(["--data_dir", "dataset", "--multi_res", "--input_rows", "32", "--input_cols", "32",
                            "--input_deps", "16", "--crop_rows", "32", "--crop_cols", "32", "--nb_instances", "5",
                            "--nb_instances_val", "3", "--nb_classes", "3", "--minPatchSize", "25",
                            "--maxPatchSize", "40", "--len_border", "8", "--len_border_z", "4",
                            "--lung_max", "0.5", "--verbose", "0"])
    save = Path("Semantic_Genesis_data")  # the original's default --save
    for res in (1, 2, 3):
        data = np.load(save / f"train_data{res}_vwGen_ex_ref_fold1.0.npy")
        labels = np.load(save / f"train_label{res}_vwGen_ex_ref_fold1.0.npy")
        assert data.shape == (15, 32, 32, 16) and 0 <= data.min() and data.max() <= 1
        np.testing.assert_array_equal(labels[:, 0], np.repeat([0, 1, 2], 5))
    assert np.load(save / "val_data1_vwGen_ex_ref_fold1.0.npy").shape == (9, 32, 32, 16)
    meta = pd.read_csv(save / "patterns.csv")
    assert len(meta) == 3 * 5 * 3 + 3 * 3 and (meta.groupby(["split", "resolution", "class"]).size() > 0).all()
    assert (save / "patterns.png").stat().st_size > 1000
    assert (save / "train_data1_vwGen_exRef.txt").read_text().count("\n") == 15


def test_script_runs_from_repo_root():
    out = subprocess.run([sys.executable, "semantic_genesis/pattern_generator_3D.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "./Semantic_Genesis_data" in out.stdout and "--drop_last_sample" in out.stdout
