"""TransVW U-Net (encoder and decoder) fine-tuned for segmentation with the flattened soft Dice:

    python transvw/finetune_segmentation.py --luna16 data/sample/luna16 --weights TransVW_chest_ct.pt
    python transvw/finetune_segmentation.py --data_dir cubes/ --weights Genesis_Chest_CT.pt
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis.finetune import build_parser, run
from transvw.config import EXP_NAME


def main(argv=None):
    args = build_parser("TransVW segmentation fine-tuning (Dice)", "segmentation", f"{EXP_NAME}.pt").parse_args(argv)
    return run(args, "segmentation")


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
