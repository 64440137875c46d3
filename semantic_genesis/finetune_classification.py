"""Fine-tune Semantic Genesis for 3D classification (e.g. lung nodule presence):

    python semantic_genesis/finetune_classification.py --luna16 data/sample/luna16 \
        --weights Checkpoints/en_de/semantic_genesis_chest_ct.pt
    python semantic_genesis/finetune_classification.py --data_dir my_cubes/ --weights ... --n_class 2

The encoder of the pre-trained U-Net, global average pooling and a linear layer giving logits.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `semantic_genesis` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semantic_genesis.config import EXP_NAME
from shared.genesis.finetune import main as finetune


def main(argv=None):
    return finetune("classification", "Semantic Genesis: fine-tune the encoder for classification",
                    f"{EXP_NAME}.pt", argv)


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
