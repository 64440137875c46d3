"""`make demo-voco`: a short VoCo pre-training on the sample CT, then BTCV-style fine-tuning from those
weights and from random initialisation (tiny feature_size on CPU); writes runs/demo/voco/row.json."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import shutil
import time

import numpy as np
import torch

from shared.demo import write_row
from voco import finetune, train


def sample_btcv(sample_root):
    root = Path(sample_root) / "btcv"
    if not (root / "dataset_0.json").is_file():
        try:
            from shared.sample_data import generate
            generate(Path(sample_root), seed=0, only=["btcv"])
        except ImportError:
            from shared.sample_data.ct import write_btcv
            write_btcv(root, np.random.default_rng(0))
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", default="data/sample", help="sample-data root (btcv/ is generated if absent)")
    p.add_argument("--runs", default="runs")
    p.add_argument("--steps", default=4, type=int, help="pre-training steps")
    p.add_argument("--epochs", default=1, type=int, help="fine-tuning epochs")
    args = p.parse_args(argv)
    t0 = time.time()
    gpu = torch.cuda.is_available()
    btcv = sample_btcv(args.sample)
    out = Path(args.runs) / "demo" / "voco"
    for old in ("pretrain", "finetune_pretrained", "finetune_random"):  # keep only the caches
        shutil.rmtree(out / old, ignore_errors=True)
    tiny = ["--feature_size", "12" if not gpu else "24", "--window_size", "2" if not gpu else "7",
            "--use_checkpoint", "False"]
    train.main(["--logdir", str(out / "pretrain"), "--json_list", str(btcv / "btcv.json"),
                "--batch_size", "1", "--sw_batch_size", "1", "--base_roi", "32", "--num_crops", "2",
                "--roi_x", "64", "--hidden_dim", "64", "--out_dim", "64", "--num_steps", str(args.steps),
                "--warmup_steps", "0", "--lr", "5e-4", "--eval_num", str(args.steps), "--save_every", "0",
                "--workers", "0", "--cache_dir", str(out / "cache_pretrain"), *tiny])
    rows = list(csv.DictReader(open(out / "pretrain" / "metrics.csv")))
    ft = ["--data_dir", str(btcv), "--json_list", "dataset_0.json", "--cache_dir", str(out / "cache_ft"),
          "--roi_x", "64", "--roi_y", "64", "--roi_z", "64", "--space_x", "4", "--space_y", "4",
          "--space_z", "5", "--sw_batch_size", "1", "--max_epochs", str(args.epochs),
          "--val_every", str(args.epochs), "--warmup_epochs", "0", "--workers", "0",
          "--infer_overlap", "0.25", "--save_checkpoint", "False", *tiny]
    pre = finetune.main(ft + ["--logdir", str(out / "finetune_pretrained"),
                              "--pretrained_checkpoint", str(out / "pretrain" / "model_final_epoch.pt")])
    rnd = finetune.main(ft + ["--logdir", str(out / "finetune_random"), "--use_ssl_pretrained", "False"])
    path = write_row("voco", runs=args.runs, data="sample btcv CT (6 train / 2 val)", steps=len(rows),
                     final_loss=float(rows[-1]["loss"]), metric="BTCV mean Dice (val)",
                     pretrained=pre["mean_dice"], random=rnd["mean_dice"],
                     wall_time_s=round(time.time() - t0, 1),
                     loss_csv=(out / "pretrain" / "metrics.csv").as_posix())
    print(f"wrote {path}: pretrained Dice {pre['mean_dice']:.4f}, random {rnd['mean_dice']:.4f}, "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
