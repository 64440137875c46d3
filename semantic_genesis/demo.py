"""`make demo-semantic_genesis`: self-discovery, pre-training and nodule segmentation on the sample CT.

    python semantic_genesis/demo.py [--sample data/sample] [--runs runs] [--task classification]
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `semantic_genesis` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semantic_genesis import config, finetune_classification, finetune_segmentation, train
from shared.genesis.demo import run_demo


def main(argv=None):
    finetune = {"segmentation": finetune_segmentation.main, "classification": finetune_classification.main}
    return run_demo(config.METHOD, config.EXP_NAME, train.main, finetune, argv)


if __name__ == "__main__":
    main()
