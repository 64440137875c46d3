"""Fine-tune the whole Semantic Genesis U-Net for 3D segmentation with the READMEs' soft Dice:

    python semantic_genesis/finetune_segmentation.py --luna16 data/sample/luna16 \
        --weights Checkpoints/en_de/semantic_genesis_chest_ct.pt
    python semantic_genesis/finetune_segmentation.py --data_dir my_cubes/   # {train,val,test}_{x,y}.npy
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `semantic_genesis` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semantic_genesis import config
from shared.genesis.finetune import build_parser, run

TASK = "segmentation"


def main(argv=None):
    parser = build_parser("Semantic Genesis: fine-tune the U-Net for segmentation (Dice)", TASK,
                          config.EXP_NAME + ".pt")
    return run(parser.parse_args(argv), TASK)


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
