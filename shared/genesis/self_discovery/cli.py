"""Command lines of the self-discovery scripts, with the originals' flag names and defaults.

Each method folder calls these with its own defaults (e.g. the pattern generator's --save folder), so
`semantic_genesis/pattern_generator_3D.py` and `transvw/pattern_generator_3D.py` stay two-line scripts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shared.genesis.self_discovery.patterns import PatternConfig

HELP = argparse.ArgumentDefaultsHelpFormatter


def _on(flag_help):
    return {"action": "store_true", "help": flag_help}


def prepare_main(argv=None, prog=None):
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=HELP,
        description="LUNA16 subset*/*.mhd or a folder of NIfTI volumes -> <output_dir>/{train,validation}/<id>.npy, "
                    "(x, y, z) float32 in [0, 1].")
    p.add_argument("--input_dir", required=True, help="LUNA16 root (subset*/), a folder with imagesTr/, "
                   "or a folder of .mhd/.nii/.nii.gz volumes")
    p.add_argument("--output_dir", default="dataset", help="written: train/, validation/, volumes.csv")
    p.add_argument("--val_fraction", type=float, default=0.1, help="share of patients in validation")
    p.add_argument("--val_subsets", type=int, nargs="*", default=None,
                   help="LUNA16 subsets for validation instead of a random share (e.g. 5 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    p.add_argument("--pattern", default=None, help="glob under --input_dir overriding the search")
    p.add_argument("--min_shape", type=int, nargs=3, default=(64, 64, 32),
                   help="skip (with a warning) volumes smaller than this (x y z): they cannot hold a cube")
    p.add_argument("--limit", type=int, default=None, help="only the first N volumes (quick tries)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="of the written volumes; float16 halves the disk (LUNA16 is roughly 200 GB as float32)")
    args = p.parse_args(argv)
    from shared.genesis.ct_volumes import prepare_dataset

    csv_path = prepare_dataset(args.input_dir, args.output_dir, args.val_fraction, args.seed, args.val_subsets,
                               args.pattern, args.min_shape, args.limit, dtype=args.dtype)
    print(f"wrote {args.output_dir}/train, {args.output_dir}/validation and {csv_path}")
    return csv_path


def _autoencoder_args(p, depth_flag, from_checkpoint=False):
    # the feature extractor takes arch and width from the checkpoint unless they are given
    p.add_argument("--arch", default=None if from_checkpoint else "Unet", choices=["Unet", "Vnet"],
                   help="Unet (skips; the default since 2021) or Vnet (skip-less, the default before)"
                   + ("; default: the checkpoint's" if from_checkpoint else ""))
    p.add_argument("--input_rows", type=int, default=128)
    p.add_argument("--input_cols", type=int, default=128)
    p.add_argument(depth_flag, dest="input_deps", type=int, default=64)
    p.add_argument("--verbose", type=int, default=1, help="0: no progress bars")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--data_dir", required=True, help="folder with train/ and validation/ .npy volumes")
    p.add_argument("--width", type=int, default=None if from_checkpoint else 32,
                   help="filters of the first convolution (32)" + ("; default: the checkpoint's" if from_checkpoint
                                                                    else ""))
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--workers", type=int, default=4, help="processes reading and resizing volumes (0: none)")


def train_autoencoder_main(argv=None, prog=None):
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=HELP, description="Self-discovery step 1: whole-volume 3D autoencoder.")
    _autoencoder_args(p, "--input_deps")
    p.add_argument("--decoder", default="upsampling", choices=["upsampling"],
                   help="accepted for compatibility; the original ignored it too")
    p.add_argument("--weights", default=None, help="initial weights (a checkpoint of this script)")
    p.add_argument("--model_path", default="Checkpoints/Autoencoder", help="where checkpoints and logs go")
    p.add_argument("--nb_epoch", type=int, default=10000)
    p.add_argument("--patience", type=int, default=50, help="early stopping on val_loss")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--resume", **_on("continue from <model_path>/<arch>_autoencoder_last.pt"))
    args = p.parse_args(argv)
    from shared.genesis.self_discovery.engine import train_autoencoder

    best = train_autoencoder(args.data_dir, args.model_path, args.arch, args.width,
                             (args.input_rows, args.input_cols, args.input_deps), args.batch_size, args.nb_epoch,
                             args.patience, args.lr, args.weights, args.resume, args.seed, args.device,
                             progress=args.verbose > 0, workers=args.workers)
    print(f"best autoencoder: {best}")
    return best


def feature_extractor_main(argv=None, prog=None):
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=HELP, description="Self-discovery step 2: one 512-d feature per patient.")
    _autoencoder_args(p, "--input_depth", from_checkpoint=True)  # the original's name here (not --input_deps)
    p.add_argument("--weights", required=True, help="checkpoint written by train_autoencoder.py")
    p.add_argument("--save_dir", default=".", help="where train_features.npy / validation_features.npy go")
    args = p.parse_args(argv)
    import torch

    from shared.genesis.self_discovery.engine import extract_features, list_volumes, load_autoencoder, save_features

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_autoencoder(args.weights, args.arch, args.width, device)
    shape = (args.input_rows, args.input_cols, args.input_deps)
    out = []
    for split, name in (("train", "train_features"), ("validation", "validation_features")):
        feats, kept = extract_features(model, list_volumes(Path(args.data_dir) / split), shape, args.batch_size,
                                       device, args.verbose > 0, split, args.workers)
        out.append(save_features(feats, kept, Path(args.save_dir) / f"{name}.npy")[0])
        print(f"{split} features {feats.shape} -> {out[-1]}")
    return out


def pattern_generator_main(argv=None, prog=None, default_save="./Semantic_Genesis_data"):
    d = PatternConfig()
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=HELP,
        description="Self-discovery step 3: anatomical-pattern classes (reference + K nearest patients, one "
                    "coordinate, multi-resolution crops).")
    for name in ("input_rows", "input_cols", "input_deps", "crop_rows", "crop_cols"):
        p.add_argument(f"--{name}", type=int, default=getattr(d, name))
    p.add_argument("--data_dir", required=True, help="folder with train/ and validation/ .npy volumes")
    p.add_argument("--save", default=default_save, help="output folder")
    p.add_argument("--is_normalized", **_on("volumes are in [0, 1] (default: detected per volume)"))
    p.add_argument("--nb_instances", type=int, default=d.nb_instances, help="K nearest training patients")
    p.add_argument("--nb_instances_val", type=int, default=d.nb_instances_val)
    p.add_argument("--nb_classes", type=int, default=d.nb_classes)
    p.add_argument("--minPatchSize", type=int, default=d.minPatchSize)
    p.add_argument("--maxPatchSize", type=int, default=d.maxPatchSize, help="exclusive")
    p.add_argument("--multi_res", **_on("also write the resolution-2 and -3 crops"))
    p.add_argument("--distance_threshold", type=float, default=d.distance_threshold)
    p.add_argument("--prev_coordinates", default=None,
                   help="patterns.csv or train_data1_vwGen_exRef.txt of an earlier run: re-use its classes")
    p.add_argument("--train_features", default="train_features.npy")
    p.add_argument("--val_features", default="validation_features.npy")
    # hard-coded in the original, flags here
    for name, kind in (("len_border", int), ("len_border_z", int), ("len_depth", int), ("lung_max", float),
                       ("max_trials", int), ("seed", int), ("dtype", str)):
        p.add_argument(f"--{name}", type=kind, default=getattr(d, name))
    p.add_argument("--no_png", dest="png", action="store_false", help="skip patterns.png")
    p.add_argument("--verbose", type=int, default=1)
    g = p.add_argument_group("original behaviour, off by default")
    g.add_argument("--drop_last_sample", **_on("drop the last row of each 50-class block, never save a "
                                               "trailing partial block"))
    g.add_argument("--sticky_rejection", **_on("never reset the near-duplicate flag during a corner search"))
    g.add_argument("--raw_crops", **_on("save crops with the volumes' own intensities (raw HU stays HU)"))
    g.add_argument("--write_blank_resolutions", **_on("without --multi_res, still write all-zero data2/data3"))
    args = p.parse_args(argv)
    import numpy as np

    from shared.genesis.self_discovery.engine import feature_files
    from shared.genesis.self_discovery.patterns import generate_patterns

    fields = {k: v for k, v in vars(args).items() if k in PatternConfig.__dataclass_fields__}
    cfg = PatternConfig(**fields)
    data_dir = Path(args.data_dir)
    train_paths = feature_files(args.train_features, data_dir / "train")
    val_paths = feature_files(args.val_features, data_dir / "validation")
    start = time.time()
    written, meta = generate_patterns(train_paths, val_paths, np.load(args.train_features),
                                      np.load(args.val_features), args.save, cfg, args.prev_coordinates,
                                      progress=args.verbose > 0)
    print(f"{len(written)} files and {meta} written to {args.save} in {time.time() - start:.1f} s")
    return written
