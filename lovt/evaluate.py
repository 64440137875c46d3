"""LoVT's localized downstream evaluation (the original's evaluation_job.py, without wandb).

    python lovt/evaluate.py evaluate_downstream <model> [--evaluate_extended] [--no-evaluate_basic]
    python lovt/evaluate.py evaluate_baseline_downstream random|ImageNet|<baseline> [--weights FILE]
    python lovt/evaluate.py run_task <task> --weights FILE|random --out DIR [--lr LR --seed S]
    python lovt/evaluate.py table [--paper]  # results/results_table.md from results/downstream_*.csv
    python lovt/evaluate.py tasks            # the 18 tasks

<model> is a pre-training run in <models_base_path>/pretraining/<model>/checkpoints/backbone_weights.pt,
a run folder, or any file holding a torchvision-layout ResNet-50 (backbone_weights.pt of LoVT, ConVIRT,
CLIP, the baselines, DiRA's exported encoder, ...). Baselines: `random` (torchvision init), `ImageNet`
(give the ImageNet file with --weights, e.g. resnet50-0676ba61.pth; nothing is downloaded) or a folder
<models_base_path>/baselines/<name>/checkpoints/backbone_weights.pt. basic = task 5 (rsna_frozen_10, no LR
tuning), extended = the other 17 tasks with LR tuning; --tasks picks tasks by name or number.
Datasets: --datasets_root (default $LOVT_DATASETS or datasets/) holding the original folder names
(RSNA-Pneunomia-Detection, ...), or --sample_root for the sample data, or --dataset_folder NAME=DIR.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os

from lovt.evaluation.protocol import evaluate_task, write_results_table, write_task_csv
from lovt.evaluation.tasks import BASIC_TASKS, EXTENDED_TASKS, TASKS, get_task


def resolve_model(model, models_base_path="models"):
    """A weights file for a pre-trained model name, run folder or file."""
    p = Path(model)
    if p.is_file():
        return p
    for candidate in (p / "checkpoints" / "backbone_weights.pt",
                      Path(models_base_path) / "pretraining" / model / "checkpoints" / "backbone_weights.pt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no backbone weights for model {model!r}: looked for {p}, {p}/checkpoints/"
                            f"backbone_weights.pt and {models_base_path}/pretraining/{model}/checkpoints/")


def model_name(model):
    """Name of a model in folders and tables: the run's name for <run>/checkpoints/<file>, else the file stem."""
    p = Path(model)
    if not p.exists():
        return model
    if p.is_dir():
        return p.resolve().name
    return p.parent.parent.name if p.parent.name == "checkpoints" else p.stem


def resolve_baseline(name, weights=None, models_base_path="models"):
    if weights:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"--weights {weights} not found")
        return Path(weights)
    if name == "random":
        return "random"
    path = Path(models_base_path) / "baselines" / name / "checkpoints" / "backbone_weights.pt"
    if path.is_file():
        return path
    hint = " (give the ImageNet ResNet-50 file with --weights)" if name == "ImageNet" else ""
    raise FileNotFoundError(f"baseline {name!r}: {path} not found{hint}")


def select_tasks(args):
    if args.tasks:
        return [get_task(t.strip()).name for t in args.tasks.split(",") if t.strip()]
    return list(BASIC_TASKS if args.evaluate_basic else ()) + list(EXTENDED_TASKS if args.evaluate_extended else ())


def where_from(args):
    where = {}
    if args.sample_root:
        where["sample_root"] = args.sample_root
    if args.datasets_root:
        where["datasets_root"] = args.datasets_root
    if args.dataset_folder:
        where["folders"] = dict(item.split("=", 1) for item in args.dataset_folder)
    return where


def run_kwargs(args):
    return {"input_size": args.input_size, "where": where_from(args), "max_epochs": args.max_epochs,
            "max_steps": args.max_steps, "num_workers": args.num_workers,
            "persistent_workers": args.persistent_workers, "device": args.device,
            "reset_lr_every_step": args.reset_lr_every_step, "progress": not args.quiet}


def evaluate_model(name, weights, args):
    """All selected tasks for one backbone; returns {task: summary}; updates the csvs and the table."""
    if args.sample_root:  # the sample data is prepared in place on first use
        from lovt.evaluation.data import DATASETS
        from lovt.evaluation.demo import prepare_sample
        for family in {DATASETS[get_task(t).dataset][1] for t in select_tasks(args)}:
            prepare_sample(args.sample_root, family)
    out = {}
    devices = [f"cuda:{g}" for g in args.gpus.split(",")] if args.gpus else None
    for task_name in select_tasks(args):
        task = get_task(task_name, batch_size=args.batch_size)
        tune = task_name not in BASIC_TASKS and not args.no_lr_tuning
        summary = evaluate_task(task, weights, Path(args.work_dir) / name / task_name, runs=args.runs,
                                seed=args.seed, tune_lr=tune, learning_rate=args.lr, devices=devices,
                                **run_kwargs(args))
        write_task_csv(args.results, task, name, summary)
        m = summary["metrics"][task.reported]
        print(f"{name} {task_name}: {task.reported} {100 * m['mean']:.1f}±{100 * m['95_interval']:.1f} "
              f"(lr {summary['learning_rate']:g}, {m['num_runs']} runs)")
        out[task_name] = summary
    print(f"table: {write_results_table(args.results)}")
    return out


def add_common(p):
    p.add_argument("--tasks", default=None, help="comma-separated task names or numbers (overrides basic/extended)")
    p.add_argument("--evaluate_basic", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--evaluate_extended", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--models_base_path", default="models")
    p.add_argument("--datasets_root", default=os.environ.get("LOVT_DATASETS", "datasets"),
                   help="folder holding the prepared downstream datasets under their original names "
                        "(default: $LOVT_DATASETS or datasets)")
    p.add_argument("--sample_root", default=None,
                   help="use the sample data (python -m shared.sample_data), prepared in place on first use")
    p.add_argument("--dataset_folder", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--work_dir", default="logs/downstream_runs")
    p.add_argument("--results", default="results")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=12345, help="run k uses seed + k")
    p.add_argument("--lr", type=float, default=None, help="fixed learning rate (no tuning)")
    p.add_argument("--no_lr_tuning", action="store_true", help="use the config lr of each task")
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=None, help="override the tasks' batch size")
    p.add_argument("--max_epochs", type=int, default=None)
    p.add_argument("--max_steps", type=int, default=None, help="stop each run after this many batches")
    p.add_argument("--num_workers", type=int, default=10)
    p.add_argument("--persistent_workers", action="store_true",
        help="keep the loader workers alive between epochs (persistent_workers; off as the original)")
    p.add_argument("--device", default=None)
    p.add_argument("--gpus", default=None, help="e.g. 0,1,2,3: runs spread over these GPUs")
    p.add_argument("--reset_lr_every_step", action=argparse.BooleanOptionalAction, default=True,
                   help="fine-tuning: reset the lr at every batch after warm-up (the original)")
    p.add_argument("--quiet", action="store_true")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("evaluate_downstream", help="evaluate a pre-trained model")
    d.add_argument("model")
    d.add_argument("--name", default=None, help="name in folders and tables (default: from the model path)")
    add_common(d)
    b = sub.add_parser("evaluate_baseline_downstream", help="evaluate random, ImageNet or a trained baseline")
    b.add_argument("baseline")
    b.add_argument("--weights", default=None, help="weights file (required for ImageNet)")
    add_common(b)
    r = sub.add_parser("run_task", help="one run of one task")
    r.add_argument("task")
    r.add_argument("--weights", default="random")
    r.add_argument("--out", required=True)
    add_common(r)
    t = sub.add_parser("table", help="write results/results_table.md")
    t.add_argument("--results", default="results")
    t.add_argument("--paper", action="store_true", help="add the paper's rows for the same tasks")
    sub.add_parser("tasks", help="list the 18 tasks")
    args = p.parse_args(argv)

    if args.command == "tasks":
        for task in TASKS.values():
            grid = ", ".join(f"{c:g}" for c in task.lr_grid) or "-"
            print(f"{task.number:2d} {task.name:32s} {task.dataset:18s} {task.head:7s} "
                  f"{'frozen' if task.frozen else 'finetune':8s} {task.reported:18s} lr {task.learning_rate:g} "
                  f"grid [{grid}]")
    elif args.command == "table":
        print(Path(write_results_table(args.results, paper=args.paper)).read_text())
    elif args.command == "run_task":
        from lovt.evaluation.engine import run_downstream
        task = get_task(args.task, batch_size=args.batch_size)
        res = run_downstream(task, args.weights, args.out, learning_rate=args.lr, seed=args.seed, **run_kwargs(args))
        print(json.dumps(res["test"], indent=2))
    elif args.command == "evaluate_downstream":
        evaluate_model(args.name or model_name(args.model), resolve_model(args.model, args.models_base_path), args)
    else:
        weights = resolve_baseline(args.baseline, args.weights, args.models_base_path)
        evaluate_model(args.baseline, weights, args)


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one line per warning, no source line
    main()
