"""Names and defaults that make this folder Semantic Genesis (the original `pytorch/config.py`).

Everything else of the pre-training (flags, loss, schedule) is the shared Genesis engine in
`shared/genesis/pretrain.py`; the original SemanticGenesis and TransVW trainers differ only in these.
"""

METHOD = "semantic_genesis"
EXP_NAME = "semantic_genesis_chest_ct"          # checkpoint: Checkpoints/<exp>/semantic_genesis_chest_ct.pt
PATTERN_DIR = "Semantic_Genesis_data"           # the pattern generator's default --save
DESCRIPTION = "Semantic Genesis pre-training: self-classification + self-restoration on YNet3D"
RELEASED_WEIGHTS = "https://zenodo.org/record/4625297"   # semantic_genesis_chest_ct.pt (PyTorch and Keras)
