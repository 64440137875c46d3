"""TransVW demo (`make demo-transvw`): visual words from the sample LUNA16 scans, a short pre-training,
then nodule segmentation from the TransVW weights vs from scratch (`--task classification`: nodule presence).

    python transvw/demo.py --sample data/sample --runs runs
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis import demo as genesis_demo
from transvw import config
from transvw.finetune_classification import main as classify
from transvw.finetune_segmentation import main as segment
from transvw.train import main as pretrain


def main(argv=None):
    return genesis_demo.run_demo(config.METHOD, config.EXP_NAME, pretrain,
                                 {"segmentation": segment, "classification": classify}, argv)


if __name__ == "__main__":
    main()
