# DiRA (dira/). Included by the top-level Makefile.
#
#   make pretrain-dira DATA=<images dir> [GPUS=4] ARGS="--mode dir --mlp --moco-t 0.2 --cos --train_list ... --val_list ..."
#   make pretrain-dira DATA=<images dir> GPUS=4 ARGS="--mode dira --mlp --moco-t 0.2 --cos --batch-size 16 \
#        --epochs 400 --generator_pre_trained_weights checkpoint/DiRA_moco/dir/checkpoint.pth"
#   make plan-dira ARGS="--mode dira --batch-size 16 --plan_gpus 4 --plan_gpu A100"   will it fit? (no GPU needed)
#   make finetune-dira ARGS="classification --data_dir ... --train_list ... --val_list ... --test_list ... --init dira --proxy_dir ..."
#   make transfer-dira CKPT=<DiRA checkpoint> ARGS="--to resnet --out resnet50_dira.pth"
#   make prepare-dira DATA=<ChestX-ray14 root> [ARGS=--out dataset]
#   make demo-dira | bench-dira
#
# With GPUS > 1 (or NNODES > 1), $(LAUNCH) is torchrun: one process per GPU, --batch-size stays the total per node.

.PHONY: pretrain-dira plan-dira finetune-dira transfer-dira prepare-dira demo-dira bench-dira

pretrain-dira: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make pretrain-dira DATA=<images dir> ARGS=\"...\""; exit 2; }
	$(LAUNCH) dira/train.py $(DATA) $(ARGS)

# Will it fit? FLOPs, memory, fit and GPU-hours of the configuration ARGS describes, on no GPU (shared/plan.py)
plan-dira: $(STAMP)
	$(PY) dira/train.py --plan $(ARGS)

finetune-dira: $(STAMP)
	$(PY) dira/finetune.py $(ARGS)

transfer-dira: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make transfer-dira CKPT=<checkpoint> ARGS=\"--to resnet|unet --out file\""; exit 2; }
	$(PY) dira/transfer.py $(CKPT) $(ARGS)

prepare-dira: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make prepare-dira DATA=<ChestX-ray14 root>"; exit 2; }
	$(PY) dira/prepare_chestxray14.py $(DATA) $(ARGS)

# One intra-op thread: on a busy 2-core machine more threads spin and slow the demo several-fold.
DIRA_DEMO_THREADS ?= 1

demo-dira: $(STAMP)
	OMP_NUM_THREADS=$(DIRA_DEMO_THREADS) MKL_NUM_THREADS=$(DIRA_DEMO_THREADS) \
		$(PY) dira/demo.py --sample $(SAMPLE) --runs $(RUNS) --threads $(DIRA_DEMO_THREADS) $(ARGS)

bench-dira: $(STAMP)
	$(PY) dira/bench.py --runs $(RUNS) $(ARGS)

DEMOS += demo-dira
BENCHES += bench-dira
