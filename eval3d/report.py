"""Tables and label-efficiency plots from the cached results, with the demo's statistics and verdicts.

Each pre-trained encoder is compared with the random-init arm of its architecture and configuration, paired
by seed (shared.demo.metric / compare / verdict: Student-t over the seeds, Nadeau-Bengio corrected where the
seeds' patient splits overlap); every comparison row carries the trivial and the raw-input baseline.
"""

import math
import statistics
from pathlib import Path

from shared.demo import VERDICT_RULE, metric, t_interval, table_lines


def run_key(task, mode, fraction, arm, seed):
    return f"{task}|{mode}|{fraction}|{arm}|{seed}"


def _scores(runs, task, mode, fraction, arm, seeds, name):
    out = {}
    for s in seeds:
        r = runs.get(run_key(task, mode, fraction, arm, s))
        if r is not None and r.get(name) is not None and not math.isnan(r[name]):
            out[s] = r[name]
    return out


def comparison_rows(task, runs, encoders, modes, fractions, seeds):
    """shared.demo rows: one per (pre-trained encoder, mode, fraction), one metric per task metric."""
    rows = []
    for enc in [e for e in encoders if e.pretrained]:
        for mode in modes:
            for fraction in fractions:
                metrics = []
                for name, lower in task.metrics:
                    pre = _scores(runs, task.name, mode, fraction, enc.name, seeds, name)
                    rnd = _scores(runs, task.name, mode, fraction, enc.random_name(), seeds, name)
                    raw = _scores(runs, task.name, "raw", fraction, "-", seeds, name)
                    both = [s for s in seeds if s in pre and s in rnd and s in raw]
                    if not both:
                        continue
                    ratios = [runs[run_key(task.name, "raw", fraction, "-", s)].get("test_train_ratio") for s in both]
                    ratio = statistics.fmean(ratios) if all(r is not None for r in ratios) else None
                    metrics.append(metric("fine-tune" if mode == "full" else "probe", name, both,
                                          [pre[s] for s in both], [rnd[s] for s in both],
                                          trivial=task.trivial[name], raw=[raw[s] for s in both],
                                          lower_is_better=lower, test_train_ratio=ratio))
                if metrics:
                    n_train = runs[run_key(task.name, "raw", fraction, "-", seeds[0])]["n_train"] \
                        if run_key(task.name, "raw", fraction, "-", seeds[0]) in runs else "?"
                    rows.append({"method": f"{enc.name} vs {enc.random_name()}, {mode}, {fraction} % "
                                           f"({n_train} train)", "metrics": metrics})
    return rows


def _cell(values):
    if not values:
        return "-"
    mean, low, high = t_interval(values)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]" if len(values) > 1 else f"{mean:.3f}"


def arms_lines(task, runs, encoders, modes, fractions, seeds):
    """Every arm (random init included) and the raw baseline: the primary metric per fraction."""
    head = "| arm | mode | " + " | ".join(f"{f} %" for f in fractions) + " |"
    lines = [head, "|" + "---|" * (2 + len(fractions))]
    for enc in encoders:
        for mode in modes:
            cells = [_cell(list(_scores(runs, task.name, mode, f, enc.name, seeds, task.primary).values()))
                     for f in fractions]
            lines.append(f"| {enc.name} | {mode} | " + " | ".join(cells) + " |")
    cells = [_cell(list(_scores(runs, task.name, "raw", f, "-", seeds, task.primary).values())) for f in fractions]
    lines.append("| raw-input baseline | - | " + " | ".join(cells) + " |")
    trivial = f"{task.trivial[task.primary]:.3f}"
    lines.append("| trivial baseline | - | " + " | ".join(trivial for _ in fractions) + " |")
    return lines


def plot_label_efficiency(task, runs, encoders, modes, fractions, seeds, png):
    """The primary metric against the label fraction (log axis), one line per arm and mode, 95 % intervals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for enc in encoders:
        for mode in modes:
            xs, means, errs = [], [], []
            for f in fractions:
                values = list(_scores(runs, task.name, mode, f, enc.name, seeds, task.primary).values())
                if values:
                    mean, low, high = t_interval(values)
                    xs.append(f)
                    means.append(mean)
                    errs.append(high - mean)
            if xs:
                ax.errorbar(xs, means, yerr=errs, capsize=3, marker="o" if enc.pretrained else "s",
                            linestyle="-" if mode == "full" else "--", label=f"{enc.name} ({mode})")
    raw = [(f, statistics.fmean(v)) for f in fractions
           if (v := list(_scores(runs, task.name, "raw", f, "-", seeds, task.primary).values()))]
    if raw:
        ax.plot(*zip(*raw), color="k", linestyle=":", label="raw-input baseline")
    ax.axhline(task.trivial[task.primary], color="grey", linewidth=1, label="trivial baseline")
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f} %" for f in fractions])
    ax.set_xlabel("training labels used")
    ax.set_ylabel(task.primary)
    ax.set_title(f"{task.name.upper()}: label efficiency ({len(seeds)} seeds, 95 % intervals)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)


def task_markdown(task, runs, encoders, modes, fractions, seeds, split_note, png_name, data_note=""):
    rows = comparison_rows(task, runs, encoders, modes, fractions, seeds)
    text = f"## {task.name.upper()}\n\n{data_note}Split: {split_note}.\n\n"
    if rows:
        text += "\n".join(table_lines(rows)) + "\n\n"
    else:
        text += "No pre-trained encoder of this task finished: only the arms below.\n\n"
    text += f"All arms, {task.primary} mean [plain 95 % t-interval over seeds, uncorrected]:\n\n" + "\n".join(
        arms_lines(task, runs, encoders, modes, fractions, seeds)) + "\n\n"
    return text + f"![{task.name} label efficiency]({png_name})\n", rows


def footer():
    return ("\nMeans with 95 % Student-t intervals over the seeds; where the seeds' patient splits overlap "
            "(every task here but a fixed --ncs_data split), the Nadeau-Bengio corrected resampled t with the "
            "split's n_test/n_train. The difference is pre-trained minus random init of the same architecture, "
            "paired by seed. fine-tune = full mode, probe = frozen encoder.\n\n" + VERDICT_RULE + "\n")
