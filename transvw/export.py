"""Publish a TransVW checkpoint as a release folder, loadable in one line (shared/genesis/release.py):

    python transvw/export.py Checkpoints/en_de/TransVW_chest_ct.pt --out release/transvw
    python transvw/export.py TransVW_chest_ct.pt --trusted --out release/tvw   # the released file
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis import release
from transvw import config

CARD = dict(
    method="TransVW",
    paper="Transferable Visual Words: Exploiting the Semantics of Anatomical Patterns for Self-supervised "
          "Learning (Haghighi et al., IEEE TMI 2021)",
    paper_url="https://arxiv.org/abs/2102.10680",
    license="other", license_name="asu-github-project-license",
    license_link="https://github.com/fhaghighi/TransVW/blob/master/LICENSE",
    datasets=["LUNA16"], tags=["ct", "3d", "unet3d", "transvw", "models-genesis"],
    training_data="Chest CT sub-volumes (the original: LUNA16 subsets, visual words discovered by self-discovery "
                  "and labelled by word).",
    intended_use="Initialisation of a 3D U-Net (shared.unet3d.UNet3D, the Models Genesis layout) for chest CT "
                 "segmentation or, through its encoder, classification.",
    limits="Pre-trained on chest CT only; inputs must be HU-windowed as config.json says. The network's BatchNorm "
           "uses batch statistics in eval mode (as the original), so outputs depend on the batch.",
)


def main(argv=None):
    return release.main(argv, CARD, config.METHOD, config.EXP_NAME)


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()
    main()
