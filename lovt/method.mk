# LoVT / ConVIRT / CLIP (lovt/). Included by the top-level Makefile.
#
#   make prepare-lovt DATA=<MIMIC root>                      MIMIC-CXR-JPG + reports -> prepared dataset
#   make pretrain-lovt DATA=<prepared dataset> [GPUS=4] [LOVT_EXPERIMENT=CLIP_30] [ARGS="name=x ..."]
#   make pretrain-lovt NNODES=2 GPUS=8 NODE_RANK=0 RDZV_ENDPOINT=host0:29400 DATA=...   (torchrun, every node)
#   make demo-lovt | bench-lovt
#
# One node: Lightning's own DDP launcher starts the GPUS processes (trainer.devices). Several nodes: torchrun
# ($(LAUNCH)) starts them and Lightning joins its environment; the run folder is fixed so all ranks agree.

LOVT_EXPERIMENT ?= LoVT_100
LOVT_RUN_DIR ?= $(RUNS)/lovt/$(LOVT_EXPERIMENT)
LOVT_DATA_ARG = $(if $(DATA),dataset_path=$(DATA))

.PHONY: prepare-lovt pretrain-lovt finetune-lovt demo-lovt bench-lovt

prepare-lovt: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make prepare-lovt DATA=<MIMIC root>"; exit 2; }
	$(PY) lovt/data/mimic_cxr.py create $(DATA) --config mimic-cxr_ap-pa $(ARGS)
	$(PY) lovt/data/mimic_cxr.py create_image_list --path $(DATA)/mimic-cxr_ap-pa_dataset

ifeq ($(NNODES),1)
pretrain-lovt: $(STAMP)
	$(PY) lovt/train.py +experiment=$(LOVT_EXPERIMENT) trainer.devices=$(GPUS) $(LOVT_DATA_ARG) $(ARGS)
else
pretrain-lovt: $(STAMP)
	$(LAUNCH) lovt/train.py +experiment=$(LOVT_EXPERIMENT) trainer.devices=$(GPUS) trainer.num_nodes=$(NNODES) \
		trainer.strategy=ddp hydra.run.dir=$(LOVT_RUN_DIR) $(LOVT_DATA_ARG) $(ARGS)
endif

# Downstream use of a pre-trained model: export its ResNet-50 (torchvision layout) for any fine-tuning code.
finetune-lovt: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make finetune-lovt CKPT=<lightning .ckpt> [ARGS=--out file]"; exit 2; }
	$(PY) lovt/export.py $(CKPT) $(ARGS)

demo-lovt: $(STAMP)
	$(PY) lovt/demo.py --sample $(SAMPLE) --runs $(RUNS) $(ARGS)

bench-lovt: $(STAMP)
	$(PY) lovt/bench.py --runs $(RUNS) $(ARGS)

DEMOS += demo-lovt
BENCHES += bench-lovt
