"""`make demo-semantic_genesis`: self-discovery, pre-training and nodule classification on the sample CT.

    python semantic_genesis/demo.py [--sample data/sample] [--runs runs]
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `semantic_genesis` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semantic_genesis import config, finetune_classification, train
from shared.genesis_demo import run_demo


def main(argv=None):
    return run_demo(config.METHOD, config.EXP_NAME, train.main, finetune_classification.main, argv)


if __name__ == "__main__":
    main()
