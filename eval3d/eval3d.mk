# eval3d/: one 3D evaluation for every 3D encoder (see eval3d/README.md). Included by the top-level Makefile.
#
#   make eval3d                  every task x mode x encoder on the sample data: the runs/demo checkpoints found
#                                (Semantic Genesis, TransVW, VoCo) and random-init UNet3D and SwinUNETR, 3 seeds
#   make eval3d ARGS="--seeds 0,1,2,3,4"           any eval3d.run flag on top
#   make eval3d-real ARGS="--encoder sg=semantic_genesis_chest_ct.pt --trusted --luna16 data/LUNA16 --btcv data/BTCV"
#
# The sample budget is tiny (2 CPU cores, a few minutes): narrow networks, 64x32x32 inputs, 3 optimiser steps,
# fractions 1 and 100 % (on 16 sample scans and 6 training cases 10 % draws what 1 % draws). eval3d-real keeps
# the per-task defaults (eval3d/run.py BUDGETS) and the originals' input sizes.

.PHONY: eval3d eval3d-real

EVAL3D_SAMPLE ?= --width 4 --feature_size 12 --window_size 2 --cube 64 32 32 --spacing 6 6 10 --roi 64 32 32 \
	--sw_batch_size 2 --overlap 0.25 --steps 3 --batch_size 2 --optimizer adam --lr 1e-3 --fractions 1,100 \
	--seeds 0,1,2 --threads 1

eval3d: sample-data
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m eval3d.run --demo_runs $(RUNS)/demo --archs unet3d,swinunetr \
		--luna16 $(SAMPLE)/luna16 --btcv $(SAMPLE)/btcv --out $(RUNS)/eval3d $(EVAL3D_SAMPLE) $(ARGS)

eval3d-real: $(STAMP)
	$(PY) -m eval3d.run --out $(RUNS)/eval3d $(ARGS)
