"""The whole self-discovery chain on one folder, with small settings: for demos and tests.

prepare (LUNA16/NIfTI -> .npy in [0, 1], patient split) -> autoencoder -> features -> patterns.
The defaults fit the sample data (16 LUNA16-like scans of 128 x 128 x 64 voxels) on a CPU in seconds;
the real run uses the four scripts with the originals' defaults.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from shared.genesis.ct_volumes import prepare_dataset
from shared.genesis.self_discovery.engine import (
    extract_features,
    list_volumes,
    load_autoencoder,
    save_features,
    train_autoencoder,
)
from shared.genesis.self_discovery.patterns import PatternConfig, generate_patterns


def run_self_discovery(input_dir, work_dir, *, arch="Unet", width=4, ae_shape=(32, 32, 16), ae_epochs=2,
                       batch_size=2, cube=(32, 32, 16), nb_classes=4, nb_instances=6, nb_instances_val=2,
                       multi_res=True, len_border=8, len_border_z=4, lung_max=0.5, val_fraction=0.25, seed=0,
                       device=None, progress=False, save_name="patterns", **pattern_overrides):
    """Run the four steps into `work_dir`; returns a dict of what was written and the seconds taken.

    input_dir: a LUNA16 root (subset*/*.mhd), a folder with imagesTr/, or a folder of volumes.
    cube: (rows, cols, deps) of the pattern crops, each divisible by 8 for the 3D U-Net.
    multi-resolution window sizes scale with the cube as in the original (50..80 for 64).
    lung_max=0.5 (the original: 0.15) lets classes cover the chest wall and mediastinum as well as lung
    interior, which makes the few demo classes distinct. Extra keyword arguments override PatternConfig fields.
    """
    start = time.time()
    work = Path(work_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = work / "dataset"
    prepare_dataset(input_dir, dataset, val_fraction=val_fraction, seed=seed, min_shape=cube, progress=progress)
    shutil.rmtree(work / "autoencoder", ignore_errors=True)  # redone every time, like the dataset and features
    best = train_autoencoder(dataset, work / "autoencoder", arch, width, ae_shape, batch_size, nb_epoch=ae_epochs,
                             seed=seed, device=device, progress=progress, tensorboard=False)
    model = load_autoencoder(best, device=device)
    features = {}
    for split, name in (("train", "train_features"), ("validation", "validation_features")):
        feats, kept = extract_features(model, list_volumes(dataset / split), ae_shape, batch_size, device, progress)
        save_features(feats, kept, work / f"{name}.npy")
        features[split] = (feats, kept)
    rows, cols, deps = cube
    cfg = PatternConfig(input_rows=rows, input_cols=cols, input_deps=deps, crop_rows=rows, crop_cols=cols,
                        nb_classes=nb_classes, nb_instances=nb_instances, nb_instances_val=nb_instances_val,
                        minPatchSize=round(rows * 50 / 64), maxPatchSize=round(rows * 80 / 64),
                        multi_res=multi_res, len_border=len_border, len_border_z=len_border_z, lung_max=lung_max,
                        seed=seed, **pattern_overrides)
    save = work / save_name
    written, meta = generate_patterns(features["train"][1], features["validation"][1], features["train"][0],
                                      features["validation"][0], save, cfg, progress=progress)
    return {"dataset": dataset, "autoencoder": best, "train_features": work / "train_features.npy",
            "validation_features": work / "validation_features.npy", "save": save, "files": written,
            "metadata": meta, "png": save / "patterns.png", "seconds": time.time() - start}
