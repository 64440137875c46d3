"""Benchmark records: every method's bench writes runs/bench/<method>.json as a list of
{"name", "value", "unit", "device", "config"}, so runs on different machines compare line by line.

    python -m shared.bench [--runs runs]     # prints one table of every runs/bench/*.json
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def device_name(device=None):
    """'cpu: <processor> (<n> threads)' or 'cuda: <GPU name>'."""
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def record(name, value, unit, device, config=None):
    return {"name": name, "value": float(value), "unit": unit, "device": device, "config": config or {}}


def write_records(method, records, runs="runs"):
    """Validate and write runs/bench/<method>.json; returns its path."""
    for r in records:
        missing = {"name", "value", "unit", "device", "config"} - set(r)
        if missing:
            raise ValueError(f"benchmark record {r} lacks {sorted(missing)}")
    path = Path(runs) / "bench" / f"{method}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2))
    return path


def throughput(fn, items_per_call, warmup=1, repeats=3, device=None):
    """Items per second of `fn()` (median of `repeats` timed calls after `warmup`), synchronising CUDA."""
    sync = torch.cuda.synchronize if (device is not None and torch.device(device).type == "cuda") else None
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return items_per_call / times[len(times) // 2]


def _config_text(config, limit=120):
    text = ", ".join(f"{k}={v}" for k, v in sorted(config.items())) if isinstance(config, dict) else str(config)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def table(runs="runs"):
    """Markdown table of every runs/bench/*.json; the config column tells same-named records apart."""
    lines = ["| method | name | value | unit | device | config |", "|---|---|---|---|---|---|"]
    for path in sorted((Path(runs) / "bench").glob("*.json")):
        for r in json.loads(path.read_text()):
            lines.append(f"| {path.stem} | {r['name']} | {r['value']:.4g} | {r['unit']} | {r['device']} "
                         f"| {_config_text(r.get('config', {}))} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", default="runs")
    args = parser.parse_args(argv)
    text = table(args.runs)
    (Path(args.runs) / "bench").mkdir(parents=True, exist_ok=True)
    (Path(args.runs) / "bench" / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
