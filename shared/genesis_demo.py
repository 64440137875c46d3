"""The `make demo` run of Semantic Genesis / TransVW on the sample LUNA16 CT, small enough for a CPU.

1. self-discovery (shared.self_discovery.pipeline): sample scans -> normalised volumes -> autoencoder
   -> per-patient features -> pattern classes written in the original file layout;
2. pre-training (the method's train.py) on those pattern cubes;
3. downstream nodule-presence classification (the method's finetune_classification.py) from the
   pre-trained weights and from random init, same seed and data; metric: test AUC.
Writes runs/demo/<method>/row.json through shared.demo.write_row.
"""

import argparse
import csv
import time
from pathlib import Path

CUBE = (32, 32, 16)


def build_parser(method):
    p = argparse.ArgumentParser(description=f"{method} demo on the sample LUNA16 CT (CPU, < 150 s)")
    p.add_argument("--sample", default="data/sample", help="sample-data root (generated if missing)")
    p.add_argument("--runs", default="runs")
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--classes", type=int, default=4, help="self-discovered pattern classes")
    p.add_argument("--pretrain_epochs", type=int, default=5)
    p.add_argument("--finetune_epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    return p


def _last_val_loss(csv_path):
    with open(csv_path, newline="") as f:
        values = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
    return values[-1] if values else None


def run_demo(method, exp_name, pretrain_main, finetune_main, argv=None):
    from shared.demo import write_row
    from shared.sample_data import generate
    from shared.self_discovery.pipeline import run_self_discovery

    args = build_parser(method).parse_args(argv)
    start = time.time()
    luna = Path(args.sample) / "luna16"
    if not luna.is_dir():
        generate(args.sample, seed=0, only=["luna16"])
    out = Path(args.runs) / "demo" / method
    found = run_self_discovery(luna, out / "self_discovery", nb_classes=args.classes, nb_instances=6,
                               nb_instances_val=2, cube=CUBE, seed=args.seed)
    print(f"self-discovery: {len(found['files'])} pattern files in {found['save']} ({time.time() - start:.0f}s)")

    summary = pretrain_main([
        "--data_dir", str(found["save"]), "--output_dir", str(out / "pretrain"), "--cls_classes", str(args.classes),
        "--nb_instances", "6", "--nb_val_instances", "2", "--batch_size", "8", "--num_workers", "0",
        "--width", str(args.width), "--nb_epoch", str(args.pretrain_epochs), "--lr", "0.003",
        "--seed", str(args.seed), "--n_images", "2"])
    weights = out / "pretrain" / "en_de" / f"{exp_name}.pt"
    loss_csv = out / "pretrain" / "en_de" / "metrics.csv"
    print(f"pre-training: {summary['steps']} steps, best val loss {summary['best_loss']:.4f} "
          f"({time.time() - start:.0f}s)")

    scores = {}
    for name, extra in (("pretrained", ["--weights", str(weights)]), ("random", [])):
        result = finetune_main([
            "--luna16", str(luna), "--input_rows", str(CUBE[0]), "--input_cols", str(CUBE[1]),
            "--input_deps", str(CUBE[2]), "--width", str(args.width), "--nb_epoch", str(args.finetune_epochs),
            "--batch_size", "8", "--optimizer", "adam", "--lr", "0.001", "--patience", "100",
            "--neg_per_pos", "3", "--seed", str(args.seed), "--output_dir", str(out / f"finetune_{name}"), *extra])
        scores[name] = result["test_metric"]
    wall = time.time() - start
    path = write_row(method, runs=args.runs, data="sample LUNA16 (16 scans), nodule presence",
                     steps=summary["steps"], final_loss=_last_val_loss(loss_csv), metric="test AUC",
                     pretrained=scores["pretrained"], random=scores["random"], wall_time_s=round(wall, 1),
                     loss_csv=str(loss_csv))
    print(f"{method} demo: AUC pretrained {scores['pretrained']:.3f} vs random {scores['random']:.3f}; "
          f"{wall:.0f}s -> {path}")
    return path
