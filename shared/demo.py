"""The `make demo` summary: each method's demo writes one row; this module gathers them.

    python -m shared.demo [--runs runs]      # prints the table, writes runs/demo/summary.md + loss PNGs
"""

import argparse
import json
import sys
from pathlib import Path

ROW_FIELDS = ("method", "data", "steps", "final_loss", "metric", "pretrained", "random", "wall_time_s",
              "loss_csv")


def write_row(method, runs="runs", **fields):
    """Write runs/demo/<method>/row.json with the summary fields (see ROW_FIELDS)."""
    unknown = set(fields) - set(ROW_FIELDS)
    if unknown:
        raise ValueError(f"unknown demo row fields: {sorted(unknown)}")
    path = Path(runs) / "demo" / method / "row.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"method": method, **{k: fields.get(k) for k in ROW_FIELDS if k != "method"}}
    path.write_text(json.dumps(row, indent=2, default=str))
    return path


def _fmt(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def read_rows(runs="runs"):
    rows = []
    for path in sorted((Path(runs) / "demo").glob("*/row.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            print(f"warning: skipping unreadable {path}: {err}", file=sys.stderr)
    return rows


def summary_markdown(rows, plots=None):
    header = ("| method | data | steps | final loss | downstream metric | pretrained | random init "
              "| wall time (s) |\n|---|---|---|---|---|---|---|---|")
    lines = [header]
    for r in rows:
        lines.append(f"| {r['method']} | {_fmt(r.get('data'))} | {_fmt(r.get('steps'))} | "
                     f"{_fmt(r.get('final_loss'))} | {_fmt(r.get('metric'))} | {_fmt(r.get('pretrained'))} | "
                     f"{_fmt(r.get('random'))} | {_fmt(r.get('wall_time_s'), 3)} |")
    text = "# Demo summary\n\n" + "\n".join(lines) + "\n"
    if plots:
        text += "\n## Pre-training loss\n\n" + "".join(f"![{m}]({p})\n" for m, p in plots) + "\n"
    return text


def write_summary(runs="runs"):
    """Gather the rows, plot each method's pre-training metrics, write and return summary.md's text."""
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
    text = summary_markdown(rows, plots)
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
