"""TransVW benchmarks -> runs/bench/transvw.json (transform and training throughput on this machine):

    python transvw/bench.py --device cuda --width 32
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis import bench as genesis_bench
from transvw import config


def main(argv=None):
    return genesis_bench.main(config.METHOD, argv)


if __name__ == "__main__":
    main()
