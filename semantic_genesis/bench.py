"""`make bench-semantic_genesis`: restoration transforms (cubes/s) and YNet3D training steps.

    python semantic_genesis/bench.py [--device cuda] [--train_batch 64] [--runs runs]
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `semantic_genesis` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semantic_genesis.config import METHOD
from shared.genesis.bench import main as bench

if __name__ == "__main__":
    bench(METHOD)
