"""A run's logs in its run folder: resolved config, metrics CSV, TensorBoard events, PNG pictures.

Runs that share a folder are told apart by name (shared/runfolder.py): `<name>.config.json`,
`<name>.metrics.csv`, `tensorboard/<name>/`; without a name the folder is the run's alone.

wandb is used only when asked for (`wandb="project-name"`), and then offline unless WANDB_MODE says
otherwise; the CSV and TensorBoard logs never depend on it.
"""

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from shared.runfolder import run_file


class RunLogger:
    """Append scalars to `<run_dir>/<name>.metrics.csv` (one row per call) and to TensorBoard
    (`<run_dir>/tensorboard/<name>/`); `name` None: `metrics.csv` and `tensorboard/`."""

    def __init__(self, run_dir, tensorboard=True, wandb=None, config=None, enabled=True, name=None):
        self.run_dir = Path(run_dir)
        self.name = name
        self.enabled = enabled  # False on ranks other than 0: every call is a no-op
        self.csv_path = run_file(self.run_dir, name, "metrics.csv")
        self._rows, self._columns = [], ["step"]
        self._tb = self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.csv_path.exists():  # resuming: keep what the earlier part of the run logged
            self._columns, self._rows = _read_rows(self.csv_path)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard" / (name or "")))
        if wandb:
            import wandb as wandb_lib
            os.environ.setdefault("WANDB_MODE", "offline")
            self._wandb = wandb_lib.init(project=str(wandb), dir=str(self.run_dir), config=config or {})
        if config is not None:
            self.save_config(config)

    def save_config(self, config):
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_file(self.run_dir, self.name, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True, default=str)

    def log(self, step, **scalars):
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        new = [k for k in values if k not in self._columns]
        row = {"step": int(step), **values}
        self._rows.append(row)
        if new:  # a column appeared: rewrite the file with the wider header
            self._columns += new
            self._write_all()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, self._columns).writerow(row)
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, int(step))
        if self._wandb is not None:
            self._wandb.log(values, step=int(step))

    def truncate(self, step):
        """Drop the rows logged after `step` (a resume from a checkpoint taken at `step`), so no step
        appears twice; returns how many rows were dropped."""
        if not self.enabled:
            return 0
        dropped = drop_rows_after(self.csv_path, step)
        if dropped:
            self._columns, self._rows = _read_rows(self.csv_path)
        return dropped

    def _write_all(self):
        _write_rows(self.csv_path, self._columns, self._rows)

    def close(self):
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(csv_path):
    """{column: (steps, values)} of the non-empty numeric entries of a metrics CSV."""
    series = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key == "step" or value in ("", None):
                    continue
                try:
                    point = float(row["step"]), float(value)
                except ValueError:
                    continue
                steps, values = series.setdefault(key, ([], []))
                steps.append(point[0])
                values.append(point[1])
    return series


def plot_metrics(csv_path, png_path, columns=None, title=None):
    """One subplot per metric (all numeric columns by default), against the step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(csv_path)
    names = [c for c in (columns or sorted(series)) if c in series]
    if not names:
        raise ValueError(f"{csv_path}: no numeric metric columns to plot")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = series[name]
        ax.plot(steps, values, marker="." if len(values) < 50 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return Path(png_path)


def save_image_grid(rows, png_path, titles=None, row_labels=None, cmap="gray", vmin=None, vmax=None):
    """Save a grid of 2-D images: `rows` is a list of rows, each a list of 2-D arrays."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.2 * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(np.asarray(row[j], dtype=np.float32), cmap=cmap, vmin=vmin, vmax=vmax)
            if i == 0 and titles and j < len(titles):
                ax.set_title(titles[j], fontsize=9)
        if row_labels and i < len(row_labels):
            axes[i, 0].text(-0.05, 0.5, row_labels[i], transform=axes[i, 0].transAxes,
                            ha="right", va="center", fontsize=8)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return Path(png_path)


def drop_rows_after(csv_path, step):
    """Remove the rows of a metrics CSV logged after `step`; returns how many (0 when there is no file).

    A run resumed from a checkpoint taken at `step` repeats the steps after it, so the rows a killed run
    logged past its last checkpoint would appear twice; this keeps the log as if the run had never stopped.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return 0
    columns, rows = _read_rows(csv_path)
    kept = [r for r in rows if r.get("step") in (None, "") or float(r["step"]) <= step]
    if len(kept) < len(rows):
        _write_rows(csv_path, columns, kept)
    return len(rows) - len(kept)


def _read_rows(csv_path):
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or ["step"]), list(reader)


def _write_rows(csv_path, columns, rows):
    """Atomically: a run killed while writing keeps the previous file."""
    tmp = Path(csv_path).with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)
