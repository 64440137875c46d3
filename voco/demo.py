"""`make demo-voco`: short VoCo pre-trainings on the sample CT, v1 (the CVPR 2024 recipe) and v2 (`--recipe v2`,
Large-Scale-Medical's), then for each: the pretext on held-out volumes, and, pre-trained vs random init with a
raw-input and a trivial baseline on every downstream row, a per-voxel liver head on the frozen encoder and (v1)
the frozen-feature organ-patch probe under per-patch intensity jitter (case-grouped 4-fold x 10). Writes
runs/demo/voco/row.json (v1) and runs/demo/voco-v2/row.json.

v1 keeps the pretext's meaning at CPU size: a 3x3 grid of 32^3 base crops (a 96x96x32 working volume), random
crops whose centres fall anywhere in the grid, so each overlaps 1-4 of the 9 base crops and has 5-8 negatives,
every crop doubled along the first axis (`--double_input`: 64x32x32 is the smallest SwinUNETR input whose 1/32
map keeps 2 voxels), feature_size 12, window 2. v2 cannot double its input, so its crops are 64^3: a 2x2 grid
(128x128x64 working volume, the foreground box resized to it, `--window resize`), one volume per step. Both
pre-trained encoders are the networks that started from the random-init encoder of seed 0. Why these settings
and what the rows show: voco/README.md, "Demo".
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import functools
import json
import resource
import shutil
import time

import numpy as np
import torch

from shared.demo import make_deterministic, metric, probe_metric, probe_over_seeds, write_row
from shared.probe import ProbeSet
from voco import train
from voco.demo_tasks import (
    frozen_head_scores,
    jitter_intensity,
    pretext_scores,
    v1_predictor,
    v2_predictor,
)

TINY = ["--feature_size", "12", "--window_size", "2", "--use_checkpoint", "False"]
HEAD = 64  # projection-head widths of both tiny pre-trainings


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


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", default="data/sample", help="sample-data root (btcv/ is generated if absent)")
    p.add_argument("--runs", default="runs")
    p.add_argument("--steps", default=30, type=int, help="v1 pre-training steps")
    p.add_argument("--lr", default=1e-3, type=float, help="v1 pre-training peak LR (cosine, no warm-up)")
    p.add_argument("--num_crops", default=3, type=int, help="v1 base crops per axis (3: a 3x3 grid)")
    p.add_argument("--random_crops", default=2, type=int, help="v1 random crops per step (--sw_batch_size)")
    p.add_argument("--v2_steps", default=6, type=int, help="v2 pre-training steps (0: no v2 rows)")
    p.add_argument("--v2_lr", default=1e-3, type=float, help="v2 pre-training peak LR (cosine, no warm-up)")
    p.add_argument("--v2_num_crops", default=2, type=int, help="v2 base crops per axis (of 64^3)")
    p.add_argument("--seeds", default=3, type=int, help="downstream seeds (0, 1, ...)")
    p.add_argument("--repeats", default=10, type=int, help="repetitions of the probe's case-grouped 4-fold")
    p.add_argument("--jitter_scale", default=0.3, type=float,
                   help="probe patches: per-patch contrast factor drawn from U(1 - s, 1 + s)")
    p.add_argument("--jitter_shift", default=0.2, type=float,
                   help="probe patches: per-patch brightness offset from U(-s, s) on the [0, 1] scale")
    p.add_argument("--threads", default=1, type=int, help="torch CPU threads (fixed: results depend on it)")
    p.add_argument("--pretrained_branch", default="student", choices=["student", "teacher"],
                   help="v1 branch: student (same start as the random run of seed 0) or the EMA teacher (the "
                        "released weights' branch), which started from its own independent random init")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    make_deterministic(0, args.threads)
    t0, c0 = time.time(), cpu_seconds()
    btcv = sample_btcv(args.sample)
    seeds = list(range(args.seeds))
    out = Path(args.runs) / "demo" / "voco"
    for old in ("pretrain", "pretrain_v2", "finetune"):  # keep only the caches
        shutil.rmtree(out / old, ignore_errors=True)
    (out.parent / "voco-v2" / "row.json").unlink(missing_ok=True)  # no stale v2 row when --v2_steps 0

    def clock(what):
        print(f"{what}: {time.time() - t0:.0f} s wall, {cpu_seconds() - c0:.0f} s CPU so far")

    log1 = pretrain_v1(btcv, out, args)
    clock(f"v1 pre-training ({len(log1)} steps)")
    detail, metrics = {"seeds": seeds}, []
    metrics += v1_rows(btcv, out / "pretrain" / "model_final_epoch.pt", args, seeds, detail, clock)
    seen = seen_statement(btcv, detail.pop("cases"))
    write_row("voco", runs=args.runs, data="sample btcv CT (6 train / 2 val)", steps=len(log1),
              final_loss=float(log1[-1]["loss"]), wall_time_s=round(time.time() - t0, 1),
              loss_csv=(out / "pretrain" / "voco_pretrain.metrics.csv").as_posix(), seen=seen, metrics=metrics,
              note=f"{cpu_seconds() - c0:.0f} s CPU")
    if args.v2_steps > 0:
        t2, c2 = time.time(), cpu_seconds()
        log2 = pretrain_v2(btcv, out, args)
        clock(f"v2 pre-training ({len(log2)} steps)")
        metrics2 = v2_rows(btcv, out / "pretrain_v2" / "model_final_epoch.pt", args, seeds, detail, clock)
        write_row("voco-v2", runs=args.runs, data="sample btcv CT (6 train / 2 val)", steps=len(log2),
                  final_loss=float(log2[-1]["loss"]), wall_time_s=round(time.time() - t2, 1),
                  loss_csv=(out / "pretrain_v2" / "voco_pretrain.metrics.csv").as_posix(),
                  seen=seen_statement(btcv),
                  metrics=metrics2, note=f"--recipe v2, {cpu_seconds() - c2:.0f} s CPU")
    (out / "detail.json").write_text(json.dumps(detail, indent=2))
    clock("done")


# ------------------------------------------------------------------------------------------ pre-training

def pretrain_v1(btcv, out, args):
    """The tiny v1 pre-training (seed 0); returns its metrics rows."""
    train.main(["--logdir", str(out / "pretrain"), "--json_list", str(btcv / "btcv.json"),
                "--batch_size", "1", "--sw_batch_size", str(args.random_crops), "--base_roi", "32",
                "--num_crops", str(args.num_crops), "--roi_x", "32", "--double_input", "True",
                "--hidden_dim", str(HEAD), "--out_dim", str(HEAD), "--num_steps", str(args.steps),
                "--warmup_steps", "0", "--lr", str(args.lr), "--eval_num", str(args.steps), "--save_every", "0",
                "--workers", "0", "--seed", "0", "--cache_dir", str(out / "cache_pretrain"), *TINY])
    return list(csv.DictReader(open(out / "pretrain" / "voco_pretrain.metrics.csv")))


V2_SPACING = ("4", "4", "5")  # the sample CT's own voxel size (mm): the box is resized to the window anyway


def pretrain_v2(btcv, out, args):
    """The tiny v2 pre-training (seed 0, one volume of 1 random + the grid's base crops of 64^3 per step)."""
    train.main(["--recipe", "v2", "--logdir", str(out / "pretrain_v2"), "--json_list", str(btcv / "btcv.json"),
                "--batch_size", "1", "--sw_batch_size", "1", "--num_crops", str(args.v2_num_crops),
                "--hidden_dim", str(HEAD), "--out_dim", str(HEAD), "--num_steps", str(args.v2_steps),
                "--warmup_steps", "0", "--lr", str(args.v2_lr), "--eval_num", str(args.v2_steps), "--save_every", "0",
                "--workers", "0", "--seed", "0", "--cache_dir", str(out / "cache_pretrain_v2"), "--window", "resize",
                "--space_x", V2_SPACING[0], "--space_y", V2_SPACING[1], "--space_z", V2_SPACING[2],
                "--device", "cpu", *TINY])
    return list(csv.DictReader(open(out / "pretrain_v2" / "voco_pretrain.metrics.csv")))


def checkpoint_state(path):
    from shared.checkpoint import load_checkpoint

    state = load_checkpoint(path, map_location="cpu")
    return state.get("state_dict", state)


# ------------------------------------------------------------------------------------------------ v1

def v1_rows(btcv, weights, args, seeds, detail, clock):
    from voco.data import VoCoCrops, base_dataset, pretrain_transforms
    from voco.models import Swin

    def build(seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        return Swin(feature_size=12, hidden_dim=HEAD, out_dim=HEAD, window_size=2, double_input=True)
    prefix = f"{args.pretrained_branch}."
    pretrained = build()
    pretrained.load_state_dict({k[len(prefix):]: v for k, v in checkpoint_state(weights).items()
                                if k.startswith(prefix)})
    crops = VoCoCrops(32, 32, args.num_crops, 4, aug=False)  # 4 random crops per volume and seed
    volumes = [v["image"] for v in base_dataset(held_out_items(btcv), pretrain_transforms(size=crops.volume_size))]
    pretext = pretext_scores(volumes, crops, pretrained, build, v1_predictor, seeds)
    clock(f"v1 pretext: MAE {np.mean(pretext['mae_pretrained']):.3f} vs {np.mean(pretext['mae_random']):.3f}")
    probe, detail["cases"] = organ_probe(btcv, pretrained, build, args, seeds, base_roi=32,
                                         num_crops=args.num_crops)
    clock(f"v1 probe: {np.mean(probe['pretrained']):.3f} vs {np.mean(probe['random']):.3f}, "
          f"raw {np.mean(probe['raw']):.3f}")
    head = liver_head(btcv, pretrained, build, args, seeds)
    clock(f"v1 frozen liver head: {np.mean(head['pretrained']):.3f} vs {np.mean(head['random']):.3f}, "
          f"raw {np.mean(head['raw']):.3f}")
    detail["v1"] = {"pretext": pretext, "probe": probe["all"], "liver_head": head}
    return [*pretext_metrics(pretext, seeds, "v1"),
            probe_metric(f"v1, 13 organ patches, intensity-jittered, macro linear AUROC, case-grouped 4-fold x "
                         f"{args.repeats}", probe),
            liver_metric(head, seeds, "v1")]


def liver_metric(head, seeds, recipe):
    return metric("probe", f"{recipe}, liver Dice of a per-voxel logistic head on the frozen encoder (96x96x32, 2 val "
                  "volumes); trivial: nothing; raw: the same head on raw voxels and local means", seeds,
                  head["pretrained"], head["random"], trivial=head["trivial"], raw=head["raw"])


def pretext_metrics(pretext, seeds, recipe):
    n = pretext["n_volumes"]
    return [metric("pretext", f"{recipe}, {n} held-out volumes, overlap-prediction MAE over (random crop, base "
                   "crop) pairs; trivial: 0 everywhere", seeds, pretext["mae_pretrained"], pretext["mae_random"],
                   trivial=pretext["mae_zero"], lower_is_better=True),
            metric("pretext", f"{recipe}, the same crops, the most-overlapping base crop found (top-1; chance "
                   f"{pretext['chance']:.3f})", seeds, pretext["top1_pretrained"], pretext["top1_random"],
                   trivial=pretext["chance"])]


def organ_probe(btcv, pretrained, build, args, seeds, base_roi, num_crops):
    """The organ-patch probe (voco/probe.py's patches, cut in the recipe's pre-training geometry, then
    intensity-jittered per patch with seed 0: the same patches for every arm) of the pre-trained and of random
    encoders, with its baselines, over case-grouped 4-fold x --repeats (a case's patches never on both sides;
    random inits from 3 seeds, cycled: a Swin forward over every patch takes seconds on a CPU); returns (its result,
    the case of every patch)."""
    from voco.probe import btcv_probe_set, feature_fn

    probe_set, cases = btcv_probe_set(btcv / "dataset_0.json", None, base_roi=base_roi, num_crops=num_crops,
                                      roi=base_roi, per_organ=1, seed=0, with_cases=True)
    rng = np.random.default_rng(0)
    jittered = jitter_intensity(torch.cat([probe_set.train_x, probe_set.test_x]), rng, args.jitter_scale,
                                args.jitter_shift)
    n = len(probe_set.train_x)
    probe_set = ProbeSet(jittered[:n], probe_set.train_y, jittered[n:], probe_set.test_y, probe_set.name)
    found = probe_over_seeds(probe_set, build, lambda branch: branch.load_state_dict(pretrained.state_dict()),
                             seeds[:1], feature_fn=feature_fn, groups=cases, folds=4, repeats=args.repeats,
                             random_inits=3)
    return found, cases


@functools.lru_cache(maxsize=4)  # v1's and v2's liver heads read the same volumes
def labelled_volumes(btcv, key, size):
    """(N x 1 x X x Y x Z image tensor, N x X x Y x Z label tensor) of dataset_0.json's `key` cases in the
    probe's working geometry (voco/probe.py: HU window, foreground box resized to `size`)."""
    from voco.data import load_datalist
    from voco.probe import _volume_transform

    transform = _volume_transform(size, -175.0, 250.0)
    items = [transform(item) for item in load_datalist(btcv / "dataset_0.json", None, key=key,
                                                      keys=("image", "label"))]
    return (torch.stack([torch.as_tensor(d["image"]).float() for d in items]),
            torch.stack([torch.as_tensor(d["label"])[0].long() for d in items]))


def liver_head(btcv, pretrained, build, args, seeds):
    """frozen_head_scores on the 96x96x32 working volumes (v1's pre-training geometry; v2's encoder gets the same
    volumes): trained on dataset_0.json's 6 training cases, scored on its 2 validation cases."""
    size = (args.num_crops * 32, args.num_crops * 32, 32)
    return frozen_head_scores(*labelled_volumes(btcv, "training", size), *labelled_volumes(btcv, "validation", size),
                              pretrained, build, seeds)


# ------------------------------------------------------------------------------------------------ v2

def v2_rows(btcv, weights, args, seeds, detail, clock):
    from voco.data import base_dataset
    from voco.v2.data import v2_crops, v2_transforms
    from voco.v2.model import VoCoV2

    def build(seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        return VoCoV2(feature_size=12, hidden_dim=HEAD, out_dim=HEAD, window_size=2)
    pretrained = build()
    pretrained.load_state_dict(checkpoint_state(weights))
    crops = v2_crops(64, args.v2_num_crops, 2, aug=False)  # 2 random crops per volume and seed (64^3: slow)
    transform = v2_transforms(crops.volume_size, spacing=tuple(float(s) for s in V2_SPACING), window="resize")
    volumes = [v["image"] for v in base_dataset(held_out_items(btcv), transform)]
    pretext = pretext_scores(volumes, crops, pretrained, build, v2_predictor, seeds)
    clock(f"v2 pretext: MAE {np.mean(pretext['mae_pretrained']):.3f} vs {np.mean(pretext['mae_random']):.3f}")

    def backbone(seed=None):
        return build(seed).backbone
    head = liver_head(btcv, pretrained.backbone, backbone, args, seeds)
    clock(f"v2 frozen liver head: {np.mean(head['pretrained']):.3f} vs {np.mean(head['random']):.3f}, "
          f"raw {np.mean(head['raw']):.3f}")
    detail["v2"] = {"pretext": pretext, "liver_head": head}
    return [*pretext_metrics(pretext, seeds, "v2"), liver_metric(head, seeds, "v2")]


# ------------------------------------------------------------------------------------- what was seen

def seen_statement(btcv, probe_cases=None):
    """Which evaluation cases pre-training read (btcv.json's training list, the same for v1 and v2)."""
    from voco.data import load_datalist

    trained = {str(d["image"]) for d in load_datalist(btcv / "btcv.json", None)}
    fitted, scored = ({str(d["image"]) for d in load_datalist(btcv / "dataset_0.json", None, key=key)}
                      for key in ("training", "validation"))
    probe = (f"organ probe: {sum(c in trained for c in set(probe_cases))} of {len(set(probe_cases))} cases trained "
             "on; " if probe_cases is not None else "")
    return (f"{probe}liver head: fitted on {len(fitted & trained)} of {len(fitted)} cases seen, scored on "
            f"{len(scored & trained)} of {len(scored)} seen; pretext: 0 of the {len(held_out_items(btcv))} held-out "
            "volumes")


def held_out_items(btcv):
    """btcv.json's validation volumes: pre-training reads its training list only."""
    from voco.data import load_datalist

    return load_datalist(btcv / "btcv.json", None, key="validation")


if __name__ == "__main__":
    main()
