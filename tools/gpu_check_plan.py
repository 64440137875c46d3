"""The sizes, the plan (stages and estimated seconds) and the device table of `make gpu-check`.

Kept apart from tools/gpu_check.py (which runs the stages) so that the plan reads in one place.

Each method's check is planned to finish in under 4 minutes on one H100 (80 GB), start-up included, one
method per command. The estimates below are NOT measurements: no line of this project has run on a GPU yet.
They add up process start-up (torch + CUDA context ~10 s, + MONAI / Lightning / transformers ~10 s more),
writing the generated data and its caches, and the steps: 10 warm-up + at least 30 timed steady-state steps
per timed stage. `report.md` shows each stage's planned seconds beside the measured ones, so the first GPU run
corrects them.

Steady state, honestly: every timed stage has an epoch (or pass) holding the warm-up and the timed steps, so
that the loader cannot have everything loaded during the first wait (8 workers x prefetch 2 = 16 batches in
flight); where the generated set is smaller, its lists repeat its samples (same work per sample; reads come
from the page cache, as the caches of a long run do after the first pass). Timed steps never include a
partial last batch (drop_last, or a step cap below the number of full batches).
"""

from shared import gpus

# (stage, estimated seconds on one H100); 'preflight', 'data' and 'flops' run inside the check's process
PLAN = {
    "semantic_genesis": [("preflight", 5), ("data", 20), ("pretrain", 35), ("finetune_segmentation", 35),
                         ("pretrain kill + resume", 55), ("flops", 10)],
    "dira": [("preflight", 5), ("data", 35), ("pretrain_dir", 40), ("pretrain_dira", 35),
             ("finetune_classification", 40), ("pretrain_dir kill + resume", 50), ("flops", 10)],
    "voco": [("preflight", 8), ("data", 35), ("pretrain", 55), ("finetune_btcv", 55),
             ("pretrain kill + resume", 60), ("flops", 10)],
    "lovt": [("preflight", 10), ("data", 35), ("pretrain", 50), ("evaluate_object_frozen_100", 40),
             ("pretrain kill + resume", 80), ("flops", 15)],
}
PLAN["transvw"] = PLAN["semantic_genesis"]
LIMIT_S = 240  # per method, start-up included

WARMUP_STEPS = {"cuda": 10, "cpu": 1}  # steps left out of the timing at the start of each timed run
MIN_TIMED_STEPS = {"cuda": 30, "cpu": 1}  # fewer: the figures are flagged as not steady state

# Sizes per device. "cuda": the originals' model and input sizes; "cpu": the same code paths, tiny.
# repeat: how many times the lists name each generated sample (see the module docstring)
PROFILES = {
    "cuda": {
        # 44 classes x 22 cubes x 3 resolutions = 2904 cubes = 45 full batches of 64 (+ 24): 45 steps capped
        "genesis": dict(width=32, batch=64, cube=(64, 64, 32), classes=44, per_class=22, steps=45, ft_batch=8,
                        ft_steps=40, workers=8),
        "dira": dict(img=224, source_px=1024, cache_px=512, batch=64, dira_batch=4, moco_k=65536, arch="resnet50",
                     images=64, steps=45, ft_batch=32, ft_steps=35, workers=8, log_every=5),
        "voco": dict(feature=48, base_roi=96, num_crops=4, roi=64, batch=2, sw=2, window=7, hidden=2048,
                     volumes=4, shape=(192, 192, 96), steps=45, ft_roi=96, ft_sw=4, ft_shape=(160, 160, 112),
                     ft_steps=35, workers=8),
        "lovt": dict(img=224, batch=32, arch="resnet50", bert=dict(hidden_size=768, num_layers=12, num_heads=12,
                                                                    intermediate_size=3072, vocab_size=28996),
                     patients=100, steps=48, accumulate=16, task="object_frozen_100", task_images=96,
                     eval_steps=45, workers=8, max_length=512),
    },
    "cpu": {
        "genesis": dict(width=4, batch=6, cube=(32, 32, 16), classes=4, per_class=2, steps=3, ft_batch=2,
                        ft_steps=2, workers=0),
        "dira": dict(img=64, source_px=96, cache_px=80, batch=4, dira_batch=2, moco_k=16, arch="resnet18", images=8,
                     steps=3, ft_batch=4, ft_steps=2, workers=0, log_every=1),
        "voco": dict(feature=12, base_roi=32, num_crops=2, roi=64, batch=1, sw=1, window=2, hidden=32,
                     volumes=2, shape=(48, 48, 32), steps=3, ft_roi=64, ft_sw=1, ft_shape=(64, 64, 64),
                     ft_steps=2, workers=0),
        "lovt": dict(img=64, batch=4, arch="resnet50", bert=dict(), patients=30, steps=3, accumulate=1,
                     task="object_frozen_100", task_images=24, eval_steps=3, eval_batch=8, workers=0,
                     max_length=128),
    },
}

PREFETCH = 2  # PyTorch's default prefetch_factor: batches each worker holds ready in /dev/shm


def profile(method, device):
    return PROFILES[device]["genesis" if method in ("semantic_genesis", "transvw") else method]


def loader_batch_bytes(method, p):
    """Bytes of one training batch as the loader workers hand it over (through /dev/shm)."""
    if method in ("semantic_genesis", "transvw"):
        return p["batch"] * 4 * p["cube"][0] * p["cube"][1] * p["cube"][2]  # float32 cubes (device transforms)
    if method == "dira":
        return p["batch"] * p["cache_px"] * p["cache_px"] * 3 // 2  # uint8 cached images, aspect up to 1.5
    if method == "voco":
        return p["batch"] * 4 * p["base_roi"] ** 2 * p["num_crops"] ** 2 * p["base_roi"]  # float32 volumes
    return p["batch"] * 256 * 384 + p["batch"] * 4 * p["max_length"] * 8  # uint8 images + token ids


def shm_need_bytes(method, p):
    return p["workers"] * PREFETCH * loader_batch_bytes(method, p)


# Disk the generated data, caches and checkpoints take (bytes, rough upper bounds)
DISK_NEED = {"cuda": {"semantic_genesis": 3e9, "transvw": 3e9, "dira": 4e9, "voco": 3e9, "lovt": 4e9},
             "cpu": {m: 1e9 for m in ("semantic_genesis", "transvw", "dira", "voco", "lovt")}}

def peak_tflops(device_name, precision="bf16", given=None):
    """The dense peak of `precision` for a device name (shared/gpus.py, the one device table); None when the
    name is not in the table. `given` (--peak_tflops) is the bf16/fp16 peak; the other precisions are not
    guessed from it."""
    if given:
        return float(given) if precision in ("bf16", "fp16") else None
    return gpus.peak_tflops(device_name or "", precision)
