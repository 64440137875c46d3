"""TransVW encoder -> global average pool -> linear logits, fine-tuned with BCE (one class) or CE:

    python transvw/finetune_classification.py --luna16 data/sample/luna16 --weights TransVW_chest_ct.pt
    python transvw/finetune_classification.py --data_dir cubes/ --n_class 3 --weights TransVW_chest_ct.pt
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis import finetune as genesis_finetune
from transvw import config


def main(argv=None):
    weights = config.EXP_NAME + ".pt"
    return genesis_finetune.main("classification", "TransVW classification fine-tuning", weights, argv)


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
