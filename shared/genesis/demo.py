"""The `make demo` run of Semantic Genesis / TransVW on the sample LUNA16 CT, small enough for a CPU.

1. self-discovery (shared.genesis.self_discovery.pipeline): sample scans -> normalised volumes -> autoencoder
   -> per-patient features -> pattern classes written in the original file layout;
2. pre-training (the method's train.py) on those pattern cubes;
3. the pretext on held-out data: pattern cubes of self-discovery's validation patients (never trained on),
   restoration MSE and pattern-class accuracy of the pre-trained model and of random init, per seed;
4. downstream nodule segmentation (the method's finetune_segmentation.py: the whole U-Net, soft Dice) from
   the pre-trained weights and from random init, for several seeds (a seed fixes the patient split, the
   initialisation and the batch order, the same for both runs); scores: voxel Dice over the test cubes that
   hold a nodule, the false-positive rate on the empty ones, and the per-cube mean hard Dice (smoothing 1:
   an empty cube scores 1 when nothing is predicted, so predicting nothing scores the share of empty cubes);
   baselines: predicting nothing, and a per-voxel logistic regression on raw intensities;
   `--task classification` runs nodule presence from the encoder (test AUC) instead;
5. the frozen-feature probe (shared.genesis.probe: nodule vs non-nodule candidate cubes of all scans,
   patient-grouped 5-fold x 10, the Nadeau-Bengio corrected interval): linear-probe AUROC of the centre of the
   bottleneck (where the nodule sits) of the pre-trained encoder and of a random encoder (one per repetition),
   beside chance and the same probe on the raw cube's central voxels.
Writes runs/demo/<method>/row.json through shared.demo.write_row (per-seed or per-fold scores; the table
gives means, 95 % intervals and the paired difference), and the scores to seeds.json. One pre-training run
(seed --seed): the intervals are over fine-tuning seeds and probe folds, not pre-training seeds.
The same command gives the same numbers on the same machine: seeds everywhere, deterministic torch kernels,
a fixed thread count (--threads).

Why segmentation: it uses the whole pre-trained encoder-decoder. The per-cube mean Dice rose from 0.09 to
0.16 with pre-training on the sample data (3 seeds, 10 + 10 epochs), but predicting nothing scores 0.41
there: hence the voxel Dice on nodule cubes and the baselines.
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
HELD_OUT_PER_CLASS = 4  # pattern cubes per class and held-out patient: one per validation patient (4 of 16)
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
    p.add_argument("--probe_folds", type=int, default=5, help="patient-grouped folds of the probe (all scans)")
    p.add_argument("--probe_repeats", type=int, default=10, help="repetitions of the probe's grouped K-fold")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed: the sums' order depends on it)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _last_val_loss(csv_path):
    with open(csv_path, newline="") as f:
        values = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
    return values[-1] if values else None


def run_demo(method, exp_name, pretrain_main, finetune_mains, argv=None):
    """finetune_mains: {task: the method's finetune_<task>.main}."""
    from shared.demo import make_deterministic, probe_metric, write_row
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
                               nb_instances_val=HELD_OUT_PER_CLASS, cube=CUBE, seed=args.seed)
    print(f"self-discovery: {len(found['files'])} pattern files in {found['save']} ({time.time() - start:.0f}s)")

    summary = pretrain_main([
        "--data_dir", str(found["save"]), "--output_dir", str(out / "pretrain"), "--cls_classes", str(args.classes),
        "--nb_instances", "6", "--nb_val_instances", str(HELD_OUT_PER_CLASS), "--batch_size", "8", "--num_workers", "0",
        "--width", str(args.width), "--nb_epoch", str(args.pretrain_epochs), "--lr", str(args.pretrain_lr),
        "--seed", str(args.seed), "--n_images", "2"])
    weights = out / "pretrain" / "en_de" / f"{exp_name}.pt"
    loss_csv = out / "pretrain" / "en_de" / f"{exp_name}.metrics.csv"
    print(f"pre-training: {summary['steps']} steps, best val loss {summary['best_loss']:.4f} "
          f"({time.time() - start:.0f}s)")

    finetune_main = finetune_mains[args.task]
    what, metric, task_flags = TASKS[args.task]
    scores = {"pretrained": [], "random": []}
    detail = {"dice_positive_pretrained": [], "dice_positive_random": [], "fp_rate_pretrained": [],
              "fp_rate_random": [], "voxels_pretrained": [], "voxels_random": []}
    for seed in range(args.seed, args.seed + args.finetune_seeds):
        for name, extra in (("pretrained", ["--weights", str(weights)]), ("random", [])):
            result = finetune_main([
                "--luna16", str(luna), "--input_rows", str(CUBE[0]), "--input_cols", str(CUBE[1]),
                "--input_deps", str(CUBE[2]), "--width", str(args.width), "--nb_epoch", str(args.finetune_epochs),
                "--batch_size", "8", "--optimizer", "adam", "--lr", "0.001", "--patience", "100",
                *task_flags, "--seed", str(seed), "--output_dir", str(out / f"finetune_{name}_seed{seed}"),
                *extra])
            scores[name].append(result["test_metric"])
            if "test_dice_positive" in result:
                detail[f"dice_positive_{name}"].append(result["test_dice_positive"])
                detail[f"fp_rate_{name}"].append(result["test_fp_rate_empty"])
                detail[f"voxels_{name}"].append(result["test_voxels"])
        print(f"seed {seed}: {metric} pretrained {scores['pretrained'][-1]:.3f} random {scores['random'][-1]:.3f} "
              f"({time.time() - start:.0f}s)")
    seeds = list(range(args.seed, args.seed + args.finetune_seeds))
    pretext = pretext_scores(found["save"], weights, args.width, args.classes, seeds)
    print(f"pretext on {pretext['n']} held-out cubes: restoration MSE pretrained {pretext['mse_pretrained']} random "
          f"{pretext['mse_random']}; class accuracy {pretext['acc_pretrained']} vs {pretext['acc_random']}")
    seen = seen_statement(luna, found["dataset"], seeds)
    probe = probe_scores(luna, weights, args.width, args.seed, args.probe_neg_per_pos, args.probe_folds,
                         args.probe_repeats)
    means = {k: f"{statistics.fmean(probe[k]):.3f}" for k in ("pretrained", "random", "raw")}
    print(f"probe (linear AUROC) over {len(probe['seeds'])} folds: pretrained {means['pretrained']} random "
          f"{means['random']} raw {means['raw']} ({time.time() - start:.0f}s)")
    downstream = finetune_metrics(args.task, what, metric, seeds, scores, detail, luna)
    (out / "seeds.json").write_text(json.dumps({"metric": metric, "task": args.task, "seeds": seeds, **scores,
                                                **detail, "probe": probe, "pretext": pretext}, indent=2))
    wall = time.time() - start
    path = write_row(method, runs=args.runs, data=f"sample LUNA16 (16 scans), {what}",
                     steps=summary["steps"], final_loss=_last_val_loss(loss_csv), wall_time_s=round(wall, 1),
                     loss_csv=str(loss_csv), seen=seen, pretrain_seeds=f"1 (seed {args.seed}; spread not measured)",
                     metrics=[
                         metric_row("pretext", f"{pretext['n']} held-out pattern cubes (validation patients), "
                                    "restoration MSE; trivial: the transformed cube as is", seeds,
                                    pretext["mse_pretrained"], pretext["mse_random"], trivial=pretext["mse_identity"],
                                    lower_is_better=True),
                         metric_row("pretext", f"the same cubes, {args.classes}-class pattern accuracy; trivial: "
                                    "the majority class", seeds, pretext["acc_pretrained"], pretext["acc_random"],
                                    trivial=pretext["acc_majority"]),
                         probe_metric(f"nodule vs non-nodule cubes ({probe['positives']} of {probe['cubes']} "
                                      f"nodules, {probe['scans']} scans), linear AUROC of the bottleneck's centre; "
                                      f"raw: the central voxels; patient-grouped {args.probe_folds}-fold x "
                                      f"{args.probe_repeats}", probe),
                         *downstream])
    mean = {k: statistics.fmean(v) for k, v in scores.items()}
    print(f"{method} demo: {metric} over {len(seeds)} seeds, pretrained {mean['pretrained']:.3f} vs random "
          f"{mean['random']:.3f}; probe AUROC {statistics.fmean(probe['pretrained']):.3f} vs "
          f"{statistics.fmean(probe['random']):.3f}; {wall:.0f}s -> {path}")
    return path


def finetune_metrics(task, what, metric, seeds, scores, detail, luna):
    """The fine-tuning rows with their baselines. Segmentation: voxel Dice on the nodule cubes (the reading
    that can show learning) and the per-cube mean Dice (where predicting nothing scores the share of empty
    cubes); the false-positive rate on empty cubes goes in the names. Classification: AUC, chance 0.5."""
    from shared.demo import CHANCE_AUROC
    from shared.demo import metric as metric_row

    if task != "segmentation":
        return [metric_row("fine-tune", f"{what} {metric} (no raw baseline for this task)", seeds,
                           scores["pretrained"], scores["random"], trivial=CHANCE_AUROC)]
    base = segmentation_baselines(luna, seeds)

    def mean(values):
        return f"{statistics.fmean(values):.2f}"
    def voxels(arm, kind):
        return f"{statistics.fmean(v[kind] for v in detail[f'voxels_{arm}']):.0f}"
    fp = (f"false-positive rate on empty cubes: pre-trained {mean(detail['fp_rate_pretrained'])}, random "
          f"{mean(detail['fp_rate_random'])}, raw {mean(base['raw_fp_rate'])}, trivial 0; voxels predicted per "
          f"empty cube: pre-trained {voxels('pretrained', 'predicted_empty')}, random "
          f"{voxels('random', 'predicted_empty')}, per nodule cube {voxels('pretrained', 'predicted_positive')} "
          f"and {voxels('random', 'predicted_positive')} for {voxels('pretrained', 'true_positive')} true")
    return [metric_row("fine-tune", f"{what}, voxel Dice on nodule cubes ({fp})", seeds,
                       detail["dice_positive_pretrained"], detail["dice_positive_random"],
                       trivial=base["trivial_dice_positive"], raw=base["raw_dice_positive"]),
            metric_row("fine-tune", f"{what}, mean {metric} per cube (smoothing 1; empty cubes score 1 if "
                       "nothing is predicted)", seeds, scores["pretrained"], scores["random"],
                       trivial=base["trivial_dice"], raw=base["raw_dice"])]


def seen_statement(luna, dataset, seeds):
    """Which downstream test scans pre-training saw: self-discovery reads every scan (its features assign the
    pattern classes), the pre-training cubes come from its train-split scans."""
    import csv as csv_module

    import numpy as np

    from shared.genesis.finetune import patient_splits

    with open(Path(dataset) / "volumes.csv", newline="") as f:
        split = {r["id"]: r["split"] for r in csv_module.DictReader(f)}
    trained = {uid for uid, s in split.items() if s == "train"}
    counts = []
    for seed in seeds:
        split_of = patient_splits(sorted(split), (0.6, 0.2, 0.2), np.random.default_rng(seed))
        held = {uid for uid, s in split_of.items() if s == "test"}
        counts.append((len(held & trained), len(held)))
    return (f"self-discovery read all {len(split)} scans; pre-training cubes came from {len(trained)} of them; "
            f"among those, per seed: fine-tune test scans {', '.join(f'{a} of {b}' for a, b in counts)}; the "
            f"probe's K-fold test folds cover all {len(split)} scans, {len(trained)} of them pre-trained on")


def pretext_scores(pattern_dir, weights, width, classes, seeds, batch_size=8):
    """Per seed: the pretext on the held-out pattern cubes (self-discovery's validation patients: never
    trained on; their loss picked the best epoch) for the pre-trained model and a random one initialised with
    the seed: restoration MSE and pattern-class accuracy of the classification head. The seed also draws the
    transforms (the same for both models)."""
    import numpy as np
    import torch

    from shared.genesis.data import RestorationBatches, load_patterns
    from shared.genesis.pretrain import build_model
    from shared.weights import load_pretrained

    _, held_out = load_patterns(pattern_dir, classes, nb_instances=6, nb_val_instances=HELD_OUT_PER_CLASS,
                                skip_blank=True)
    out = {"mse_pretrained": [], "mse_random": [], "acc_pretrained": [], "acc_random": [], "mse_identity": [],
           "n": len(held_out), "classes": classes,
           "acc_majority": float(np.bincount(held_out.labels()).max() / len(held_out))}
    pretrained = build_model("en_de", classes, width)
    load_pretrained(pretrained, weights, min_matched=0.99, verbose=False)
    for seed in seeds:
        torch.manual_seed(seed)
        models = {"pretrained": pretrained, "random": build_model("en_de", classes, width)}
        batches = RestorationBatches(held_out, "val", seed=seed)
        order = np.arange(len(held_out))
        sums = {name: [0.0, 0.0] for name in models}
        identity = 0.0  # the transformed cube returned as its own restoration
        for b, start in enumerate(range(0, len(order), batch_size)):
            batch = batches[(0, b, order[start:start + batch_size])]
            identity += float(torch.nn.functional.mse_loss(batch["inputs"], batch["targets"])) * len(batch["labels"])
            for name, model in models.items():
                model.eval()
                with torch.no_grad():
                    restored, logits = model(batch["inputs"])
                n = len(batch["labels"])
                sums[name][0] += float(torch.nn.functional.mse_loss(restored, batch["targets"])) * n
                sums[name][1] += float((logits.argmax(1) == batch["labels"]).sum())
        out["mse_identity"].append(identity / len(order))
        for name in models:
            out[f"mse_{name}"].append(sums[name][0] / len(order))
            out[f"acc_{name}"].append(sums[name][1] / len(order))
    return out


def centre(feature_map, keep=0.5):
    """The central `keep` fraction of every spatial side of a (B, C, X, Y, Z) map, symmetric about the side's
    middle (one extra cell where the counts' parities differ, so a side of 2 keeps both cells): the candidate,
    and so the nodule, sits at voxel s // 2 of every side s of its cube, which in the 8x-downsampled bottleneck
    is the corner its central cells share (a whole-cube pool dilutes a nodule of a few voxels in the lung)."""
    slices = [slice(None), slice(None)]
    for side in feature_map.shape[2:]:
        n = max(1, round(side * keep))
        n += (side - n) % 2
        slices.append(slice((side - n) // 2, (side - n) // 2 + n))
    return feature_map[tuple(slices)]


def centre_raw_features(x):
    """The raw-input probe baseline: the cube's central quarter per side average-pooled to 2 x 2 x 2 (of the raw
    variants tried on the sample, the strongest: whole-cube pools to 2^3 or 4^3 score below chance)."""
    from shared.demo import raw_features

    return raw_features(centre(x, 0.25), 2)


def probe_scores(luna, weights, width, seed, neg_per_pos, folds=5, repeats=10):
    """Linear-probe AUROC of the centre of the bottleneck (see `centre`) of the pre-trained encoder and of a
    random one, beside chance (0.5) and the raw centre voxels (centre_raw_features), by patient-grouped K-fold
    over the cubes of all scans (`folds` x `repeats`, a fresh random encoder per repetition; shared.demo.
    probe_over_seeds): scores per fold, with the ratio for the corrected interval."""
    import numpy as np

    from shared.demo import probe_over_seeds
    from shared.genesis.probe import Encoder3D, grouped_nodule_probe_set
    from shared.weights import load_pretrained

    probe_set, groups = grouped_nodule_probe_set(luna, CUBE, neg_per_pos=neg_per_pos, seed=seed)

    def centre_features(encoder):
        return lambda x: centre(encoder(x))
    found = probe_over_seeds(probe_set, lambda: Encoder3D(width),
                             lambda encoder: load_pretrained(encoder, weights, verbose=False), [seed],
                             feature_fn=centre_features, groups=groups, folds=folds, repeats=repeats,
                             raw_fn=centre_raw_features)
    y = np.concatenate([probe_set.train_y, probe_set.test_y])
    found["cubes"], found["positives"], found["scans"] = len(y), int(y.sum()), len(set(groups))
    return found


def segmentation_baselines(luna, seeds):
    """Per seed, on the fine-tuning's own split: the trivial predictor (nothing) and the raw-input baseline (a
    per-voxel logistic regression on raw intensities, shared.demo.raw_segmentation, its threshold chosen for
    voxel Dice on the training cubes), each
    scored as the fine-tuning is: per-cube mean Dice, voxel Dice on nodule cubes, false-positive rate on empty
    cubes."""
    import numpy as np
    import torch

    from shared.demo import raw_segmentation
    from shared.genesis.finetune import luna16_nodule_cubes, positive_dice_and_empty_fp
    from shared.losses import dice_score

    out = {f"{arm}_{score}": [] for arm in ("trivial", "raw") for score in ("dice", "dice_positive", "fp_rate")}
    for seed in seeds:
        data = luna16_nodule_cubes(luna, CUBE, 1, seed=seed, masks=True)
        (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
        raw = raw_segmentation(train_x, train_y, test_x, lambda p, t: positive_dice_and_empty_fp(p, t)[0], seed)
        predictions = {"trivial": np.zeros_like(test_y), "raw": raw}
        target = torch.as_tensor(test_y, dtype=torch.float32).unsqueeze(1)
        for arm, pred in predictions.items():
            pred = torch.as_tensor(pred, dtype=torch.float32).unsqueeze(1)
            out[f"{arm}_dice"].append(float(dice_score(pred, target).mean()))
            dice, fp = positive_dice_and_empty_fp(pred, target)
            out[f"{arm}_dice_positive"].append(dice)
            out[f"{arm}_fp_rate"].append(fp)
    return out
