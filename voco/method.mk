# VoCo (voco/). Included by the top-level Makefile.
#
#   make pretrain-voco DATA="jsons/btcv.json jsons/tcia.json" ARGS="--data_dir data/BTCV data/TCIA --cache_dir cache/voco --logdir runs/voco"
#   make pretrain-voco GPUS=4 DATA=... ARGS=...          torchrun, one process per GPU (batch per process)
#   make finetune-voco DATA=data/BTCV ARGS="--pretrained_checkpoint runs/voco/model_final_epoch.pt --logdir runs/btcv"
#   make plan-voco ARGS="--batch_size 4 --plan_gpu H200" | make plan-finetune-voco ARGS="--sw_batch_size 8"
#   make json-voco DATA=<folder of NIfTI> ARGS="--out jsons/mine.json"
#   make demo-voco | bench-voco

.PHONY: pretrain-voco plan-voco plan-finetune-voco finetune-voco json-voco demo-voco bench-voco

pretrain-voco: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make pretrain-voco DATA=<json list(s)> ARGS=\"--data_dir ... --cache_dir ...\""; exit 2; }
	$(LAUNCH) voco/train.py --json_list $(DATA) $(ARGS)

# Will it fit? FLOPs, memory, fit and GPU-hours of the configuration ARGS describes, on no GPU (shared/plan.py)
plan-voco: $(STAMP)
	$(PY) voco/train.py --plan $(ARGS)

plan-finetune-voco: $(STAMP)
	$(PY) voco/finetune.py --plan $(ARGS)

finetune-voco: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make finetune-voco DATA=<BTCV dir> ARGS=\"--pretrained_checkpoint ...\""; exit 2; }
	$(LAUNCH) voco/finetune.py --data_dir $(DATA) $(ARGS)

json-voco: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make json-voco DATA=<folder> ARGS=\"--out list.json\""; exit 2; }
	$(PY) voco/make_json.py $(DATA) $(ARGS)

# One fixed thread: the same command gives the same table (the order of float sums follows the threads).
VOCO_DEMO_THREADS ?= 1

demo-voco: $(STAMP)
	OMP_NUM_THREADS=$(VOCO_DEMO_THREADS) MKL_NUM_THREADS=$(VOCO_DEMO_THREADS) \
		$(PY) voco/demo.py --sample $(SAMPLE) --runs $(RUNS) --threads $(VOCO_DEMO_THREADS) $(ARGS)

bench-voco: $(STAMP)
	$(PY) voco/bench.py --runs $(RUNS) $(ARGS)

DEMOS += demo-voco
BENCHES += bench-voco
