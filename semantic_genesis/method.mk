# Semantic Genesis (semantic_genesis/). Included by the top-level Makefile; the targets are the shared
# Genesis ones (shared/genesis/genesis.mk), in the originals' order:
#
#   make self-discovery-semantic_genesis [SG_SOURCE=<LUNA16 root>] [SG_SMALL=]   scans -> pattern classes
#   make pretrain-semantic_genesis [GPUS=4] [DATA=<pattern folder>] [ARGS="--exp en ..."]
#   make finetune-semantic_genesis [DATA="--luna16 <root>"] [WEIGHTS=<.pt>] [SG_TASK=segmentation]
#   make demo-semantic_genesis | bench-semantic_genesis
#
# Outputs go to $(RUNS)/semantic_genesis/ (SG_WORK); patterns to SG_WORK/Semantic_Genesis_data.

include shared/genesis/genesis.mk
$(eval $(call genesis_targets,semantic_genesis,SG,Semantic_Genesis_data))
