"""CLI: python -m shared.sample_data --out data/sample --seed 0 [--only luna16 btcv ...] [--force]."""

import argparse
import sys
import time

from tqdm import tqdm

from . import DATASETS, generate


def folder_size(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m shared.sample_data", description=__doc__)
    ap.add_argument("--out", default="data/sample", help="output root (default: data/sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="+", choices=list(DATASETS), help="datasets to write (default: all)")
    ap.add_argument("--force", action="store_true", help="rewrite datasets even when already complete")
    args = ap.parse_args(argv)

    names = args.only or list(DATASETS)
    bar = tqdm(total=len(names), desc="sample data", unit="dataset", file=sys.stderr)
    lines = []

    def report(name, path, seconds, skipped):
        bar.update(1)
        state = "exists, skipped" if skipped else f"{seconds:5.1f} s"
        lines.append(f"  {name:<22} {folder_size(path) / 2**20:6.1f} MB  {state:>15}  {path}")

    t0 = time.perf_counter()
    generate(args.out, seed=args.seed, only=names, force=args.force, progress=report)
    bar.close()
    print(f"sample data (seed {args.seed}) in {args.out}:")
    print("\n".join(lines))
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
