"""`make demo-dira`: a short `dir` then `dira` pre-training on the sample X-rays, then, for each of --seeds seeds,
the frozen-feature probe (dira/probe.py's ChestX-ray14 finding labels, a seeded 70/30 split, mean per-label linear
AUROC of the pooled layer4 features) and lung segmentation fine-tuned from those weights and from random init
(the seed fixes the random init and the batch order of both); writes runs/demo/dira/row.json.

Tiny settings so it runs in about two minutes on a laptop CPU: ResNet-18 U-Net, 64x64 crops, batch 8,
a queue of 16 keys. The numbers show the pipeline works end to end, not the paper's results.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import json
import os
import shutil
import time
import warnings

from dira import finetune, train
from dira.probe import chestxray14_probe_set, feature_fn
from dira.transfer import build_resnet, load_into_resnet
from shared.demo import make_deterministic, metric, probe_over_seeds, write_row


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
    p.add_argument("--seeds", type=int, default=3, help="downstream seeds (0, 1, ...)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed: results depend on it)")
    p.add_argument("--img_size", type=int, default=64, help="image side (a multiple of 32)")
    p.add_argument("--train_images", type=int, default=None,
                   help="only the first N images of the training list (a quicker run, e.g. in tests)")
    args = p.parse_args(argv)
    make_deterministic(0, args.threads)
    start = time.time()
    xray = Path(args.sample) / "chestxray14"
    if not (xray / "Xray14_train_official.txt").is_file():
        raise SystemExit(f"no sample X-rays under {xray}: run `python -m shared.sample_data --out {args.sample}`")
    out = Path(args.runs) / "demo" / "dira"
    shutil.rmtree(out, ignore_errors=True)  # a fresh demo: no logs or results of an earlier one
    train_list = xray / "Xray14_train_official.txt"
    if args.train_images:
        out.mkdir(parents=True)
        lines = train_list.read_text().splitlines()[:args.train_images]
        train_list = out / "train_list.txt"
        train_list.write_text("\n".join(lines) + "\n")
    lists = ["--train_list", str(train_list),
             "--val_list", str(xray / "Xray14_val_official.txt")]
    tiny = ["-a", "resnet18", "--img_size", str(args.img_size), "--batch-size", "8", "--moco-k", "16", "--mlp", "--cos",
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
          "--train_list", str(train_list), "--val_list", str(xray / "Xray14_val_official.txt"),
          "--test_list", str(xray / "Xray14_test_official.txt"), "-a", "resnet18", "--img_size", str(args.img_size),
          "--epochs", str(args.ft_epochs), "--batch_size", "8", "--workers", "0"]
    seeds = list(range(args.seeds))
    weights = stage2 / "best_checkpoint.pth"
    probe_set = chestxray14_probe_set(xray, img_size=args.img_size, max_per_split=None, seed=0)
    probe = probe_over_seeds(probe_set, lambda: build_resnet("resnet18"),
                             lambda net: load_into_resnet(net, weights, verbose=False), seeds, feature_fn=feature_fn)
    dice = {"pretrained": [], "random": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in seeds:
            common = ft + ["--seed", str(seed), "--output_dir", str(out / f"finetune_seed{seed}")]
            dice["pretrained"].append(finetune.main(common + ["--init", "dira", "--proxy_dir", str(weights)])["dice"])
            dice["random"].append(finetune.main(common + ["--init", "random"])["dice"])
            print(f"seed {seed}: probe AUROC {probe['pretrained'][seed]:.3f} vs {probe['random'][seed]:.3f}, "
                  f"Dice {dice['pretrained'][-1]:.3f} vs {dice['random'][-1]:.3f} ({time.time() - start:.0f} s)")
    wall = time.time() - start
    n_train = len(train_list.read_text().splitlines())
    row = write_row("dira", runs=args.runs, data=f"sample ChestX-ray14, {n_train} training X-rays", steps=steps,
                    final_loss=round(final_loss, 4), wall_time_s=round(wall, 1),
                    loss_csv=os.path.relpath(stage2 / "metrics.csv"), metrics=[
                        metric("probe", "14 findings, mean linear AUROC", seeds, probe["pretrained"], probe["random"]),
                        metric("fine-tune", "lung segmentation Dice (test list)", seeds, dice["pretrained"],
                               dice["random"])])
    (out / "seeds.json").write_text(json.dumps({"seeds": seeds, "dice": dice, "probe": probe["all"]}, indent=2))
    print(f"DiRA demo: dir+dira {steps} steps, final loss {final_loss:.4f}; Dice pretrained "
          f"{dice['pretrained']} vs random {dice['random']}; {wall:.0f} s -> {row}")


if __name__ == "__main__":
    main()
