"""Building blocks shared by two or more methods of the monorepo (no training framework).

unet3d       the Models Genesis / Semantic Genesis / TransVW 3D U-Net family, original key layout
weights      load_pretrained: every checkpoint layout of the five originals, with a match report
losses       soft Dice (the seeds' smoothing) and its multi-class form
checkpoint   atomic checkpoint writing, weights_only-safe RNG state for exact resumption
distributed  torchrun/DDP set-up that also runs as one CPU process
guards       stop on a non-finite loss naming the step, without a per-step host sync; fp16 skips left to
             the GradScaler (and the test-only NaN injection hook)
startup      start-up settings and checks: cuDNN autotuning, /dev/shm against what the loader workers hold
runfolder    runs side by side in a folder, their files named after them; refuse a same-named run of other settings
runlog       run folder: config, metrics CSV, TensorBoard, plots and image grids
timing       time blocked in the loader's next() vs the whole step (data_wait_s / step_s columns)
cliwarnings  warnings from the command lines on one line, without a source line
probe        frozen-feature probes (k-NN and linear, accuracy / AUROC) for 2D and 3D encoders
demo, bench  the `make demo` summary rows and `make bench` records
image_cache  decode-once cache of 2D image sets: one memory-mapped uint8 file plus an index, keyed by settings
augment2d    batched torchvision-equivalent 2D augmentation with per-sample parameters (GPU or loader workers)
plan         `--plan` of every CLI: FLOPs, memory (fake tensors, live storage bytes), fit and GPU-hours
gpus         data-centre GPUs: memory and dense peak TFLOP/s per precision
export       `make export-<method>`: a method folder plus shared/ as a standalone copy
release      weights release folders: safetensors + config.json + model card, one-line loading, sha256 checks
sample_data  the seeded sample datasets in the originals' on-disk layouts
genesis      the engine Semantic Genesis and TransVW share (self-discovery, restoration, pre-training,
             fine-tuning): one method family, its own room
"""
