"""Semantic Genesis self-discovery step 1: train the whole-volume 3D autoencoder (the original's flags)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `semantic_genesis` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis.self_discovery.cli import train_autoencoder_main

if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    train_autoencoder_main()
