"""Publish a Semantic Genesis checkpoint as a release folder, loadable in one line (shared/genesis/release.py):

    python semantic_genesis/export.py Checkpoints/en_de/semantic_genesis_chest_ct.pt --out release/semantic_genesis
    python semantic_genesis/export.py semantic_genesis_chest_ct.pt --trusted --out release/sg   # the released file
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `semantic_genesis` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semantic_genesis import config
from shared.genesis import release

CARD = dict(
    method="Semantic Genesis",
    paper="Learning Semantics-enriched Representation via Self-discovery, Self-classification, and "
          "Self-restoration (Haghighi et al., MICCAI 2020)",
    paper_url="https://arxiv.org/abs/2007.06959",
    license="other", license_name="asu-github-project-license",
    license_link="https://github.com/fhaghighi/SemanticGenesis/blob/master/LICENSE",
    datasets=["LUNA16"], tags=["ct", "3d", "unet3d", "semantic-genesis", "models-genesis"],
    training_data="Chest CT sub-volumes (the original: LUNA16 subsets, cubes cut around self-discovered anatomical "
                  "patterns and labelled by pattern).",
    intended_use="Initialisation of a 3D U-Net (shared.unet3d.UNet3D, the Models Genesis layout) for chest CT "
                 "segmentation or, through its encoder, classification (e.g. nodule false-positive reduction).",
    limits="Pre-trained on chest CT only; inputs must be HU-windowed as config.json says. The network's BatchNorm "
           "uses batch statistics in eval mode (as the original), so outputs depend on the batch.",
)


def main(argv=None):
    return release.main(argv, CARD, config.METHOD, config.EXP_NAME)


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()
    main()
