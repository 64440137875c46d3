"""The `make demo` summary: each method's demo writes one row; this module gathers them.

    python -m shared.demo [--runs runs]      # prints the table, writes runs/demo/summary.md, summary.png, loss PNGs

A row holds, for each of its metrics (the frozen-feature probe and the fine-tuning), one score per seed for
the pre-trained and the random-init model. Seed s fixes everything downstream that is random (the random
init, the split or the batch order) and is the same for both models, so the two are paired by seed: the
table gives each mean with its 95 % t-interval over the seeds, and the t-interval of the paired difference
(pre-trained minus random); "gain" when that interval lies above zero, "loss" when below, "no" otherwise.
"""

import argparse
import json
import math
import os
import random
import statistics
import sys
import textwrap
from pathlib import Path

ROW_FIELDS = ("method", "data", "steps", "final_loss", "metrics", "wall_time_s", "loss_csv", "note")
METRIC_FIELDS = ("kind", "name", "seeds", "pretrained", "random")
KINDS = ("probe", "fine-tune")


def make_deterministic(seed=0, threads=None):
    """Seed Python, NumPy and torch; deterministic torch kernels where torch has them; fixed CPU threads.

    The same demo command then gives the same numbers on the same machine (the thread count changes the
    order of floating-point sums, so it is fixed too)."""
    import numpy as np
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS determinism on a GPU
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def metric(kind, name, seeds, pretrained, random_init):
    """One metric of a row: per-seed scores of the pre-trained and the random-init model."""
    if kind not in KINDS:
        raise ValueError(f"metric kind must be one of {KINDS}, got {kind!r}")
    seeds, pretrained, random_init = list(seeds), [float(v) for v in pretrained], [float(v) for v in random_init]
    if not len(seeds) == len(pretrained) == len(random_init):
        raise ValueError(f"{name}: {len(seeds)} seeds but {len(pretrained)} pre-trained and "
                         f"{len(random_init)} random-init scores")
    return {"kind": kind, "name": name, "seeds": seeds, "pretrained": pretrained, "random": random_init}


def probe_over_seeds(probe_set, build_encoder, load_weights, seeds, feature_fn=None, key="probe_linear_auroc",
                     resplit=True, batch_size=32):
    """Frozen-probe scores (shared.probe) of a pre-trained and a random-init encoder, one pair per seed.

    For seed s the random encoder is `build_encoder()` after torch.manual_seed(s); the pre-trained one is an
    encoder after `load_weights(encoder)` (its features are taken once: they do not depend on the seed). With
    `resplit` the probe set's samples are split afresh (stratified, 30 % held out) with seed s, so both scores
    vary with the split; otherwise the set's own split is used. Returns {"pretrained": [...], "random": [...],
    "all": [{"seed", "pretrained": scores, "random": scores}]}, the lists holding `key`."""
    import numpy as np
    import torch

    from shared.probe import PREFIX, pooled_features, probe_scores, split_indices

    x = torch.cat([probe_set.train_x, probe_set.test_x])
    y = np.concatenate([probe_set.train_y, probe_set.test_y])
    n_train = len(probe_set.train_x)

    def features(encoder):
        fn = feature_fn(encoder) if feature_fn else encoder
        return pooled_features(fn, (x[i:i + batch_size] for i in range(0, len(x), batch_size)), model=encoder)

    torch.manual_seed(seeds[0])
    encoder = build_encoder()
    load_weights(encoder)
    pretrained_features = features(encoder)
    out = {"pretrained": [], "random": [], "all": []}
    for seed in seeds:
        torch.manual_seed(seed)
        random_features = features(build_encoder())
        train, test = (split_indices(y, 0.3, seed) if resplit else (np.arange(n_train), np.arange(n_train, len(y))))
        scores = {}
        for name, f in (("pretrained", pretrained_features), ("random", random_features)):
            found = probe_scores(f[train], y[train], f[test], y[test], seed=seed)
            scores[name] = {PREFIX + k: float(v) for k, v in found.items() if not k.startswith("n_")}
            out[name].append(scores[name][key])
        out["all"].append({"seed": seed, **scores})
    return out


def write_row(method, runs="runs", **fields):
    """Write runs/demo/<method>/row.json with the summary fields (see ROW_FIELDS; `metrics`: a list of
    `metric(...)`)."""
    unknown = set(fields) - set(ROW_FIELDS)
    if unknown:
        raise ValueError(f"unknown demo row fields: {sorted(unknown)}")
    for m in fields.get("metrics") or []:
        if set(m) != set(METRIC_FIELDS):
            raise ValueError(f"{method}: a metric needs exactly {METRIC_FIELDS}, got {sorted(m)}")
    path = Path(runs) / "demo" / method / "row.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"method": method, **{k: fields.get(k) for k in ROW_FIELDS if k != "method"}}
    path.write_text(json.dumps(row, indent=2, default=str))
    return path


def t_interval(values, level=0.95):
    """(mean, low, high): the Student-t interval of the mean; low = high = mean for one value."""
    from scipy import stats

    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def compare(pretrained, random_init, level=0.95):
    """Means and t-intervals of both models and of their difference paired by seed, and the verdict."""
    if len(pretrained) != len(random_init):
        raise ValueError(f"paired by seed: {len(pretrained)} pre-trained vs {len(random_init)} random scores")
    diff = [p - r for p, r in zip(pretrained, random_init)]
    d_mean, d_low, d_high = t_interval(diff, level)
    enough = len(diff) >= 2
    verdict = "gain" if enough and d_low > 0 else "loss" if enough and d_high < 0 else "no"
    return {"n": len(diff), "pretrained": t_interval(pretrained, level), "random": t_interval(random_init, level),
            "difference": (d_mean, d_low, d_high), "excludes_zero": verdict != "no", "verdict": verdict}


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def _interval(triple):
    mean, low, high = triple
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def read_rows(runs="runs"):
    rows = []
    for path in sorted((Path(runs) / "demo").glob("*/row.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            print(f"warning: skipping unreadable {path}: {err}", file=sys.stderr)
    return rows


def table_lines(rows):
    """One markdown line per metric of every row (a row without metrics gets one line with its note)."""
    lines = ["| method | data | pre-training steps | final loss | metric | seeds | pre-trained mean [95 % CI] "
             "| random init mean [95 % CI] | difference [95 % CI] | gain? | wall time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = (f"| {r['method']} | {_fmt(r.get('data'))} | {_fmt(r.get('steps'))} | "
                f"{_fmt(r.get('final_loss'))} |")
        if not r.get("metrics"):
            lines.append(f"{head} {_fmt(r.get('note'))} | | | | | | {_fmt(r.get('wall_time_s'), 1)} |")
            continue
        for m in r["metrics"]:
            c = compare(m["pretrained"], m["random"])
            gain = {"gain": "**yes**", "loss": "no (lower)", "no": "no (CI holds 0)"}[c["verdict"]]
            lines.append(f"{head} {m['kind']}: {m['name']} | {c['n']} | {_interval(c['pretrained'])} | "
                         f"{_interval(c['random'])} | {_interval(c['difference'])} | {gain} | "
                         f"{_fmt(r.get('wall_time_s'), 1)} |")
    return lines


def summary_markdown(rows, plots=None, chart=None):
    text = "# Demo summary\n\n" + "\n".join(table_lines(rows)) + "\n"
    text += ("\nMeans over the seeds with 95 % Student-t intervals; the difference is paired by seed (the same "
             "seed gives both models the same random parts downstream). gain? = the interval of the "
             "difference lies above zero.\n")
    notes = [f"- {r['method']}: {r['note']}" for r in rows if r.get("note") and r.get("metrics")]
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    if chart:
        text += f"\n![pre-trained vs random init]({chart})\n"
    if plots:
        text += "\n## Pre-training loss\n\n" + "".join(f"![{m}]({p})\n" for m, p in plots) + "\n"
    return text


def plot_summary(rows, png):
    """A bar chart: one panel per metric, pre-trained vs random init, mean with its 95 % interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r["method"], m) for r in rows for m in (r.get("metrics") or [])]
    if not panels:
        raise ValueError("no row has metrics to plot")
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (method, m) in zip(axes.flat, panels):
        c = compare(m["pretrained"], m["random"])
        means = [c["pretrained"][0], c["random"][0]]
        errors = [[mean - low for mean, low, _ in (c["pretrained"], c["random"])],
                  [high - mean for mean, _, high in (c["pretrained"], c["random"])]]
        ax.bar([0, 1], means, yerr=errors, capsize=6, color=["tab:blue", "tab:gray"])
        ax.set_xticks([0, 1], ["pre-trained", "random"])
        verdict = {"gain": "gain", "loss": "lower", "no": "CI of diff. holds 0"}[c["verdict"]]
        name = textwrap.fill(f"{m['kind']}: {m['name']}", 38)
        ax.set_title(f"{method}\n{name}\n({verdict}, {c['n']} seeds)", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)


def write_summary(runs="runs"):
    """Gather the rows, plot each method's pre-training metrics and the bar chart, write summary.md."""
    from shared.runlog import plot_metrics

    demo_dir = Path(runs) / "demo"
    rows = read_rows(runs)
    plots = []
    for row in rows:
        csv_path = row.get("loss_csv")
        if csv_path and Path(csv_path).is_file():
            png = demo_dir / f"{row['method']}_loss.png"
            try:
                plot_metrics(csv_path, png, title=f"{row['method']} pre-training")
                plots.append((row["method"], png.name))
            except ValueError as err:
                print(f"warning: no loss plot for {row['method']}: {err}", file=sys.stderr)
    chart = None
    if any(r.get("metrics") for r in rows):
        chart = plot_summary(rows, demo_dir / "summary.png").name
    text = summary_markdown(rows, plots, chart)
    demo_dir.mkdir(parents=True, exist_ok=True)
    (demo_dir / "summary.md").write_text(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", default="runs", help="runs folder holding demo/<method>/row.json")
    args = parser.parse_args(argv)
    text = write_summary(args.runs)
    print(text)
    if not read_rows(args.runs):
        print("no method wrote a demo row yet", file=sys.stderr)
    print(f"written to {Path(args.runs) / 'demo' / 'summary.md'}")


if __name__ == "__main__":
    main()
