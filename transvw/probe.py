"""Frozen-feature probe of a TransVW checkpoint (or random init) on LUNA16 nodule vs non-nodule cubes.

    python transvw/probe.py <checkpoint> --data <LUNA16 root>      # any layout load_pretrained reads
    python transvw/probe.py --random_init --data <LUNA16 root>

k-NN (cosine) and logistic-regression accuracy / AUROC of the pooled encoder bottleneck; prints the
scores and writes them as JSON (see shared/genesis/probe.py).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis.probe import main as probe_main


def main(argv=None):
    return probe_main(argv, method="TransVW")


if __name__ == "__main__":
    main()
