"""TransVW's own names and defaults (its original `pytorch/config.py` differs from Semantic
Genesis's only in the experiment name); the pre-training itself is `shared/genesis/pretrain.py`."""

METHOD = "transvw"
EXP_NAME = "TransVW_chest_ct"                   # -> Checkpoints/<exp>/TransVW_chest_ct.pt
PATTERN_DIR = "TransVW_data"                    # where its pattern generator saves visual words
DESCRIPTION = "TransVW pre-training: visual-word classification + restoration (YNet3D)"
RELEASED_WEIGHTS = "https://zenodo.org/record/4625321"   # TransVW_chest_ct.pt and TransVW_data.zip
