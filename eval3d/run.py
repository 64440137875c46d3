"""Evaluate 3D encoders on NCC, NCS and BTCV: full fine-tuning and frozen encoder, label fractions, seeds.

    python -m eval3d.run --encoder sg=runs/semantic_genesis/en_de/semantic_genesis_chest_ct.pt \
        --encoder voco=VoCo_10k.pt --tasks ncc,ncs,btcv --modes full,frozen --fractions 1,10,100 \
        --seeds 0,1,2 --luna16 data/LUNA16 --btcv data/BTCV --out runs/eval3d

Every architecture among the encoders gets a random-init arm of the same configuration (and, with --archs,
one of the defaults even without a pre-trained encoder). Each finished run is written at once to
<out>/results.json under (task, mode, fraction, encoder, seed) with the settings it ran with; a rerun skips
the runs whose settings and encoder are unchanged. Then <out>/<task>.md, <out>/<task>_label_efficiency.png
and <out>/eval3d.md (every task) are written.
"""

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from eval3d.encoders import (
    ARCHS,
    DEFAULT_CONFIG,
    build_network,
    key_report,
    parse_encoder,
    random_arm,
    trust_checkpoints,
)
from eval3d.report import footer, plot_label_efficiency, run_key, task_markdown
from eval3d.runtime import AMP_CHOICES, Runtime
from eval3d.tasks import TASKS
from eval3d.train import run_baseline, run_one
from shared.checkpoint import replace_atomic

MODES = ("full", "frozen")
# runs/demo checkpoints `make demo` (and `python transvw/demo.py --run`) leave behind
DEMO_CHECKPOINTS = {"semantic_genesis": "semantic_genesis/pretrain/en_de/semantic_genesis_chest_ct.pt",
                    "transvw": "transvw/pretrain/en_de/TransVW_chest_ct.pt",
                    "voco": "voco/pretrain/model_final_epoch.pt"}
# The budget per task when no flag overrides it: the originals' optimiser, learning rate and batch
# (Models Genesis family: SGD 1e-3, batch 8; VoCo BTCV: AdamW 3e-4, 4 patches of 96^3); the step counts are ours.
BUDGETS = {"ncc": {"optimizer": "sgd", "lr": 1e-3, "batch_size": 8, "steps": 2000},
           "ncs": {"optimizer": "sgd", "lr": 1e-3, "batch_size": 8, "steps": 2000},
           "btcv": {"optimizer": "adamw", "lr": 3e-4, "batch_size": 4, "steps": 25000}}
DATA_KEYS = {"ncc": ("luna16", "cube", "neg_per_pos"), "ncs": ("luna16", "ncs_data", "cube", "neg_per_pos"),
             "btcv": ("btcv", "btcv_json", "spacing", "roi", "sw_batch_size", "overlap")}


def csv_list(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", action="append", default=[], metavar="NAME=PATH[:ARCH]",
                   help=f"a checkpoint or release folder (ARCH: {', '.join(ARCHS)}; read from the file if left out)")
    p.add_argument("--demo_runs", default=None, help="also evaluate the `make demo` checkpoints under this folder")
    p.add_argument("--archs", type=csv_list(str), default=[], help="random-init arms to include even without a "
                   "pre-trained encoder of that architecture (e.g. unet3d,swinunetr)")
    p.add_argument("--trusted", action="store_true",
                   help="unpickle any object in the checkpoints (the released Genesis-family .pt files)")
    p.add_argument("--tasks", type=csv_list(str), default=list(TASKS))
    p.add_argument("--modes", type=csv_list(str), default=list(MODES))
    p.add_argument("--fractions", type=csv_list(int), default=[1, 10, 100], help="percent of the training labels")
    p.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    p.add_argument("--out", default="runs/eval3d")
    d = p.add_argument_group("data")
    d.add_argument("--luna16", default=None, help="LUNA16 root: subset*/*.mhd, candidates.csv, annotations.csv")
    d.add_argument("--ncs_data", default=None, help="NCS cubes: {train,val,test}_{x,y}.npy (else LUNA16 spheres)")
    d.add_argument("--btcv", default=None, help="BTCV root: imagesTr/, labelsTr/ and --btcv_json")
    d.add_argument("--btcv_json", default="dataset_0.json")
    d.add_argument("--cube", type=int, nargs=3, default=[64, 64, 32], help="NCC/NCS cube (x y z), the Genesis size")
    d.add_argument("--neg_per_pos", type=int, default=1, help="NCC/NCS: non-nodule candidates per nodule")
    d.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5], help="BTCV voxel size in mm")
    d.add_argument("--roi", type=int, nargs=3, default=[96, 96, 96], help="BTCV patch and sliding window")
    d.add_argument("--sw_batch_size", type=int, default=4)
    d.add_argument("--overlap", type=float, default=0.75, help="sliding-window overlap (VoCo's infer_overlap)")
    b = p.add_argument_group("budget (default: per task, see BUDGETS)")
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--batch_size", type=int, default=None)
    b.add_argument("--lr", type=float, default=None)
    b.add_argument("--optimizer", default=None, choices=["sgd", "adam", "adamw"])
    a = p.add_argument_group("random-init configuration where no checkpoint of the architecture gives one")
    a.add_argument("--width", type=int, default=DEFAULT_CONFIG["unet3d"]["width"], help="UNet3D")
    a.add_argument("--feature_size", type=int, default=DEFAULT_CONFIG["swinunetr"]["feature_size"])
    a.add_argument("--window_size", type=int, default=DEFAULT_CONFIG["swinunetr"]["window_size"])
    p.add_argument("--device", default=None, help="where the networks train and predict (default: cuda when "
                   "available, else cpu; the raw baselines always run on the CPU)")
    p.add_argument("--amp", default=None, choices=AMP_CHOICES, help="autocast of the forward passes (default: "
                   "bf16 on cuda, none on cpu); the losses are fp32 either way")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--report_only", action="store_true", help="write the tables and plots from <out>/results.json, "
                   "run nothing (e.g. while another process is still filling it)")
    return p


def task_args(args, task):
    """The settings one task's runs depend on: its budget and its data (what a cached run must match)."""
    budget = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in BUDGETS[task].items()}
    settings = {**budget, **{k: _plain(getattr(args, k)) for k in DATA_KEYS[task]}}
    return argparse.Namespace(**{**vars(args), **budget}), settings


def _plain(value):
    return str(value) if isinstance(value, Path) else value


def demo_encoders(runs_dir):
    """The demo checkpoints present under runs_dir; prints which are missing."""
    found = []
    for name, rel in DEMO_CHECKPOINTS.items():
        path = Path(runs_dir) / rel
        if path.is_file():
            found.append(f"{name}={path}")
        else:
            print(f"eval3d: no {name} demo checkpoint ({path} missing: run `make demo-{name}`"
                  f"{' or python transvw/demo.py --run' if name == 'transvw' else ''})")
    return found


def all_arms(args):
    encoders = [parse_encoder(text) for text in args.encoder]
    names = [e.name for e in encoders]
    if len(set(names)) != len(names):
        raise SystemExit(f"eval3d: two encoders share a name: {names}")
    arms = list(encoders)
    defaults = {"unet3d": {"width": args.width},
                "swinunetr": {"feature_size": args.feature_size, "window_size": args.window_size}}
    wanted = [(e.arch, e.config) for e in encoders] + [(a, defaults[a]) for a in args.archs
                                                         if a not in {e.arch for e in encoders}]
    for arch, config in wanted:
        arm = random_arm(arch, config)
        if arm.name not in [a.name for a in arms]:
            arms.append(arm)
    return arms


def describe(encoder):
    return {"arch": encoder.arch, "path": encoder.path, "config": encoder.config}


def arm_settings(settings, encoder, runtime):
    """What a network arm's cached result must match. bf16 autocast changes the arithmetic, hence the scores:
    it is part of the key (fp32 leaves the key as it was, so CPU results from before --amp still count). The
    device is not: fp32 on a GPU computes the same sums as on the CPU, up to rounding order; each entry still
    records its device."""
    amp = {} if runtime.amp == "none" else {"amp": runtime.amp}
    return {**settings, "encoder": describe(encoder), **amp}


class Results:
    """<out>/results.json: every finished run, written at once (atomically) so an interrupted run resumes."""

    def __init__(self, path):
        self.path = Path(path)
        self.runs = json.loads(self.path.read_text())["runs"] if self.path.is_file() else {}

    def done(self, key, settings):
        return key in self.runs and self.runs[key].get("settings") == settings

    def add(self, key, result):
        self.runs[key] = result
        text = json.dumps({"runs": self.runs}, indent=1, sort_keys=True).encode()
        replace_atomic(self.path, lambda f: f.write(text))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    trust_checkpoints(args.trusted)
    if args.demo_runs:
        args.encoder = demo_encoders(args.demo_runs) + args.encoder
    unknown = set(args.tasks) - set(TASKS) or set(args.modes) - set(MODES) or set(args.archs) - set(ARCHS)
    if unknown:
        raise SystemExit(f"eval3d: unknown {sorted(unknown)} (tasks {list(TASKS)}, modes {MODES}, archs {ARCHS})")
    for task, flag in (("ncc", "luna16"), ("btcv", "btcv")):
        if task in args.tasks and not getattr(args, flag):
            raise SystemExit(f"eval3d: --tasks {task} needs --{flag}")
    if "ncs" in args.tasks and not (args.luna16 or args.ncs_data):
        raise SystemExit("eval3d: --tasks ncs needs --ncs_data or --luna16")
    runtime = Runtime.from_flags(args.device, args.amp)
    print(f"eval3d: networks on {runtime.device}, amp {runtime.amp}; raw baselines on the CPU")
    arms = all_arms(args)
    if not arms:
        raise SystemExit("eval3d: nothing to evaluate: give --encoder, --demo_runs or --archs")
    out = Path(args.out)
    keys = {}
    for enc in arms:
        if enc.pretrained:
            keys[enc.name] = key_report(build_network(enc.arch, enc.config, 1), enc)
            k = keys[enc.name]
            print(f"eval3d: {enc.name} ({enc.arch} {enc.config}): {k['matched']}/{k['total']} tensors loaded, "
                  f"encoder {k['encoder_matched']}/{k['encoder_total']}, from {enc.path}")
    results = Results(out / "results.json")
    tasks = {name: TASKS[name]() for name in args.tasks}
    jobs = []
    for name in args.tasks:
        targs, settings = task_args(args, name)
        for seed in args.seeds:
            for fraction in args.fractions:
                jobs.append((name, "raw", fraction, None, seed, targs, settings))
                for mode in args.modes:
                    for enc in arms:
                        jobs.append((name, mode, fraction, enc, seed, targs, arm_settings(settings, enc, runtime)))
    todo = [] if args.report_only else [
        j for j in jobs if not results.done(run_key(j[0], j[1], j[2], j[3].name if j[3] else "-", j[4]), j[6])]
    print(f"eval3d: {len(jobs)} runs, {len(jobs) - len(todo)} already in {results.path}, {len(todo)} to do")
    for name, mode, fraction, enc, seed, targs, settings in tqdm(todo, desc="eval3d", unit="run"):
        task = tasks[name]
        split = task.split(targs, seed)
        if enc is None:
            result = run_baseline(task, split, fraction, seed)
            result["test_train_ratio"] = split.test_train_ratio
        else:
            result = run_one(task, split, enc, mode, fraction, seed, targs, runtime)
        results.add(run_key(name, mode, fraction, enc.name if enc else "-", seed), {**result, "settings": settings})
    write_reports(tasks, results.runs, arms, args, keys, out)
    return results.runs


def write_reports(tasks, runs, arms, args, keys, out):
    text = "# eval3d\n\n"
    if keys:
        text += "Encoders (tensors of the library network loaded from the checkpoint; encoder tensors):\n\n" + "".join(
            f"- {n}: {k['matched']}/{k['total']}, encoder {k['encoder_matched']}/{k['encoder_total']}\n"
            for n, k in keys.items()) + "\n"
    for name, task in tasks.items():
        png = plot_label_efficiency(task, runs, arms, args.modes, args.fractions, args.seeds,
                                    out / f"{name}_label_efficiency.png")
        budget = task_args(args, name)[1]
        note = ("Budget: " + ", ".join(f"{k} {budget[k]}" for k in ("steps", "batch_size", "optimizer", "lr"))
                + ". ")
        part, _ = task_markdown(task, runs, arms, args.modes, args.fractions, args.seeds, SPLITS_NOTE[name],
                                png.name, note)
        (out / f"{name}.md").write_text(f"# eval3d: {name}\n\n" + part + footer())
        text += part + "\n"
    (out / "eval3d.md").write_text(text + footer())
    print(text + footer())
    print(f"eval3d: tables and plots in {out}")


SPLITS_NOTE = {"ncc": "60 % of the scans train, 40 % test, by scan (patient), reshuffled per seed",
               "ncs": "60 % of the scans train, 40 % test, by scan (patient), reshuffled per seed "
                      "(a fixed split with --ncs_data)",
               "btcv": "by case: the json's cases in groups of the validation list's size, a fresh shuffle per "
                       "seed, one group tests"}


if __name__ == "__main__":
    sys.exit(main() and 0)
