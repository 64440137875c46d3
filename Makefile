# Drives install, tests, the demo, benchmarks, and each method's pre-training and fine-tuning.
# Every method adds its own targets in <method>/method.mk (included below).
#
#   make test                                   install .venv if missing, run the CPU test suite
#   make demo                                   sample data + every method's short demo + summary table
#   make pretrain-dira GPUS=4 DATA=... ARGS="..."   torchrun when GPUS > 1 or NNODES > 1
#   make pretrain-voco NNODES=2 GPUS=8 NODE_RANK=0 RDZV_ENDPOINT=host0:29400 DATA=...
#   make export-voco DEST=../my-project         the method folder + shared/ as a standalone copy
#   make gpu-check METHODS=dira [DEVICE=cpu]    one method's CLIs on one device, timed (under 4 min on an H100)
#   make release-voco CKPT=runs/voco/model_final_epoch.pt DEST=release/voco  the weights as a release folder

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed

GPUS ?= 1
NNODES ?= 1
NODE_RANK ?= 0
RDZV_ID ?= ssl-med
RDZV_ENDPOINT ?= localhost:29400
DATA ?=
ARGS ?=
DEST ?=
SAMPLE ?= data/sample
RUNS ?= runs
SEED ?= 0
PYTEST_ARGS ?= -n 2 --dist worksteal  # idle workers take queued tests from busy ones (a shorter tail)

# One process when GPUS=1 on one node; otherwise PyTorch's own launcher (torchrun).
ifeq ($(GPUS)$(NNODES),11)
LAUNCH = $(PY)
else ifeq ($(NNODES),1)
LAUNCH = $(PY) -m torch.distributed.run --standalone --nproc_per_node=$(GPUS)
else
LAUNCH = $(PY) -m torch.distributed.run --nnodes=$(NNODES) --nproc_per_node=$(GPUS) \
	--node-rank=$(NODE_RANK) --rdzv-id=$(RDZV_ID) --rdzv-backend=c10d --rdzv-endpoint=$(RDZV_ENDPOINT)
endif

# The list of methods lives in shared/methods.py (also read by shared/export.py and tools/gpu_check.py).
ALL_METHODS := $(shell $(PYTHON) shared/methods.py)
DEMOS :=
BENCHES :=

.PHONY: help install test test-all lint sample-data demo bench gpu-check clean $(addprefix export-,$(ALL_METHODS)) \
	$(addprefix release-,$(ALL_METHODS))

help:
	@echo "make install | test | test-all | lint | sample-data | demo | demo-<method> | bench | gpu-check METHODS=<m>[,<m>] [DEVICE=cpu]"
	@echo "make pretrain-<method> GPUS=N DATA=... ARGS=\"...\" | finetune-<method> ... | export-<method> DEST=dir"
	@echo "make release-<method> CKPT=<checkpoint> DEST=<folder> [ARGS=--trusted]"
	@echo "make plan-<method> ARGS=\"...\"   will it fit? FLOPs, memory, fit and GPU-hours without a GPU (shared/plan.py)"
	@echo "methods: $(ALL_METHODS)"

install: $(STAMP)

$(STAMP): environments/requirements.txt environments/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c environments/constraints.txt -r environments/requirements.txt
	@touch $@

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

sample-data: $(STAMP)
	$(PY) -m shared.sample_data --out $(SAMPLE) --seed $(SEED)

# Each method's demo runs even when another fails; the summary table shows what finished.
demo: sample-data
	@failed=""; for target in $(DEMOS); do \
		echo "=== $$target"; $(MAKE) --no-print-directory $$target || failed="$$failed $$target"; \
	done; \
	$(PY) -m shared.demo --runs $(RUNS); \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

bench: $(STAMP)
	@failed=""; for target in $(BENCHES); do \
		echo "=== $$target"; $(MAKE) --no-print-directory $$target || failed="$$failed $$target"; \
	done; \
	$(PY) -m shared.bench --runs $(RUNS); \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

$(addprefix export-,$(ALL_METHODS)): export-%: $(STAMP)
	@test -n "$(DEST)" || { echo "usage: make $@ DEST=<folder>"; exit 2; }
	$(PY) -m shared.export $* $(DEST)

# Weights a user loads in one line: model.safetensors, ssl_state.safetensors, config.json, README.md (model card).
CKPT ?=
$(addprefix release-,$(ALL_METHODS)): release-%: $(STAMP)
	@test -n "$(CKPT)" -a -n "$(DEST)" || { echo "usage: make $@ CKPT=<checkpoint> DEST=<folder> [ARGS=--trusted]"; exit 2; }
	$(PY) $*/export.py $(CKPT) --out $(DEST) $(ARGS)

# One method's CLIs on one device (plain + kill/resume), timed, planned to take under 4 minutes on one H100:
#   make gpu-check METHODS=dira            ->  $(RUNS)/gpu_check/report.md (rewritten after every stage)
#   make gpu-check METHODS=voco,lovt DEVICE=cpu GPU_CHECK_ARGS="--modes plain --peak_tflops 989"
DEVICE ?= cuda
METHODS ?=
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	@test -n "$(METHODS)" || { echo "usage: make gpu-check METHODS=<one of: $(ALL_METHODS)> [DEVICE=cpu]" \
		"(one method per command; METHODS=a,b runs several)"; exit 2; }
	$(PY) tools/gpu_check.py --device $(DEVICE) --methods $(METHODS) --out $(RUNS)/gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache

-include $(wildcard */method.mk)
include eval3d/eval3d.mk

print-%:  # e.g. `make print-LAUNCH GPUS=4` shows how a run would be launched
	@echo '$($*)'
