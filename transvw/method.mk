# TransVW (transvw/), included by the top-level Makefile. Targets from shared/genesis/genesis.mk:
#
#   make self-discovery-transvw [TVW_SOURCE=<LUNA16 root>] [TVW_SMALL=]     scans -> visual words
#   make pretrain-transvw [GPUS=8] [NNODES=2 ...] [DATA=<visual-word folder>] [ARGS=...]
#   make finetune-transvw [DATA="--data_dir <cubes>"] [WEIGHTS=TransVW_chest_ct.pt] [TVW_TASK=segmentation]
#   make demo-transvw | bench-transvw
#
# Work folder: $(RUNS)/transvw (TVW_WORK); visual words in TVW_WORK/TransVW_data as the original names it.

include shared/genesis/genesis.mk
$(eval $(call genesis_targets,transvw,TVW,TransVW_data))
