"""TransVW pre-training (the original's `pytorch/train.py`, TransVW name and checkpoint):

    python transvw/train.py --data_dir TransVW_data
    python -m torch.distributed.run --nproc_per_node=8 transvw/train.py --data_dir TransVW_data
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis.pretrain import build_parser
from shared.genesis.pretrain import main as run_pretraining
from transvw.config import DESCRIPTION, EXP_NAME


def main(argv=None):
    args = build_parser(DESCRIPTION, EXP_NAME).parse_args(argv)
    return run_pretraining(args)


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
