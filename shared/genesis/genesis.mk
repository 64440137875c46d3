# Make targets common to Semantic Genesis and TransVW (one program with two names).
# A method's method.mk includes this file once and calls
#     $(eval $(call genesis_targets,<method>,<VARIABLE PREFIX>,<pattern folder name>))
# which defines self-discovery-<m>, pretrain-<m>, plan-<m>, finetune-<m>, demo-<m>, bench-<m> and the <PREFIX>_*
# variables below (each overridable on the command line).
#
# <PREFIX>_SMALL=1 (default) sizes self-discovery and pre-training for the 16 sample scans (32x32x16
# cubes, 4 classes, a 2-epoch width-4 autoencoder); <PREFIX>_SMALL= keeps the originals' defaults
# (128x128x64 autoencoder, 64x64x32 cubes, 200 classes: >= 200 training and 30 validation patients).

ifndef GENESIS_MK_INCLUDED
GENESIS_MK_INCLUDED := 1

GENESIS_DEMO_THREADS ?= 2

define genesis_targets
$(2)_WORK ?= $$(RUNS)/$(1)
$(2)_SOURCE ?= $$(SAMPLE)/luna16
$(2)_SMALL ?= 1
$(2)_TASK ?= classification
$(2)_PATTERNS ?= $$($(2)_WORK)/$(3)
ifeq ($$($(2)_SMALL),1)
$(2)_PREP_ARGS ?= --val_fraction 0.25 --min_shape 32 32 16
$(2)_AE_ARGS ?= --input_rows 32 --input_cols 32 --input_deps 16 --width 4 --batch_size 2 --nb_epoch 2
$(2)_FE_ARGS ?= --input_rows 32 --input_cols 32 --input_depth 16 --width 4 --batch_size 2
$(2)_PG_ARGS ?= --input_rows 32 --input_cols 32 --input_deps 16 --crop_rows 32 --crop_cols 32 --nb_classes 4 \
	--nb_instances 6 --nb_instances_val 2 --minPatchSize 25 --maxPatchSize 40 --len_border 8 --len_border_z 4 \
	--lung_max 0.5
$(2)_PRETRAIN_SMALL ?= --cls_classes 4 --nb_instances 6 --nb_val_instances 2 --batch_size 8 --width 4
endif

.PHONY: self-discovery-$(1) pretrain-$(1) plan-$(1) finetune-$(1) demo-$(1) bench-$(1)

self-discovery-$(1): $$(STAMP)
	$$(PY) $(1)/prepare_data.py --input_dir $$($(2)_SOURCE) --output_dir $$($(2)_WORK)/dataset $$($(2)_PREP_ARGS)
	$$(PY) $(1)/train_autoencoder.py --data_dir $$($(2)_WORK)/dataset \
		--model_path $$($(2)_WORK)/Checkpoints/Autoencoder $$($(2)_AE_ARGS)
	$$(PY) $(1)/feature_extractor.py --data_dir $$($(2)_WORK)/dataset \
		--weights $$($(2)_WORK)/Checkpoints/Autoencoder/Unet_autoencoder.pt --save_dir $$($(2)_WORK) $$($(2)_FE_ARGS)
	$$(PY) $(1)/pattern_generator_3D.py --data_dir $$($(2)_WORK)/dataset --save $$($(2)_PATTERNS) --multi_res \
		--train_features $$($(2)_WORK)/train_features.npy \
		--val_features $$($(2)_WORK)/validation_features.npy $$($(2)_PG_ARGS)

pretrain-$(1): $$(STAMP)
	$$(LAUNCH) $(1)/train.py --data_dir $$(or $$(DATA),$$($(2)_PATTERNS)) --output_dir $$($(2)_WORK)/Checkpoints \
		$$(if $$(DATA),,$$($(2)_PRETRAIN_SMALL)) $$(ARGS)

# Will it fit? FLOPs, memory, fit and GPU-hours of the configuration ARGS describes (the originals' defaults
# without ARGS), on no GPU: shared/plan.py. E.g. make plan-$(1) ARGS="--batch_size 128 --plan_gpu A100 40GB"
plan-$(1): $$(STAMP)
	$$(PY) $(1)/train.py --plan $$(ARGS)

finetune-$(1): $$(STAMP)
	$$(LAUNCH) $(1)/finetune_$$($(2)_TASK).py $$(or $$(DATA),--luna16 $$($(2)_SOURCE)) \
		$$(if $$(WEIGHTS),--weights $$(WEIGHTS)) --output_dir $$($(2)_WORK)/finetune_$$($(2)_TASK) $$(ARGS)

# A fixed thread count: the same command gives the same table (the order of float sums follows the threads).
demo-$(1): $$(STAMP)
	OMP_NUM_THREADS=$$(GENESIS_DEMO_THREADS) MKL_NUM_THREADS=$$(GENESIS_DEMO_THREADS) \
		$$(PY) $(1)/demo.py --sample $$(SAMPLE) --runs $$(RUNS) --threads $$(GENESIS_DEMO_THREADS) $$(ARGS)

bench-$(1): $$(STAMP)
	$$(PY) $(1)/bench.py --runs $$(RUNS) $$(ARGS)

DEMOS += demo-$(1)
BENCHES += bench-$(1)
endef

endif
