"""`make demo-dira`: a short `dir` then `dira` pre-training on the sample X-rays, then lung segmentation
fine-tuned from those weights and from random init; writes runs/demo/dira/row.json.

Tiny settings so it runs in about a minute on a laptop CPU: ResNet-18 U-Net, 64x64 crops, batch 8,
a queue of 16 keys. The numbers show the pipeline works end to end, not the paper's results.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import os
import shutil
import time
import warnings

from dira import finetune, train
from shared.demo import write_row


def last_loss(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train_loss")]
    return float(rows[-1]["train_loss"]), len(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sample", default="data/sample", help="sample-data root (python -m shared.sample_data)")
    p.add_argument("--runs", default="runs")
    p.add_argument("--dir_epochs", type=int, default=3)
    p.add_argument("--dira_epochs", type=int, default=2)
    p.add_argument("--ft_epochs", type=int, default=3)
    args = p.parse_args(argv)
    start = time.time()
    xray = Path(args.sample) / "chestxray14"
    if not (xray / "Xray14_train_official.txt").is_file():
        raise SystemExit(f"no sample X-rays under {xray}: run `python -m shared.sample_data --out {args.sample}`")
    out = Path(args.runs) / "demo" / "dira"
    shutil.rmtree(out, ignore_errors=True)  # a fresh demo: no logs or results of an earlier one
    lists = ["--train_list", str(xray / "Xray14_train_official.txt"),
             "--val_list", str(xray / "Xray14_val_official.txt")]
    tiny = ["-a", "resnet18", "--img_size", "64", "--batch-size", "8", "--moco-k", "16", "--mlp", "--cos",
            "--moco-t", "0.2", "-j", "0", "--seed", "0", "--checkpoint-dir", str(out / "pretrain"),
            "--preview_images", "4", "--print-freq", "5"]
    stage1 = train.main([str(xray / "images"), *lists, *tiny, "--mode", "dir", "--epochs", str(args.dir_epochs)])
    stage2 = train.main([str(xray / "images"), *lists, *tiny, "--mode", "dira", "--epochs", str(args.dira_epochs),
                         "--generator_pre_trained_weights", str(stage1 / "checkpoint.pth")])
    final_loss, _ = last_loss(stage2)
    steps = 0
    for run in (stage1, stage2):
        with open(run / "metrics.csv", newline="") as f:
            steps += max(int(r["step"]) for r in csv.DictReader(f)) + 1

    ft = ["segmentation", "--data_dir", str(xray / "images"), "--mask_dir", str(xray / "masks"),
          "--train_list", str(xray / "Xray14_train_official.txt"), "--val_list", str(xray / "Xray14_val_official.txt"),
          "--test_list", str(xray / "Xray14_test_official.txt"), "-a", "resnet18", "--img_size", "64",
          "--epochs", str(args.ft_epochs), "--batch_size", "8", "--workers", "0", "--output_dir", str(out / "finetune")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrained = finetune.main(ft + ["--init", "dira", "--proxy_dir", str(stage2 / "best_checkpoint.pth")])
        random_init = finetune.main(ft + ["--init", "random"])
    wall = time.time() - start
    n_train = len((xray / "Xray14_train_official.txt").read_text().split("\n")) - 1
    row = write_row("dira", runs=args.runs, data=f"sample ChestX-ray14, {n_train} training X-rays", steps=steps,
                    final_loss=round(final_loss, 4), metric="lung segmentation Dice (test list)",
                    pretrained=round(pretrained["dice"], 4), random=round(random_init["dice"], 4),
                    wall_time_s=round(wall, 1), loss_csv=os.path.relpath(stage2 / "metrics.csv"))
    print(f"DiRA demo: dir+dira {steps} steps, final loss {final_loss:.4f}; Dice pretrained "
          f"{pretrained['dice']:.4f} vs random {random_init['dice']:.4f}; {wall:.0f} s -> {row}")


if __name__ == "__main__":
    main()
