"""The `make demo` summary: each method's demo writes one row; this module gathers them.

    python -m shared.demo [--runs runs]      # prints the tables, writes runs/demo/summary.md, summary.png, loss PNGs

A row holds a method's metrics, each of one kind: "pretext" (the pre-training task itself, on data held out
from pre-training), "probe" (frozen features) or "fine-tune". A metric holds one score per seed (or per fold
of a repeated grouped K-fold) for the pre-trained and the random-init model, paired: the same seed or fold
gives both the same random parts downstream. A downstream metric also holds two baselines on the same seeds
or folds: a trivial predictor (chance AUROC, predict-nothing Dice, the majority class) and a raw-input
baseline (logistic regression on pooled raw voxels or pixels); it may hold a second, shorter budget.

Intervals are Student-t over the seeds (n - 1 degrees of freedom). Scores from K-fold resamples of one set
overlap, so there the variance is corrected (Nadeau and Bengio 2003, the corrected resampled t): the
squared standard error is (1/J + n_test/n_train) * s^2 over the J folds, J - 1 degrees of freedom.

Each downstream metric gets one verdict, by the rule in VERDICT_RULE (printed under the table).
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

ROW_FIELDS = ("method", "data", "steps", "final_loss", "metrics", "wall_time_s", "loss_csv", "note", "seen",
              "pretrain_seeds")
# A row that does not say otherwise comes from one pre-training run: its intervals are over downstream seeds
# or folds only, and how much a second pre-training seed would move the scores is not measured.
ONE_PRETRAINING = "1 (spread not measured)"
METRIC_FIELDS = ("kind", "name", "seeds", "pretrained", "random")
OPTIONAL_METRIC_FIELDS = ("trivial", "raw", "lower_is_better", "test_train_ratio", "short")
KINDS = ("pretext", "probe", "fine-tune")
DOWNSTREAM = ("probe", "fine-tune")
VERDICTS = ("gain", "faster start", "no gain", "uninformative")
CHANCE_AUROC = 0.5  # a constant score: AUROC 0.5 whatever the labels

VERDICT_RULE = """Verdict of a downstream row. An interval is the paired 95 % interval of a difference (seed by seed or
fold by fold; reversed for a lower-is-better metric); A *beats* B when the interval of A - B lies above zero.

- **gain**: pre-trained beats random init, and beats both the trivial and the raw-input baseline;
- **faster start**: not a gain at the row's budget, but a gain by the same rule at the shorter budget shown
  beneath it;
- **uninformative**: neither arm beats both baselines (at either budget): the task as run cannot show a
  difference;
- **no gain**: anything else (pre-trained level with or below random init, or a row without baselines).

A pretext row (the pre-training task on held-out data) compares pre-trained and random init only: gain when
pre-trained beats random init.

Every interval is over downstream seeds or folds of the pre-training runs in the Runs table's "pre-training
seeds" column (one run unless it says more): the spread between pre-training seeds is not in the intervals."""


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


# ----------------------------------------------------------------------------------------------
# a metric of a row

def _per_seed(name, what, values, n):
    """A baseline given once (a constant such as chance AUROC 0.5) or per seed -> a list of n floats."""
    if values is None:
        return None
    if isinstance(values, (int, float)):
        return [float(values)] * n
    values = [float(v) for v in values]
    if len(values) != n:
        raise ValueError(f"{name}: {n} seeds but {len(values)} {what} scores")
    return values


def short_budget(budget, pretrained, random_init, trivial=None, raw=None):
    """The scores of a metric at a second, shorter budget (same seeds), e.g. short_budget("3 epochs", ...)."""
    return {"budget": str(budget), "pretrained": [float(v) for v in pretrained],
            "random": [float(v) for v in random_init], "trivial": trivial, "raw": raw}


def metric(kind, name, seeds, pretrained, random_init, trivial=None, raw=None, lower_is_better=False,
           test_train_ratio=None, short=None):
    """One metric of a row: per-seed (or per-fold) scores of the pre-trained and the random-init model.

    trivial, raw: the baselines' scores (a number for a constant, or one per seed); lower_is_better for
    errors; test_train_ratio (n_test / n_train of the folds) when the scores are K-fold resamples, for the
    corrected interval; short: short_budget(...) scores at a shorter budget, for the "faster start" verdict.
    """
    if kind not in KINDS:
        raise ValueError(f"metric kind must be one of {KINDS}, got {kind!r}")
    seeds, pretrained, random_init = list(seeds), [float(v) for v in pretrained], [float(v) for v in random_init]
    if not len(seeds) == len(pretrained) == len(random_init):
        raise ValueError(f"{name}: {len(seeds)} seeds but {len(pretrained)} pre-trained and "
                         f"{len(random_init)} random-init scores")
    out = {"kind": kind, "name": name, "seeds": seeds, "pretrained": pretrained, "random": random_init}
    for field, values in (("trivial", trivial), ("raw", raw)):
        if values is not None:
            out[field] = _per_seed(name, field, values, len(seeds))
    if lower_is_better:
        out["lower_is_better"] = True
    if test_train_ratio is not None:
        if not test_train_ratio > 0:
            raise ValueError(f"{name}: test_train_ratio must be > 0, got {test_train_ratio}")
        out["test_train_ratio"] = float(test_train_ratio)
    if short is not None:
        n = len(short["pretrained"])
        if len(short["random"]) != n or n != len(seeds):
            raise ValueError(f"{name}: the short budget needs one pre-trained and one random score per seed")
        out["short"] = {**short, "trivial": _per_seed(name, "short trivial", short.get("trivial"), n),
                        "raw": _per_seed(name, "short raw", short.get("raw"), n)}
    return out


# ----------------------------------------------------------------------------------------------
# intervals and the verdict

def t_interval(values, level=0.95, test_train_ratio=None):
    """(mean, low, high): the Student-t interval of the mean; low = high = mean for one value.

    With test_train_ratio (n_test / n_train of K-fold resamples of one set), the Nadeau-Bengio corrected
    resampled t: standard error sqrt((1/J + ratio) * s^2), J - 1 degrees of freedom."""
    from scipy import stats

    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    n = len(values)
    factor = 1 / n + (test_train_ratio or 0.0)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * statistics.stdev(values) * math.sqrt(factor)
    return mean, mean - half, mean + half


def compare(pretrained, random_init, level=0.95, test_train_ratio=None):
    """Means and intervals of both models and of their difference paired by seed (or fold); `above` when the
    difference's interval lies above zero, `below` when under it (one seed: neither)."""
    if len(pretrained) != len(random_init):
        raise ValueError(f"paired by seed: {len(pretrained)} pre-trained vs {len(random_init)} random scores")
    diff = [p - r for p, r in zip(pretrained, random_init)]
    d_mean, d_low, d_high = t_interval(diff, level, test_train_ratio)
    enough = len(diff) >= 2
    return {"n": len(diff), "pretrained": t_interval(pretrained, level, test_train_ratio),
            "random": t_interval(random_init, level, test_train_ratio), "difference": (d_mean, d_low, d_high),
            "above": enough and d_low > 0, "below": enough and d_high < 0,
            "excludes_zero": enough and (d_low > 0 or d_high < 0)}


def _beats(a, b, lower_is_better, ratio, level):
    """A beats B: the paired interval of A - B (B - A for a lower-is-better metric) lies above zero."""
    first, second = (b, a) if lower_is_better else (a, b)
    return compare(first, second, level, ratio)["above"]


def _budget_verdict(scores, lower_is_better, ratio, level):
    """(pre-trained is a gain, some arm beats both baselines) at one budget."""
    baselines = [scores[k] for k in ("trivial", "raw") if scores.get(k) is not None]
    if len(baselines) < 2:
        return False, True  # without both baselines: no gain can be claimed, nothing shown uninformative

    def beats_baselines(arm):
        return all(_beats(scores[arm], b, lower_is_better, ratio, level) for b in baselines)
    pretrained_ok = beats_baselines("pretrained")
    gain = pretrained_ok and _beats(scores["pretrained"], scores["random"], lower_is_better, ratio, level)
    return gain, pretrained_ok or beats_baselines("random")


def verdict(m, level=0.95):
    """One of VERDICTS for a metric (see VERDICT_RULE)."""
    lower, ratio = bool(m.get("lower_is_better")), m.get("test_train_ratio")
    if m["kind"] == "pretext":
        return "gain" if _beats(m["pretrained"], m["random"], lower, ratio, level) else "no gain"
    gain, informative = _budget_verdict(m, lower, ratio, level)
    if gain:
        return "gain"
    short_gain, short_informative = (_budget_verdict(m["short"], lower, ratio, level) if m.get("short")
                                     else (False, False))
    if short_gain:
        return "faster start"
    if not informative and not short_informative:
        return "uninformative"
    return "no gain"


# ----------------------------------------------------------------------------------------------
# folds: repeated grouped K-fold

def grouped_folds(groups, k=5, repeats=10, seed=0):
    """[(repeat, fold, train_idx, test_idx)]: K folds of whole groups (patients, cases), `repeats` times, each
    repetition a fresh seeded shuffle of the groups (groups dealt to folds in turn, so fold sizes in groups
    differ by at most one). No group is ever on both sides of a fold."""
    import numpy as np

    groups = np.asarray(groups)
    names = np.unique(groups)
    if len(names) < k:
        raise ValueError(f"{k}-fold needs at least {k} groups, got {len(names)}")
    out = []
    for r in range(repeats):
        order = np.random.default_rng(seed + r).permutation(names)
        fold_of = {g: i % k for i, g in enumerate(order)}
        assign = np.array([fold_of[g] for g in groups])
        for f in range(k):
            out.append((r, f, np.flatnonzero(assign != f), np.flatnonzero(assign == f)))
    return out


def raw_features(x, size):
    """Raw inputs (N, C, *spatial) average-pooled to `size` per spatial dim and flattened: (N, C * size^d)."""
    import torch.nn.functional as F

    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[x.dim() - 2]
    return pool(x.float(), size).flatten(1).numpy()


def local_mean_features(x, sizes=(3, 7)):
    """Per pixel or voxel of (N, *spatial) images: the raw value and its local means over sizes^d windows ->
    (N * pixels, 1 + len(sizes)), in the order of x.reshape(-1)."""
    import torch
    import torch.nn.functional as F

    v = torch.as_tensor(x, dtype=torch.float32).unsqueeze(1)
    pool = {2: F.avg_pool2d, 3: F.avg_pool3d}[v.dim() - 2]
    means = [pool(v, k, stride=1, padding=k // 2, count_include_pad=False) for k in sizes]
    return torch.cat([v, *means], 1).movedim(1, -1).reshape(-1, 1 + len(sizes)).numpy()


def raw_segmentation(train_x, train_y, test_x, score, seed=0, max_samples=20000):
    """The raw-input segmentation baseline: voxel_segmentation on the raw value and its local means
    (local_mean_features). Returns the boolean prediction for test_x (its shape)."""
    import numpy as np

    found = voxel_segmentation(local_mean_features(train_x), train_y, local_mean_features(test_x), score, seed,
                               max_samples)
    return found.reshape(np.shape(test_x))


def voxel_segmentation(train_features, train_y, test_features, score, seed=0, max_samples=20000):
    """A per-pixel (per-voxel) logistic regression on given features ((pixels, C), in the order of
    train_y.reshape(-1)), fitted on a seeded balanced draw of training pixels; its threshold is the one of
    0.50, 0.51, ..., 0.99 that maximises `score(pred, target)` on the training images. Returns the flat
    boolean prediction of the test pixels."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(train_y).reshape(-1) > 0
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    n = min(len(pos), len(neg), max_samples // 2)
    if n == 0:
        raise ValueError("voxel_segmentation: the training masks need both foreground and background")
    draw = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    clf = LogisticRegression(max_iter=1000).fit(train_features[draw], labels[draw])
    train_prob = clf.predict_proba(train_features)[:, 1].reshape(np.shape(train_y))
    threshold = max(np.linspace(0.5, 0.99, 50), key=lambda t: score(train_prob > t, np.asarray(train_y)))
    return clf.predict_proba(test_features)[:, 1] > threshold


def probe_over_seeds(probe_set, build_encoder, load_weights, seeds, feature_fn=None, key="probe_linear_auroc",
                     resplit=True, batch_size=32, raw_pool=4, groups=None, folds=5, repeats=10, random_inits=None,
                     raw_fn=None):
    """Frozen-probe scores (shared.probe) of a pre-trained and a random-init encoder, with the baselines.

    The pre-trained encoder is an encoder after `load_weights(encoder)` (its features are taken once); a
    random one is `build_encoder()` after torch.manual_seed(s). Two designs:
    - `groups` given (patient or case of every sample, train then test samples of the set): repeated
      grouped K-fold (`folds` x `repeats`, see grouped_folds); repetition r draws the random encoder with
      seed seeds[0] + r (seeds[0] + r % random_inits when the encoder is too slow for one per repetition;
      the shuffles still differ); the scores are per fold and `test_train_ratio` is returned for the corrected
      interval;
    - otherwise one score per seed s: with `resplit` a fresh stratified 70/30 split seeded with s (sample
      level), without it the set's own split.
    Beside both arms: the trivial score (chance AUROC 0.5) and the raw-input score (the same logistic probe
    on the inputs average-pooled to `raw_pool` per spatial dim, or on `raw_fn(inputs)`, an (N, D) array, when
    given). Returns {"pretrained", "random", "trivial",
    "raw": [...], "seeds": [...], "test_train_ratio": float or None, "all": [per seed or fold scores]}."""
    import numpy as np
    import torch

    from shared.probe import PREFIX, pooled_features, probe_scores, split_indices

    if not key.endswith("auroc"):
        raise ValueError(f"probe_over_seeds scores an AUROC (its trivial baseline is 0.5), got key {key!r}")
    x = torch.cat([probe_set.train_x, probe_set.test_x])
    y = np.concatenate([probe_set.train_y, probe_set.test_y])
    n_train = len(probe_set.train_x)

    def features(encoder):
        fn = feature_fn(encoder) if feature_fn else encoder
        return pooled_features(fn, (x[i:i + batch_size] for i in range(0, len(x), batch_size)), model=encoder)

    torch.manual_seed(seeds[0])
    encoder = build_encoder()
    load_weights(encoder)
    found = {"pretrained": features(encoder), "raw": raw_fn(x) if raw_fn else raw_features(x, raw_pool)}
    if groups is not None:
        if len(groups) != len(y):
            raise ValueError(f"{len(groups)} groups for {len(y)} probe samples")
        splits = [(f"r{r}f{f}", seeds[0] + r % (random_inits or repeats), train, test)
                  for r, f, train, test in grouped_folds(groups, folds, repeats, seeds[0])]
    else:
        splits = [(s, s, *(split_indices(y, 0.3, s) if resplit else (np.arange(n_train), np.arange(n_train, len(y)))))
                  for s in seeds]
    out = {k: [] for k in ("pretrained", "random", "trivial", "raw", "seeds", "all")}
    random_features, ratios = {}, []
    for label, seed, train, test in splits:
        if seed not in random_features:  # one random encoder per seed (per repetition of the folds)
            torch.manual_seed(seed)
            random_features[seed] = features(build_encoder())
        found["random"] = random_features[seed]
        scores = {}
        try:
            for name in ("pretrained", "random", "raw"):
                f = found[name]
                got = probe_scores(f[train], y[train], f[test], y[test], seed=seed)
                scores[name] = {PREFIX + k: float(v) for k, v in got.items() if not k.startswith("n_")}
        except ValueError as err:  # a fold whose training side holds one class only
            print(f"probe: fold {label} skipped ({err})", file=sys.stderr)
            continue
        if any(math.isnan(scores[n][key]) for n in scores):  # a test side with one class: AUROC undefined
            continue
        for name in scores:
            out[name].append(scores[name][key])
        out["trivial"].append(CHANCE_AUROC)
        out["seeds"].append(label)
        out["all"].append({"seed": label, **scores})
        ratios.append(len(test) / len(train))
    if len(out["seeds"]) < 2:
        raise ValueError(f"probe: only {len(out['seeds'])} usable splits (too few positives per split?)")
    out["test_train_ratio"] = float(np.mean(ratios)) if groups is not None else None
    return out


def probe_metric(name, probe):
    """The row metric of a probe_over_seeds result."""
    return metric("probe", name, probe["seeds"], probe["pretrained"], probe["random"], trivial=probe["trivial"],
                  raw=probe["raw"], test_train_ratio=probe["test_train_ratio"])


# ----------------------------------------------------------------------------------------------
# rows and the summary

def write_row(method, runs="runs", **fields):
    """Write runs/demo/<method>/row.json with the summary fields (see ROW_FIELDS; `metrics`: a list of
    `metric(...)`; `seen`: which test items were also seen in pre-training, in words with counts)."""
    unknown = set(fields) - set(ROW_FIELDS)
    if unknown:
        raise ValueError(f"unknown demo row fields: {sorted(unknown)}")
    for m in fields.get("metrics") or []:
        if not set(METRIC_FIELDS) <= set(m) <= set(METRIC_FIELDS + OPTIONAL_METRIC_FIELDS):
            raise ValueError(f"{method}: a metric needs {METRIC_FIELDS} (optional: {OPTIONAL_METRIC_FIELDS}), "
                             f"got {sorted(m)}")
    path = Path(runs) / "demo" / method / "row.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"method": method, **{k: fields.get(k) for k in ROW_FIELDS if k != "method"}}
    path.write_text(json.dumps(row, indent=2, default=str))
    return path


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


def _baseline_cell(values, ratio):
    if values is None:
        return "-"
    if len(set(values)) == 1:
        return f"{values[0]:.3f}"
    return _interval(t_interval(values, 0.95, ratio))


def _score_cells(scores, ratio):
    c = compare(scores["pretrained"], scores["random"], 0.95, ratio)
    return (f"{_interval(c['pretrained'])} | {_interval(c['random'])} | {_interval(c['difference'])} | "
            f"{_baseline_cell(scores.get('trivial'), ratio)} | {_baseline_cell(scores.get('raw'), ratio)}")


def _n_cell(m):
    ratio = m.get("test_train_ratio")
    return f"{len(m['seeds'])} folds (corrected, n_test/n_train {ratio:.2f})" if ratio else f"{len(m['seeds'])} seeds"


def table_lines(rows):
    """The results table: one line per metric (plus one per shorter budget), with its verdict."""
    lines = ["| method | metric | n | pre-trained mean [95 % CI] | random init mean [95 % CI] | difference [95 % CI] "
             "| trivial | raw input | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for m in r.get("metrics") or []:
            ratio = m.get("test_train_ratio")
            name = f"{m['kind']}: {m['name']}" + (" (lower is better)" if m.get("lower_is_better") else "")
            lines.append(f"| {r['method']} | {name} | {_n_cell(m)} | {_score_cells(m, ratio)} | **{verdict(m)}** |")
            if m.get("short"):
                lines.append(f"| {r['method']} | ... at the shorter budget, {m['short']['budget']} | {_n_cell(m)} | "
                             f"{_score_cells(m['short'], ratio)} | (short budget) |")
    return lines


def facts_lines(rows):
    """One line per method: data, pre-training (its number of seeds: ONE_PRETRAINING for a row with metrics
    unless it says),
    which test items pre-training saw, wall time, note."""
    lines = ["| method | data | pre-training steps | final loss | pre-training seeds | seen in pre-training "
             "| wall time (s) | note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seeds = r.get("pretrain_seeds") or (ONE_PRETRAINING if r.get("metrics") else None)
        lines.append(f"| {r['method']} | {_fmt(r.get('data'))} | {_fmt(r.get('steps'))} | {_fmt(r.get('final_loss'))} "
                     f"| {_fmt(seeds)} | {_fmt(r.get('seen'))} "
                     f"| {_fmt(r.get('wall_time_s'), 1)} | {_fmt(r.get('note'))} |")
    return lines


def summary_markdown(rows, plots=None, chart=None):
    text = "# Demo summary\n\n" + "\n".join(table_lines(rows)) + "\n"
    text += ("\nMeans with 95 % Student-t intervals over the seeds (or, where n counts folds, the Nadeau-Bengio "
             "corrected resampled t over repeated grouped K-fold); the difference is pre-trained minus random init, "
             "paired by seed or fold. trivial: chance AUROC 0.5, predict-nothing Dice, or the majority class; "
             "raw input: logistic regression on pooled raw voxels or pixels.\n\n" + VERDICT_RULE + "\n")
    text += "\n## Runs\n\n" + "\n".join(facts_lines(rows)) + "\n"
    if chart:
        text += f"\n![pre-trained vs random init]({chart})\n"
    if plots:
        text += "\n## Pre-training loss\n\n" + "".join(f"![{m}]({p})\n" for m, p in plots) + "\n"
    return text


def plot_summary(rows, png):
    """A bar chart: one panel per metric, pre-trained vs random init (mean, 95 % interval), baselines dashed."""
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
        c = compare(m["pretrained"], m["random"], 0.95, m.get("test_train_ratio"))
        means = [c["pretrained"][0], c["random"][0]]
        errors = [[mean - low for mean, low, _ in (c["pretrained"], c["random"])],
                  [high - mean for mean, _, high in (c["pretrained"], c["random"])]]
        ax.bar([0, 1], means, yerr=errors, capsize=6, color=["tab:blue", "tab:gray"])
        for field, style in (("trivial", ":"), ("raw", "--")):
            if m.get(field):
                ax.axhline(statistics.fmean(m[field]), color="k", linestyle=style, linewidth=1, label=field)
        if m.get("trivial") or m.get("raw"):
            ax.legend(fontsize=6)
        ax.set_xticks([0, 1], ["pre-trained", "random"])
        name = textwrap.fill(f"{m['kind']}: {m['name']}", 38)
        ax.set_title(f"{method}\n{name}\n({verdict(m)}, n={c['n']})", fontsize=8)
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
