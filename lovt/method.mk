# LoVT / ConVIRT / CLIP (lovt/). Included by the top-level Makefile.
#
#   make prepare-lovt DATA=<MIMIC root>                      MIMIC-CXR-JPG + reports -> prepared dataset
#   make pretrain-lovt DATA=<prepared dataset> [GPUS=4] [LOVT_EXPERIMENT=CLIP_30] [ARGS="name=x ..."]
#   make pretrain-lovt NNODES=2 GPUS=8 NODE_RANK=0 RDZV_ENDPOINT=host0:29400 DATA=...   (torchrun, every node)
#   make plan-lovt [LOVT_EXPERIMENT=CLIP_30] [ARGS="pretrain_model.batch_size=64 --plan_gpu L40S"]   will it fit?
#   make finetune-lovt MODEL=LoVT_100 [GPUS=4] [ARGS=--evaluate_extended]   the localized downstream tasks
#   make prepare-lovt-downstream DOWNSTREAM=<datasets root>   RSNA, COVID rural, SIIM, Object-CXR, NIH boxes
#   make baselines-lovt | evaluate-lovt-baselines | lovt-results-table
#   make backbone-lovt CKPT=<lightning .ckpt>                 export the ResNet-50 (torchvision layout)
#   make demo-lovt | bench-lovt
#
# One node: Lightning's own DDP launcher starts the GPUS processes (trainer.devices). Several nodes: torchrun
# ($(LAUNCH)) starts them and Lightning joins its environment; the run folder is fixed so all ranks agree.

LOVT_EXPERIMENT ?= LoVT_100
LOVT_RUN_DIR ?= $(RUNS)/lovt/$(LOVT_EXPERIMENT)
LOVT_DATA_ARG = $(if $(DATA),dataset_path=$(DATA))

DOWNSTREAM ?= datasets
MODEL ?= LoVT_100
LOVT_BASELINES ?= chexpert_100 chexpert_30 byol_100 byol_30 simclr_100 simclr_30 pixelpro_100 pixelpro_30
LOVT_GPU_LIST = $(if $(filter-out 1,$(GPUS)),--gpus $(shell seq -s, 0 $$(($(GPUS)-1))))

.PHONY: prepare-lovt pretrain-lovt plan-lovt finetune-lovt backbone-lovt demo-lovt bench-lovt prepare-lovt-downstream \
	evaluate-lovt-baselines baselines-lovt lovt-results-table

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

# Will it fit? FLOPs, memory, fit and GPU-hours of LOVT_EXPERIMENT with ARGS (overrides and --plan_* flags),
# on no GPU (lovt/plan.py)
plan-lovt: $(STAMP)
	$(PY) lovt/train.py +experiment=$(LOVT_EXPERIMENT) $(ARGS) --plan

# The paper's downstream use: the localized tasks on a pre-trained model (name, folder or backbone_weights.pt).
finetune-lovt: $(STAMP)
	$(PY) lovt/evaluate.py evaluate_downstream $(MODEL) --datasets_root $(DOWNSTREAM) $(LOVT_GPU_LIST) $(ARGS)

# Export a checkpoint's ResNet-50 (torchvision layout) for any fine-tuning code.
backbone-lovt: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make backbone-lovt CKPT=<lightning .ckpt> [ARGS=--out file]"; exit 2; }
	$(PY) lovt/export.py $(CKPT) $(ARGS)

prepare-lovt-downstream: $(STAMP)
	$(PY) -m lovt.evaluation.prepare rsna $(DOWNSTREAM)/RSNA-Pneunomia-Detection
	$(PY) -m lovt.evaluation.prepare covid \
		$(DOWNSTREAM)/Opacity-Segmentation-COVID/opacity_segmentation_covid_chest_X_ray-master/covid_rural_annot
	$(PY) -m lovt.evaluation.prepare siim $(DOWNSTREAM)/siim-acr-pneumothorax-segmentation
	$(PY) -m lovt.evaluation.prepare object $(DOWNSTREAM)/object-CXR
	$(PY) -m lovt.evaluation.prepare nih $(DOWNSTREAM)/NIH_CXR_pathology_detection

baselines-lovt: $(STAMP)
	for c in $(LOVT_BASELINES); do $(LAUNCH) lovt/baselines/train.py $$c $(ARGS) || exit 1; done

evaluate-lovt-baselines: $(STAMP)
	for b in random $(LOVT_BASELINES); do \
		$(PY) lovt/evaluate.py evaluate_baseline_downstream $$b --evaluate_extended --datasets_root $(DOWNSTREAM) \
			$(LOVT_GPU_LIST) $(ARGS) || exit 1; \
	done

lovt-results-table: $(STAMP)
	$(PY) lovt/evaluate.py table --paper

# One fixed thread: the same command gives the same table (the order of float sums follows the threads).
LOVT_DEMO_THREADS ?= 1

demo-lovt: $(STAMP)
	OMP_NUM_THREADS=$(LOVT_DEMO_THREADS) MKL_NUM_THREADS=$(LOVT_DEMO_THREADS) \
		$(PY) lovt/demo.py --sample $(SAMPLE) --runs $(RUNS) --threads $(LOVT_DEMO_THREADS) $(ARGS)

bench-lovt: $(STAMP)
	$(PY) lovt/bench.py --runs $(RUNS) $(ARGS)

DEMOS += demo-lovt
BENCHES += bench-lovt
