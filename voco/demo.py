"""`make demo-voco`: a short VoCo pre-training on the sample CT, then, for each of --seeds seeds, the frozen-feature
probe (voco/probe.py: BTCV organ-patch classification, macro linear AUROC of the pooled SwinUNETR encoder) and
BTCV-style fine-tuning, from those weights and from random initialisation; writes runs/demo/voco/row.json.

The pretext keeps its meaning at CPU size: a 3x3 grid of 32^3 base crops (a 96x96x32 working volume), random
crops whose centres fall anywhere in the grid, so each overlaps 1-4 of the 9 base crops and has 5-8 negatives
(nonzero `neg` loss; a 2x2 grid gives almost every random crop all four bases and `neg` = 0), every crop
resized to 32^3 and doubled along the first axis (`--double_input`, the CVPR-era variant: 64x32x32 is the
smallest SwinUNETR input whose 1/32 map keeps 2 voxels), feature_size 12, window 2. The pre-trained encoder is
the student, which started from exactly the random-init encoder of seed 0.

The fine-tuning is what a CPU minute allows, so it departs from the BTCV recipe in ways only a demo should
(every one is a finetune.py flag): the 4x4x5 mm sample is resampled to 8x8x10 mm and trained with 64x32x32
patches, one patch per step, no warm-up and a 10x learning rate. Seed s gives both runs the same decoder
initialisation, patches and order. Why these settings: voco/README.md, "Demo".
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

from shared.demo import make_deterministic, metric, probe_metric, probe_over_seeds, write_row
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
            "--workers", "0", "--infer_overlap", "0.25", "--save_checkpoint", "False", *tiny]


def large_mean(result):
    dice = [result["organ_dice"][c - 1] for c in LARGE_ORGANS]
    return float(np.nanmean(dice))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", default="data/sample", help="sample-data root (btcv/ is generated if absent)")
    p.add_argument("--runs", default="runs")
    p.add_argument("--steps", default=30, type=int, help="pre-training steps")
    p.add_argument("--lr", default=1e-3, type=float, help="pre-training peak LR (cosine, no warm-up)")
    p.add_argument("--num_crops", default=3, type=int, help="base crops per axis (3: a 3x3 grid)")
    p.add_argument("--random_crops", default=2, type=int, help="random crops per step (--sw_batch_size)")
    p.add_argument("--epochs", default=10, type=int, help="fine-tuning epochs (6 one-patch steps each)")
    p.add_argument("--ft_lr", default=3e-3, type=float, help="fine-tuning LR (BTCV recipe: 3e-4)")
    p.add_argument("--spacing", default=(8.0, 8.0, 10.0), type=float, nargs=3,
                   help="fine-tuning voxel size in mm (BTCV recipe: 1.5 1.5 1.5)")
    p.add_argument("--roi", default=(64, 32, 32), type=int, nargs=3,
                   help="fine-tuning patch (BTCV recipe: 96 96 96; each side a multiple of 32)")
    p.add_argument("--seeds", default=3, type=int, help="downstream seeds (0, 1, ...)")
    p.add_argument("--threads", default=1, type=int, help="torch CPU threads (fixed: results depend on it)")
    p.add_argument("--pretrained_branch", default="student", choices=["student", "teacher"],
                   help="student: same start as the random run of seed 0; the EMA teacher (the released "
                        "weights' branch) started from its own independent random init")
    args = p.parse_args(argv)
    make_deterministic(0, args.threads)
    t0 = time.time()
    btcv = sample_btcv(args.sample)
    out = Path(args.runs) / "demo" / "voco"
    for old in ("pretrain", "finetune"):  # keep only the caches
        shutil.rmtree(out / old, ignore_errors=True)
    tiny = ["--feature_size", "12", "--window_size", "2", "--use_checkpoint", "False"]
    train.main(["--logdir", str(out / "pretrain"), "--json_list", str(btcv / "btcv.json"),
                "--batch_size", "1", "--sw_batch_size", str(args.random_crops), "--base_roi", "32",
                "--num_crops", str(args.num_crops), "--roi_x", "32", "--double_input", "True",
                "--hidden_dim", "64", "--out_dim", "64", "--num_steps", str(args.steps), "--warmup_steps", "0",
                "--lr", str(args.lr), "--eval_num", str(args.steps), "--save_every", "0", "--workers", "0",
                "--seed", "0", "--cache_dir", str(out / "cache_pretrain"), *tiny])
    rows = list(csv.DictReader(open(out / "pretrain" / "voco_pretrain.metrics.csv")))
    weights = out / "pretrain" / "model_final_epoch.pt"
    print(f"pre-training: {len(rows)} steps, mean neg loss {np.mean([float(r['neg']) for r in rows]):.3f} "
          f"({time.time() - t0:.0f} s)")

    seeds = list(range(args.seeds))
    pretext = pretext_scores(btcv, weights, args, seeds)
    print(f"pretext on {pretext['n_volumes']} held-out volumes: overlap MAE {pretext['mae_pretrained']} vs "
          f"{pretext['mae_random']}, top-1 base {pretext['top1_pretrained']} vs {pretext['top1_random']}")
    probe, cases = organ_probe(btcv, weights, args, seeds)
    print(f"probe AUROC over {len(probe['seeds'])} folds: {np.mean(probe['pretrained']):.3f} vs "
          f"{np.mean(probe['random']):.3f}, raw {np.mean(probe['raw']):.3f} ({time.time() - t0:.0f} s)")
    ft = finetune_args(btcv, out, args, tiny)
    runs = {"pretrained": [], "random": []}
    for seed in seeds:
        common = ft + ["--seed", str(seed)]
        runs["pretrained"].append(finetune.main(common + [
            "--logdir", str(out / "finetune" / f"pretrained_seed{seed}"), "--pretrained_checkpoint", str(weights),
            "--pretrained_branch", args.pretrained_branch]))
        runs["random"].append(finetune.main(common + ["--logdir", str(out / "finetune" / f"random_seed{seed}"),
                                                      "--use_ssl_pretrained", "False"]))
        print(f"seed {seed}: mean Dice {runs['pretrained'][-1]['mean_dice']:.4f} vs "
              f"{runs['random'][-1]['mean_dice']:.4f} ({time.time() - t0:.0f} s)")
    wall = round(time.time() - t0, 1)
    dice = {k: [r["mean_dice"] for r in v] for k, v in runs.items()}
    path = write_row("voco", runs=args.runs, data="sample btcv CT (6 train / 2 val)", steps=len(rows),
                     final_loss=float(rows[-1]["loss"]), wall_time_s=wall,
                     loss_csv=(out / "pretrain" / "voco_pretrain.metrics.csv").as_posix(),
                     seen=seen_statement(btcv, cases),
                     metrics=[
                         metric("pretext", f"{pretext['n_volumes']} held-out volumes, overlap-prediction MAE over "
                                "(random crop, base crop) pairs; trivial: 0 everywhere", seeds,
                                pretext["mae_pretrained"], pretext["mae_random"], trivial=pretext["mae_zero"],
                                lower_is_better=True),
                         metric("pretext", "the same crops, the most-overlapping base crop found (top-1; chance "
                                f"{pretext['chance']:.3f})", seeds, pretext["top1_pretrained"],
                                pretext["top1_random"], trivial=pretext["chance"]),
                         probe_metric("13 organ patches, macro linear AUROC, case-grouped 4-fold x 10", probe),
                         metric("fine-tune", "BTCV mean Dice, 13 organs (val); trivial: background everywhere; raw "
                                "baseline owed", seeds, dice["pretrained"], dice["random"], trivial=0.0)])
    names = finetune.BTCV_ORGANS
    detail = {"organs": names, "large_organs": [names[c - 1] for c in LARGE_ORGANS], "seeds": seeds,
              "pretext": {"steps": len(rows), "neg": [float(r["neg"]) for r in rows]},
              "probe": probe["all"],
              "fine_tuning": {"epochs": args.epochs, "steps": 6 * args.epochs, "lr": args.ft_lr,
                              "spacing_mm": list(args.spacing), "roi": list(args.roi)},
              **{run: [{"mean_dice": r["mean_dice"], "large_organ_dice": large_mean(r), "organ_dice": r["organ_dice"]}
                       for r in results] for run, results in runs.items()}}
    (out / "dice.json").write_text(json.dumps(detail, indent=2))
    print(f"wrote {path}: probe AUROC pretrained {probe['pretrained']} random {probe['random']}; mean Dice "
          f"pretrained {dice['pretrained']} random {dice['random']}; {wall:.0f} s")


def organ_probe(btcv, weights, args, seeds):
    """The organ-patch probe of the pre-trained branch and of random branches, with its baselines, over
    case-grouped 4-fold x 10 (a case's patches never on both sides; shared.demo.probe_over_seeds; random
    inits from 3 seeds, cycled: a Swin forward over every patch takes tens of seconds on a CPU); returns
    (its result, the case of every patch)."""
    from voco.export import branch_state_dict
    from voco.models import Swin
    from voco.probe import btcv_probe_set, feature_fn

    probe_set, cases = btcv_probe_set(btcv / "dataset_0.json", None, base_roi=32, num_crops=args.num_crops,
                                      roi=32, per_organ=1, seed=0, with_cases=True)
    state = branch_state_dict(weights, args.pretrained_branch)

    def build():
        return Swin(feature_size=12, hidden_dim=8, out_dim=8, window_size=2, double_input=True)

    def load(branch):
        missing = branch.load_state_dict(state, strict=False).missing_keys
        if any(not k.startswith("proj_head") for k in missing):
            raise RuntimeError(f"pre-trained encoder tensors missing: {missing[:5]}")
    found = probe_over_seeds(probe_set, build, load, seeds[:1], feature_fn=feature_fn, groups=cases, folds=4,
                             random_inits=3)
    return found, cases


def seen_statement(btcv, cases):
    """Which evaluation cases pre-training read (btcv.json's training list)."""
    from voco.data import load_datalist

    trained = {str(d["image"]) for d in load_datalist(btcv / "btcv.json", None)}
    val = {str(d["image"]) for d in load_datalist(btcv / "dataset_0.json", None, key="validation")}
    probe = sorted(set(cases))
    return (f"probe: {sum(c in trained for c in probe)} of {len(probe)} cases trained on; fine-tuning validation "
            f"(its Dice): {len(val & trained)} of {len(val)}; pretext: 0 of the {len(held_out_items(btcv))} "
            "held-out volumes")


def held_out_items(btcv):
    """btcv.json's validation volumes: pre-training reads its training list only."""
    from voco.data import load_datalist

    return load_datalist(btcv / "btcv.json", None, key="validation")


def pretext_scores(btcv, checkpoint, args, seeds, crops_per_volume=8):
    """Per seed, on the held-out volumes (btcv.json's validation list): VoCo's pretext for the pre-trained
    student (encoder and projection head) and a random one (seeded): the mean absolute error between the
    predicted overlap (ReLU-cosine of a random crop's and a base crop's embeddings) and the true overlap
    fraction, over every (random crop, base crop) pair; the trivial prediction is 0 everywhere (most pairs do
    not overlap); and how often the base crop predicted to overlap most is the one that overlaps most (chance
    1/9 on a 3x3 grid). The seed draws the crops (the same for both models). BatchNorm uses the crops' own batch
    statistics, as in pre-training (one batch per volume: its random and base crops together)."""
    import torch

    from shared.checkpoint import load_checkpoint
    from voco.data import VoCoCrops, base_dataset, pretrain_transforms
    from voco.losses import online_assign
    from voco.models import Swin

    def build():
        return Swin(feature_size=12, hidden_dim=64, out_dim=64, window_size=2, double_input=True)
    crops = VoCoCrops(32, 32, args.num_crops, crops_per_volume, aug=False)
    volumes = [v["image"] for v in base_dataset(held_out_items(btcv), pretrain_transforms(size=crops.volume_size))]
    state = load_checkpoint(checkpoint, map_location="cpu")
    state = state.get("state_dict", state)
    prefix = f"{args.pretrained_branch}."
    pretrained = build()
    pretrained.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    out = {"mae_pretrained": [], "mae_random": [], "mae_zero": [], "top1_pretrained": [], "top1_random": [],
           "n_volumes": len(volumes), "chance": 1.0 / crops.num_crops ** 2}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        drawn = [crops(v, rng) for v in volumes]
        torch.manual_seed(seed)
        for name, net in (("pretrained", pretrained), ("random", build())):
            net.train()  # batch statistics, as the pretext saw them; no gradient
            errors, hits = [], []
            with torch.no_grad():
                for d in drawn:
                    emb = net(torch.cat([d["image"], d["crops"]]))
                    s = len(d["image"])
                    predicted = online_assign(emb[:s], emb[s:]).double()
                    errors.append((predicted - d["labels"]).abs().mean())
                    hits.append((predicted.argmax(1) == d["labels"].argmax(1)).double().mean())
            out[f"mae_{name}"].append(float(torch.stack(errors).mean()))
            out[f"top1_{name}"].append(float(torch.stack(hits).mean()))
        out["mae_zero"].append(float(np.mean([d["labels"].abs().mean() for d in drawn])))
    return out


if __name__ == "__main__":
    main()
