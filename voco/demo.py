"""`make demo-voco`: a short VoCo pre-training on the sample CT, then BTCV-style fine-tuning from those
weights and from random initialisation (tiny feature_size on CPU); writes runs/demo/voco/row.json.

The fine-tuning is what a CPU minute allows, so it departs from the BTCV recipe in ways only a demo
should (every one is a finetune.py flag): the 4x4x5 mm sample is resampled to 8x8x10 mm and trained with
64x32x32 patches (the smallest SwinUNETR trains on: its 1/32 map must keep 2 voxels), one patch per
step, no warm-up and a 10x learning rate. The same seed gives both runs the same decoder
initialisation, patches and order; the pre-trained run loads the student branch, which started from
exactly the random-init run's encoder weights (same seed), so the two differ only by the VoCo steps.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import json
import shutil
import time

import numpy as np
import torch

from shared.demo import write_row
from voco import finetune, train

# the five largest BTCV organs (1-based label values): spleen, kidneys, liver, stomach
LARGE_ORGANS = (1, 2, 3, 6, 7)


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


def finetune_args(btcv, out, args, tiny):
    return ["--data_dir", str(btcv), "--json_list", "dataset_0.json", "--cache_dir", str(out / "cache_ft"),
            "--space_x", str(args.spacing[0]), "--space_y", str(args.spacing[1]),
            "--space_z", str(args.spacing[2]), "--roi_x", str(args.roi[0]), "--roi_y", str(args.roi[1]),
            "--roi_z", str(args.roi[2]), "--sw_batch_size", "1", "--max_epochs", str(args.epochs),
            "--val_every", str(args.epochs), "--warmup_epochs", "0", "--optim_lr", str(args.ft_lr),
            "--workers", "0", "--infer_overlap", "0.25", "--save_checkpoint", "False", "--seed", "0", *tiny]


def large_mean(result):
    dice = [result["organ_dice"][c - 1] for c in LARGE_ORGANS]
    return float(np.nanmean(dice))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", default="data/sample", help="sample-data root (btcv/ is generated if absent)")
    p.add_argument("--runs", default="runs")
    p.add_argument("--steps", default=4, type=int, help="pre-training steps")
    p.add_argument("--epochs", default=14, type=int, help="fine-tuning epochs (6 one-patch steps each)")
    p.add_argument("--ft_lr", default=3e-3, type=float, help="fine-tuning LR (BTCV recipe: 3e-4)")
    p.add_argument("--spacing", default=(8.0, 8.0, 10.0), type=float, nargs=3,
                   help="fine-tuning voxel size in mm (BTCV recipe: 1.5 1.5 1.5)")
    p.add_argument("--roi", default=(64, 32, 32), type=int, nargs=3,
                   help="fine-tuning patch (BTCV recipe: 96 96 96; each side a multiple of 32)")
    p.add_argument("--pretrained_branch", default="student", choices=["student", "teacher"],
                   help="student: same start as the random run; the EMA teacher (the released weights' "
                        "branch) is still ~0.9^steps its own independent random init after a few steps")
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
    ft = finetune_args(btcv, out, args, tiny)
    pre = finetune.main(ft + ["--logdir", str(out / "finetune_pretrained"),
                              "--pretrained_checkpoint", str(out / "pretrain" / "model_final_epoch.pt"),
                              "--pretrained_branch", args.pretrained_branch])
    rnd = finetune.main(ft + ["--logdir", str(out / "finetune_random"), "--use_ssl_pretrained", "False"])
    wall = round(time.time() - t0, 1)
    path = write_row("voco", runs=args.runs, data="sample btcv CT (6 train / 2 val)", steps=len(rows),
                     final_loss=float(rows[-1]["loss"]), metric="BTCV mean Dice over 13 organs (val)",
                     pretrained=pre["mean_dice"], random=rnd["mean_dice"], wall_time_s=wall,
                     loss_csv=(out / "pretrain" / "metrics.csv").as_posix())
    names = finetune.BTCV_ORGANS
    detail = {"organs": names, "large_organs": [names[c - 1] for c in LARGE_ORGANS],
              "fine_tuning": {"epochs": args.epochs, "steps": 6 * args.epochs, "lr": args.ft_lr,
                              "spacing_mm": list(args.spacing), "roi": list(args.roi)},
              **{run: {"mean_dice": r["mean_dice"], "large_organ_dice": large_mean(r),
                       "organ_dice": r["organ_dice"]} for run, r in (("pretrained", pre), ("random", rnd))}}
    (out / "dice.json").write_text(json.dumps(detail, indent=2))
    print(f"{'organ':22s} pretrained  random")
    for name, a, b in zip(names, pre["organ_dice"], rnd["organ_dice"]):
        print(f"{name:22s} {a:10.4f} {b:7.4f}")
    print(f"wrote {path}: mean Dice (13 organs) pretrained {pre['mean_dice']:.4f}, random "
          f"{rnd['mean_dice']:.4f}; large organs {large_mean(pre):.4f} vs {large_mean(rnd):.4f}; {wall:.0f} s")


if __name__ == "__main__":
    main()
