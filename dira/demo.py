"""`make demo-dira`: a short `dir` then `dira` pre-training on the sample X-rays; the pretext on the held-out
test list; the frozen-feature probe (any finding vs none on all 96 images, patient-grouped 5-fold x 10, pooled
layer4 features); and lung segmentation fine-tuned on 40 % of the training masks (--ft_anno_percent) at two
budgets from those weights, from random init and from the pre-trained encoder alone, for --seeds seeds (the seed
fixes the random init and the batch order of every arm); writes runs/demo/dira/row.json.

Tiny settings so it takes about four minutes of one CPU core (205 s of CPU measured): ResNet-18 U-Net,
64x64 crops, batch 8, a queue of 16 keys. The numbers show the pipeline works end to end, not the paper's results.
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

import numpy as np
import torch

from dira import finetune, train
from dira.probe import chestxray14_probe_set, feature_fn
from dira.transfer import build_resnet, load_into_resnet
from shared.demo import (
    make_deterministic,
    metric,
    probe_metric,
    probe_over_seeds,
    raw_segmentation,
    short_budget,
    write_row,
)


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
    p.add_argument("--ft_epochs", type=int, default=3, help="fine-tuning epochs of the short budget")
    p.add_argument("--ft_long_epochs", type=int, default=10,
                   help="fine-tuning epochs of the long budget (0: the short budget only)")
    p.add_argument("--ft_anno_percent", type=float, default=40,
                   help="fine-tuning label fraction (finetune.py --anno_percent, the benchmark's: a fixed shuffle, "
                        "the first p %% of the training list); 40: 23 of the 59 sample images, so both budgets, "
                        "the encoder-only arm and 3 seeds fit the demo's time")
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
          "--batch_size", "8", "--workers", "0", "--anno_percent", str(args.ft_anno_percent)]
    seeds = list(range(args.seeds))
    weights = stage2 / "best_checkpoint.pth"
    pretext = pretext_scores(xray, stage2 / "checkpoint.pth", seeds, args.img_size)
    print(f"pretext on {pretext['n']} test-list X-rays: top-1 {pretext['top1_pretrained']} vs "
          f"{pretext['top1_random']}, restoration MSE {pretext['mse_pretrained']} vs {pretext['mse_random']} "
          f"({time.time() - start:.0f} s)")
    probe_set, groups = any_finding_probe_set(xray, args.img_size)
    probe = probe_over_seeds(probe_set, lambda: build_resnet("resnet18"),
                             lambda net: load_into_resnet(net, weights, verbose=False), seeds[:1],
                             feature_fn=feature_fn, groups=groups, raw_pool=8)
    print(f"probe AUROC over {len(probe['seeds'])} folds: {np.mean(probe['pretrained']):.3f} vs "
          f"{np.mean(probe['random']):.3f}, raw {np.mean(probe['raw']):.3f} ({time.time() - start:.0f} s)")
    budgets = [args.ft_epochs] + ([args.ft_long_epochs] if args.ft_long_epochs else [])
    dice = {(e, arm): [] for e in budgets for arm in ("pretrained", "random")}
    encoder_only = encoder_weights(weights, out / "encoder_only.pth")
    dice[args.ft_epochs, "encoder"] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in seeds:
            for epochs in budgets:
                common = [*ft, "--epochs", str(epochs), "--seed", str(seed),
                          "--output_dir", str(out / f"finetune_{epochs}ep_seed{seed}")]
                dice[epochs, "pretrained"].append(
                    finetune.main(common + ["--init", "dira", "--proxy_dir", str(weights)])["dice"])
                dice[epochs, "random"].append(finetune.main(common + ["--init", "random"])["dice"])
                if epochs == args.ft_epochs:  # the pre-trained encoder alone, the decoder random
                    dice[epochs, "encoder"].append(finetune.main(
                        common + ["--init", "imagenet", "--proxy_dir", str(encoder_only),
                                  "--output_dir", str(out / f"finetune_{epochs}ep_encoder_seed{seed}")])["dice"])
                print(f"seed {seed}, {epochs} epochs: Dice {dice[epochs, 'pretrained'][-1]:.3f} vs "
                      f"{dice[epochs, 'random'][-1]:.3f} ({time.time() - start:.0f} s)")
    raw = lung_raw_baseline(xray, train_list, args.img_size, seeds, args.ft_anno_percent)
    wall = time.time() - start
    n_train = len(train_list.read_text().splitlines())
    n_labelled = max(1, int(n_train * args.ft_anno_percent / 100)) if args.ft_anno_percent < 100 else n_train
    labelled = f"{n_labelled} of the {n_train} training masks (--anno_percent {args.ft_anno_percent:g})"
    positives = test_fold_positives(probe_set, groups, seeds[0])

    def at(epochs):
        return dice[epochs, "pretrained"], dice[epochs, "random"]
    long = budgets[-1]
    short = short_budget(f"{args.ft_epochs} epochs", *at(args.ft_epochs), trivial=0.0, raw=raw) if len(budgets) > 1 \
        else None
    rows = [metric("pretext", f"{pretext['n']} test-list X-rays, top-1 retrieval of the other augmented view "
                   f"(chance {pretext['chance']:.3f})", seeds, pretext["top1_pretrained"], pretext["top1_random"],
                   trivial=pretext["chance"]),
            metric("pretext", "the same X-rays, restoration MSE; trivial: the distorted view as is", seeds,
                   pretext["mse_pretrained"], pretext["mse_random"], trivial=pretext["mse_identity"],
                   lower_is_better=True),
            probe_metric(f"any finding vs none ({positives}), linear AUROC, patient-grouped 5-fold x 10", probe),
            metric("fine-tune", f"lung segmentation Dice (test list), {labelled}, {long} epochs", seeds, *at(long),
                   trivial=0.0,
                   raw=raw, short=short),
            metric("fine-tune", f"the same, {args.ft_epochs} epochs, pre-trained encoder only (decoder random) vs "
                   "random init", seeds, dice[args.ft_epochs, "encoder"], dice[args.ft_epochs, "random"], trivial=0.0,
                   raw=raw)]
    row = write_row("dira", runs=args.runs, data=f"sample ChestX-ray14, {n_train} training X-rays", steps=steps,
                    final_loss=round(final_loss, 4), wall_time_s=round(wall, 1),
                    loss_csv=os.path.relpath(stage2 / "metrics.csv"), metrics=rows,
                    seen=seen_statement(xray, train_list, probe_set), pretrain_seeds="1 (seed 0; spread not measured)")
    (out / "seeds.json").write_text(json.dumps({"seeds": seeds, "dice": {f"{e} epochs {a}": v for (e, a), v in
                                                                         dice.items()},
                                                "raw_dice": raw, "pretext": pretext, "probe": probe["all"]},
                                               indent=2))
    print(f"DiRA demo: dir+dira {steps} steps, final loss {final_loss:.4f}; Dice ({long} epochs) pretrained "
          f"{dice[long, 'pretrained']} vs random {dice[long, 'random']}; {wall:.0f} s -> {row}")


def encoder_weights(unet_weights, path):
    """The encoder tensors of a DiRA U-Net state dict (best_checkpoint.pth) as a plain ResNet state dict, the
    file `finetune.py --init imagenet --proxy_dir` loads into the U-Net's encoder only."""
    from shared.checkpoint import load_checkpoint, save_atomic

    state = load_checkpoint(unet_weights, map_location="cpu")
    save_atomic({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}, path)
    return path


def image_names(xray):
    """The probe set's image names in its order (chestxray14_probe_set: the three official lists in turn)."""
    from dira.data import read_image_list
    from dira.probe import LISTS

    return [p.name for name in LISTS for p in read_image_list(xray / name, xray / "images")[0]]


def any_finding_probe_set(xray, img_size):
    """The ChestX-ray14 probe images with one binary label, any finding vs none (per finding, the sample's test
    folds hold 0-4 positives: too few for an AUROC), and the patient of each image (its name's prefix)."""
    from shared.probe import ProbeSet

    full = chestxray14_probe_set(xray, img_size=img_size, max_per_split=None, seed=0)
    names = image_names(xray)
    if len(names) != len(full):
        raise ValueError(f"{xray}: {len(names)} listed images but a probe set of {len(full)}")
    y = np.concatenate([full.train_y, full.test_y]).any(1).astype(np.int64)
    n = len(full.train_x)
    return ProbeSet(full.train_x, y[:n], full.test_x, y[n:], "chestxray14 any finding"), \
        [name.split("_")[0] for name in names]


def test_fold_positives(probe_set, groups, seed, folds=5, repeats=10):
    """The probe's positives in words: how many of all images, and the fewest and most in a test fold of the
    grouped K-fold probe_over_seeds runs (the same folds: shared.demo.grouped_folds with the same seed)."""
    from shared.demo import grouped_folds

    y = np.concatenate([probe_set.train_y, probe_set.test_y])
    per_fold = [int(y[test].sum()) for _, _, _, test in grouped_folds(groups, folds, repeats, seed)]
    return f"{int(y.sum())} of {len(y)} images positive, {min(per_fold)}-{max(per_fold)} per test fold"


def lung_raw_baseline(xray, train_list, img_size, seeds, anno_percent=100):
    """Per seed: the global lung Dice on the test list of shared.demo.raw_segmentation fitted on the training
    images the fine-tuning reads (the same --anno_percent fraction; images and masks at img_size)."""
    from PIL import Image

    from dira.finetune import ListDataset, SegmentationTransform, dice_iou

    def load(list_file, percent):
        transform = SegmentationTransform(img_size, "none", train=False)
        listed = ListDataset(xray / "images", list_file, transform, mask_dir=xray / "masks", anno_percent=percent)
        pairs = [transform(Image.open(p).convert("L"), Image.open(xray / "masks" / p.name).convert("L"))
                 for p in listed.paths]
        return (torch.stack([x[0] for x, _ in pairs]).numpy(), torch.stack([y[0] for _, y in pairs]).numpy())

    (train_x, train_y), (test_x, test_y) = load(train_list, anno_percent), load(xray / "Xray14_test_official.txt", 100)

    def dice(pred, target):
        return dice_iou(torch.as_tensor(pred), torch.as_tensor(target))["dice"]
    return [dice(raw_segmentation(train_x, train_y, test_x, dice, seed), test_y) for seed in seeds]


def seen_statement(xray, train_list, probe_set):
    """Which evaluation images pre-training read: it trains on the training list and validates on the val list
    (its loss picks best_checkpoint.pth); the pretext and fine-tuning test list is outside both."""
    from dira.data import read_image_list

    trained = {p.name for p in read_image_list(train_list, xray / "images")[0]}
    validated = {p.name for p in read_image_list(xray / "Xray14_val_official.txt", xray / "images")[0]}
    tested = {p.name for p in read_image_list(xray / "Xray14_test_official.txt", xray / "images")[0]}
    names = image_names(xray)
    return (f"pretext and fine-tuning test list: {len(tested & trained)} of {len(tested)} trained on; probe: "
            f"{sum(n in trained for n in names)} of {len(names)} images trained on, "
            f"{sum(n in validated for n in names)} more in pre-training's validation list")



def pretext_scores(xray, checkpoint, seeds, img_size, arch="resnet18"):
    """Per seed, on the test-list X-rays (never in pre-training): DiRA's pretext for the pre-trained query U-Net
    (with its MoCo v2 head, from the stage's checkpoint.pth) and a random one (seeded): top-1 retrieval of each
    image's other augmented view among all images' second views (cosine of the head's embeddings, the space
    the contrastive loss trains; chance 1/N) and the restoration MSE of view 1 against its undistorted crop
    (trivial: the distorted view itself, in gray). The seed draws the views (the same for both models)."""
    import random

    import torch
    import torch.nn.functional as F

    from dira.data import TwoViewTransform, load_image, read_image_list
    from dira.models import DiRAUNet, add_mlp
    from shared.checkpoint import load_checkpoint

    def query_unet():
        unet = DiRAUNet(arch, 128)
        add_mlp(unet)
        return unet
    paths, _ = read_image_list(xray / "Xray14_test_official.txt", xray / "images")
    images = [load_image(p, keep_gray=True) for p in paths]
    state = load_checkpoint(checkpoint, map_location="cpu")["state_dict"]
    prefix = "module.encoder_q." if any(k.startswith("module.") for k in state) else "encoder_q."
    pretrained = query_unet()
    pretrained.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    out = {k: [] for k in ("top1_pretrained", "top1_random", "mse_pretrained", "mse_random", "mse_identity")}
    for seed in seeds:
        random.seed(seed)
        torch.manual_seed(seed)
        transform = TwoViewTransform("dira", img_size)
        y1, y2, target = (torch.stack(v) for v in zip(*(transform(im) for im in images)))
        torch.manual_seed(seed)
        for name, unet in (("pretrained", pretrained), ("random", query_unet())):
            unet.eval()
            with torch.no_grad():
                (e1, restored), (e2, _) = unet(y1), unet(y2, decode=False)
                e1, e2 = F.normalize(e1, dim=1), F.normalize(e2, dim=1)
            out[f"top1_{name}"].append(float(((e1 @ e2.T).argmax(1) == torch.arange(len(e1))).float().mean()))
            out[f"mse_{name}"].append(float(F.mse_loss(restored, target)))
        out["mse_identity"].append(float(F.mse_loss(y1.mean(1, keepdim=True), target)))
    out["n"], out["chance"] = len(images), 1.0 / len(images)
    return out


if __name__ == "__main__":
    main()
