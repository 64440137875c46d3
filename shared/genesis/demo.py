"""The `make demo` run of Semantic Genesis / TransVW on the sample LUNA16 CT, small enough for a CPU.

1. self-discovery (shared.genesis.self_discovery.pipeline): sample scans -> normalised volumes -> autoencoder
   -> per-patient features -> pattern classes written in the original file layout;
2. pre-training (the method's train.py) on those pattern cubes;
3. downstream nodule segmentation (the method's finetune_segmentation.py: the whole U-Net, soft Dice) from
   the pre-trained weights and from random init, for several seeds (a seed fixes the patient split, the
   initialisation and the batch order, the same for both runs); metric: mean hard Dice per test cube
   (a cube without a nodule scores 1 only when nothing is predicted), mean over the seeds.
   `--task classification` runs nodule presence from the encoder (test AUC) instead;
4. the frozen-feature probe (shared.genesis.probe: nodule vs non-nodule candidate cubes, split by patient with
   the seed): linear-probe AUROC of the pooled bottleneck of the pre-trained encoder and of a random encoder
   (initialised with the seed), for the same seeds.
Writes runs/demo/<method>/row.json through shared.demo.write_row (per-seed scores of both metrics; the table
gives means, 95 % intervals and the paired difference), and the per-seed scores to seeds.json.
The same command gives the same numbers on the same machine: seeds everywhere, deterministic torch kernels,
a fixed thread count (--threads).

Why segmentation: it uses the whole pre-trained encoder-decoder, and its gain held on every seed tried:
on the sample data (3 seeds) pre-training raised the mean test Dice from 0.09 to 0.16 with the defaults
(10 + 10 epochs, about 140 s on 2 cores) and from 0.19 to 0.30 with 20 + 20 epochs (about 290 s).
Nodule presence from the encoder alone (the earlier demo: 5 pre-training and 8 fine-tuning epochs) gave
no stable reading: mean AUC 0.76 vs 0.78 in one run, 0.91 vs 0.79 in another run, pre-trained lower on
one seed.
Why several seeds: a test split holds 3 patients and 12-14 cubes, so one score moves a lot between seeds.
The pre-training keeps the original learning rate (1e-3): at 3e-3 the encoder drifted far from its
initialisation in a few dozen steps and nodule presence fell below random init on every seed tried.
"""

import argparse
import csv
import json
import shutil
import statistics
import time
from pathlib import Path

CUBE = (32, 32, 16)
TASK = "segmentation"
# task -> (what the row's data column says, metric name, extra fine-tuning flags)
TASKS = {"segmentation": ("nodule segmentation", "test Dice", []),
         "classification": ("nodule presence", "test AUC", ["--neg_per_pos", "3"])}


def build_parser(method):
    p = argparse.ArgumentParser(description=f"{method} demo on the sample LUNA16 CT (CPU, a few minutes)")
    p.add_argument("--sample", default="data/sample", help="sample-data root (generated if missing)")
    p.add_argument("--runs", default="runs")
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--classes", type=int, default=4, help="self-discovered pattern classes")
    p.add_argument("--pretrain_epochs", type=int, default=10)
    p.add_argument("--pretrain_lr", type=float, default=1e-3, help="Adam learning rate of the pre-training")
    p.add_argument("--finetune_epochs", type=int, default=10)
    p.add_argument("--finetune_seeds", type=int, default=3, help="fine-tuning seeds averaged (seed, seed+1, ...)")
    p.add_argument("--task", default=TASK, choices=list(TASKS),
                   help="downstream task: nodule segmentation (U-Net, Dice) or nodule presence (encoder, AUC)")
    p.add_argument("--probe_neg_per_pos", type=int, default=3, help="non-nodule cubes per nodule in the probe set")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed: the sums' order depends on it)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _last_val_loss(csv_path):
    with open(csv_path, newline="") as f:
        values = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
    return values[-1] if values else None


def run_demo(method, exp_name, pretrain_main, finetune_mains, argv=None):
    """finetune_mains: {task: the method's finetune_<task>.main}."""
    from shared.demo import make_deterministic, write_row
    from shared.demo import metric as metric_row
    from shared.genesis.self_discovery.pipeline import run_self_discovery
    from shared.sample_data import generate

    args = build_parser(method).parse_args(argv)
    make_deterministic(args.seed, args.threads)
    start = time.time()
    luna = Path(args.sample) / "luna16"
    if not luna.is_dir():
        generate(args.sample, seed=0, only=["luna16"])
    out = Path(args.runs) / "demo" / method
    for old in [out / "pretrain", *out.glob("finetune_*")]:  # a demo is a fresh run: no earlier settings to clash with
        shutil.rmtree(old, ignore_errors=True)
    found = run_self_discovery(luna, out / "self_discovery", nb_classes=args.classes, nb_instances=6,
                               nb_instances_val=2, cube=CUBE, seed=args.seed)
    print(f"self-discovery: {len(found['files'])} pattern files in {found['save']} ({time.time() - start:.0f}s)")

    summary = pretrain_main([
        "--data_dir", str(found["save"]), "--output_dir", str(out / "pretrain"), "--cls_classes", str(args.classes),
        "--nb_instances", "6", "--nb_val_instances", "2", "--batch_size", "8", "--num_workers", "0",
        "--width", str(args.width), "--nb_epoch", str(args.pretrain_epochs), "--lr", str(args.pretrain_lr),
        "--seed", str(args.seed), "--n_images", "2"])
    weights = out / "pretrain" / "en_de" / f"{exp_name}.pt"
    loss_csv = out / "pretrain" / "en_de" / f"{exp_name}.metrics.csv"
    print(f"pre-training: {summary['steps']} steps, best val loss {summary['best_loss']:.4f} "
          f"({time.time() - start:.0f}s)")

    finetune_main = finetune_mains[args.task]
    what, metric, task_flags = TASKS[args.task]
    scores = {"pretrained": [], "random": []}
    for seed in range(args.seed, args.seed + args.finetune_seeds):
        for name, extra in (("pretrained", ["--weights", str(weights)]), ("random", [])):
            result = finetune_main([
                "--luna16", str(luna), "--input_rows", str(CUBE[0]), "--input_cols", str(CUBE[1]),
                "--input_deps", str(CUBE[2]), "--width", str(args.width), "--nb_epoch", str(args.finetune_epochs),
                "--batch_size", "8", "--optimizer", "adam", "--lr", "0.001", "--patience", "100",
                *task_flags, "--seed", str(seed), "--output_dir", str(out / f"finetune_{name}_seed{seed}"),
                *extra])
            scores[name].append(result["test_metric"])
        print(f"seed {seed}: {metric} pretrained {scores['pretrained'][-1]:.3f} random {scores['random'][-1]:.3f} "
              f"({time.time() - start:.0f}s)")
    seeds = list(range(args.seed, args.seed + args.finetune_seeds))
    probe = probe_scores(luna, weights, args.width, seeds, args.probe_neg_per_pos)
    print(f"probe (linear AUROC): pretrained {probe['pretrained']} random {probe['random']} "
          f"({time.time() - start:.0f}s)")
    (out / "seeds.json").write_text(json.dumps({"metric": metric, "task": args.task, "seeds": seeds, **scores,
                                                "probe": probe}, indent=2))
    wall = time.time() - start
    path = write_row(method, runs=args.runs, data=f"sample LUNA16 (16 scans), {what}",
                     steps=summary["steps"], final_loss=_last_val_loss(loss_csv), wall_time_s=round(wall, 1),
                     loss_csv=str(loss_csv), metrics=[
                         metric_row("probe", "nodule vs non-nodule cubes, linear AUROC", seeds,
                                    probe["pretrained"], probe["random"]),
                         metric_row("fine-tune", f"{what} {metric}", seeds, scores["pretrained"], scores["random"])])
    mean = {k: statistics.fmean(v) for k, v in scores.items()}
    print(f"{method} demo: {metric} over {len(seeds)} seeds, pretrained {mean['pretrained']:.3f} vs random "
          f"{mean['random']:.3f}; probe AUROC {statistics.fmean(probe['pretrained']):.3f} vs "
          f"{statistics.fmean(probe['random']):.3f}; {wall:.0f}s -> {path}")
    return path


def probe_scores(luna, weights, width, seeds, neg_per_pos):
    """Per seed: linear-probe AUROC of the pre-trained encoder and of a random one initialised with the seed
    (the probe set's patient split follows the seed too); k-NN AUROC alongside."""
    import torch

    from shared.genesis.probe import Encoder3D, nodule_probe_set
    from shared.weights import load_pretrained

    out = {"pretrained": [], "random": [], "knn_pretrained": [], "knn_random": []}
    for seed in seeds:
        probe_set = nodule_probe_set(luna, CUBE, neg_per_pos=neg_per_pos, seed=seed)
        torch.manual_seed(seed)
        encoder = Encoder3D(width)
        random_scores = probe_set.evaluate(encoder, seed=seed)
        load_pretrained(encoder, weights, verbose=False)
        pretrained_scores = probe_set.evaluate(encoder, seed=seed)
        for name, scores in (("pretrained", pretrained_scores), ("random", random_scores)):
            out[name].append(scores["probe_linear_auroc"])
            out[f"knn_{name}"].append(scores["probe_knn_auroc"])
    return out
