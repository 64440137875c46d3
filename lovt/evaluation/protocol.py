"""LR tuning, repeated runs and aggregation, without wandb.

For a task and a backbone: if the task has >= 2 candidate LRs, one run per LR (seed `seed`) in
`<task dir>/lr_tuning/lr_<lr>/`; the LR with the best validation value of the monitored metric (at its best
epoch) wins. Then `runs` new runs with that LR, run k with seed `seed + k` in `<task dir>/run_<k>/` (the
original's runs shared one folder and one seed, and some came out bit-identical; identical test values are
warned about here). A run folder holding results.json is reused, so an interrupted evaluation continues.

Aggregation per test metric: values of the runs, mean, std (ddof 1), n and the 95 % interval
1.96 * std / sqrt(n), written to `<results>/downstream_<task>.csv` (one row per model, columns as the
original's export) and summarised as a markdown table like the paper's (mean ± interval in %).
"""

import csv
import json
import math
import shutil
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .tasks import TASKS, get_task

Z95 = 1.96


def aggregate(values):
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"run_results": ";".join(f"{v:.6g}" for v in values), "mean": float(values.mean()), "std": std,
            "num_runs": len(values), "95_interval": Z95 * std / math.sqrt(len(values))}


def _weights_name(weights):
    return "random" if weights in (None, "random") else str(Path(weights).resolve())


def run_identity(task, weights, kwargs):
    """What makes two runs the same run: task, evaluated weights, lr, seed, input size and length."""
    def given(key, default):
        return default if kwargs.get(key) is None else kwargs[key]

    return {"task": task.name, "backbone_weights": _weights_name(weights),
            "learning_rate": given("learning_rate", task.learning_rate), "seed": given("seed", 12345),
            "input_size": given("input_size", 224), "max_epochs": given("max_epochs", None) or task.max_epochs,
            "max_steps": kwargs.get("max_steps")}


def _saved_identity(config):
    saved = {k: config.get(k) for k in ("task", "learning_rate", "seed", "input_size", "max_epochs", "max_steps")}
    return {**saved, "backbone_weights": _weights_name(config.get("backbone_weights"))}


def _run(job):
    from .engine import run_downstream  # imported in the worker (spawned processes on several GPUs)

    task, weights, folder, kwargs = job
    folder = Path(folder)
    config_file, done = folder / "config.json", folder / "results.json"
    if config_file.is_file():
        want, have = run_identity(task, weights, kwargs), _saved_identity(json.loads(config_file.read_text()))
        diffs = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
        if diffs:  # never reuse nor delete another configuration's run
            shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diffs.items())
            raise FileExistsError(f"{folder} holds a run of another configuration ({shown}): choose another "
                                  "--work_dir (or model name), or remove that folder")
        try:  # finished before: reused
            return json.loads(done.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            pass
    elif done.is_file():  # a results.json without config.json: reused if its lr and seed are the ones asked
        res = json.loads(done.read_text())
        if res.get("learning_rate") == kwargs.get("learning_rate") and res.get("seed") == kwargs.get("seed"):
            return res
    if folder.exists():  # the same run, interrupted: it starts over in a clean folder
        shutil.rmtree(folder)
    return run_downstream(task, weights, folder, **kwargs)


def _device_worker_init(queue):
    import os
    os.environ["LOVT_EVAL_DEVICE"] = queue.get()


def _run_on_worker_device(job):
    import os
    task, weights, folder, kwargs = job
    return _run((task, weights, folder, {**kwargs, "device": os.environ.get("LOVT_EVAL_DEVICE")}))


def run_jobs(jobs, devices=None):
    """Run jobs one after the other, or spread over `devices` (one worker process per device)."""
    if not devices or len(devices) < 2:
        return [_run(job) for job in jobs]
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = ctx.Manager().Queue()
    for d in devices:
        queue.put(d)
    with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_device_worker_init,
                             initargs=(queue,)) as pool:
        return list(pool.map(_run_on_worker_device, jobs))


def evaluate_task(task, weights, task_dir, *, runs=5, seed=12345, tune_lr=True, learning_rate=None,
                  devices=None, **run_kwargs):
    """LR tuning + `runs` runs of one task; returns {'task', 'learning_rate', 'lr_tuning', 'runs', 'metrics'}."""
    task = get_task(task) if isinstance(task, str) else task
    task_dir = Path(task_dir)
    tuning = {}
    if learning_rate is not None:
        lr = learning_rate
    elif len(task.lr_grid) >= 2 and tune_lr:
        jobs = [(task, weights, task_dir / "lr_tuning" / f"lr_{c:g}", {**run_kwargs, "learning_rate": c,
                                                                      "seed": seed}) for c in task.lr_grid]
        for c, res in zip(task.lr_grid, run_jobs(jobs, devices)):
            tuning[f"{c:g}"] = res["val"][task.monitor]
        lr = max(task.lr_grid, key=lambda c: tuning[f"{c:g}"])  # first of equals, in grid order
    else:  # a single candidate is used directly; no grid (or no tuning) -> the config lr
        lr = task.lr_grid[0] if len(task.lr_grid) == 1 else task.learning_rate
    jobs = [(task, weights, task_dir / f"run_{k}", {**run_kwargs, "learning_rate": lr, "seed": seed + k})
            for k in range(runs)]
    results = run_jobs(jobs, devices)
    metrics = {}
    for name in results[0]["test"]:
        values = [r["test"][name] for r in results]
        metrics[name] = aggregate(values)
        if name in task.metrics and len(values) > 1 and len(set(values)) < len(values):
            warnings.warn(f"{task.name}: runs with identical test {name} values {values} (seeds "
                          f"{[r['seed'] for r in results]})", stacklevel=2)
    summary = {"task": task.name, "learning_rate": lr, "lr_tuning": tuning, "runs": [str(task_dir / f"run_{k}")
               for k in range(runs)], "metrics": metrics}
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_task_csv(results_dir, task, model, summary):
    """Update `<results>/downstream_<task>.csv`: one row per model, for each of the task's test metrics
    <metric>_run_results, _mean, _std, _num_runs, _95_interval (as the original's export)."""
    path = Path(results_dir) / f"downstream_{task.name}.csv"
    rows = {}
    if path.is_file():
        with open(path, newline="") as f:
            rows = {r["name"]: r for r in csv.DictReader(f)}
    row = {"name": model, "learning_rate": summary["learning_rate"]}
    for metric in task.metrics:
        for key, value in summary["metrics"][metric].items():
            row[f"{metric}_{key}"] = value
    rows[model] = row
    columns = list(dict.fromkeys(k for r in rows.values() for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows.values())
    return path


PAPER_RESULTS = Path(__file__).with_name("paper_results.csv")  # the paper's tables, mean±CI in %


def paper_rows(path=PAPER_RESULTS):
    """{'paper: <method>': {task number: 'mean±ci'}} from the published tables."""
    with open(path, newline="") as f:
        return {f"paper: {r['method']}": {int(k.split("_")[1]): v for k, v in r.items() if k.startswith("task_")}
                for r in csv.DictReader(f)}


def results_table(results_dir, tasks=None, paper=False):
    """Markdown table: one row per model, one column per task number, 'mean±95%-interval' in percent;
    with `paper`, the paper's rows for the same tasks below."""
    results_dir = Path(results_dir)
    tasks = [TASKS[t] for t in tasks] if tasks else sorted(TASKS.values(), key=lambda t: t.number)
    cells, models = {}, []
    for task in tasks:
        path = results_dir / f"downstream_{task.name}.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                models += [r["name"]] if r["name"] not in models else []
                mean, ci = float(r[f"{task.reported}_mean"]), float(r[f"{task.reported}_95_interval"])
                cells[r["name"], task.number] = f"{100 * mean:.1f}±{100 * ci:.1f}"
    used = [t for t in tasks if any((m, t.number) in cells for m in models)]
    lines = ["| method | " + " | ".join(str(t.number) for t in used) + " |",
             "|---|" + "---|" * len(used)]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(cells.get((m, t.number), "-") for t in used) + " |")
    if paper:
        for m, values in paper_rows().items():
            lines.append(f"| {m} | " + " | ".join(values[t.number] for t in used) + " |")
    legend = "; ".join(f"{t.number} {t.name} ({t.reported})" for t in used)
    return "\n".join(lines) + f"\n\nTasks: {legend}. Mean ± 95 % interval (1.96·std/√n), in %.\n"


def write_results_table(results_dir, tasks=None, paper=False):
    path = Path(results_dir) / "results_table.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results_table(results_dir, tasks, paper))
    return path
