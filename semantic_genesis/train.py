"""Semantic Genesis pre-training, as `pytorch/train.py` of the original:

    python semantic_genesis/train.py --data_dir Semantic_Genesis_data [--exp en_de] [--batch_size 64]
    torchrun --nproc_per_node=4 semantic_genesis/train.py --data_dir ...      # DDP on 4 GPUs
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `semantic_genesis` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semantic_genesis import config
from shared.genesis.pretrain import build_parser
from shared.genesis.pretrain import main as pretrain


def get_parser():
    return build_parser(config.DESCRIPTION, config.EXP_NAME)


def main(argv=None):
    return pretrain(get_parser().parse_args(argv))


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
