"""`make gpu-check METHODS=<method>`: one method through its real command lines on one device, with what it measured.

    python tools/gpu_check.py --methods dira                 # one CUDA GPU, the original's model and input sizes
    python tools/gpu_check.py --methods dira --device cpu    # the same code paths at tiny sizes
    python tools/gpu_check.py --methods voco,lovt --modes plain --peak_tflops 989

One method per command, each planned to finish in under 4 minutes on one H100 including start-up (the plan,
stages and estimated seconds, is in tools/gpu_check_plan.py and in report.md beside the measured seconds).

1. Pre-flight (seconds): imports and versions of what the chosen methods need, the CUDA device's name and the
   peak of each precision, /dev/shm against what the loaders will hold, free disk. Everything missing is
   listed in ONE message, and the check exits 2 before any stage when something required is missing.
2. Data: sample data at the original's sizes, and the fast paths' caches built from it (DiRA's decode-once
   image cache, VoCo's pre-processed volume cache, LoVT's image cache and stored token ids).
3. Stages: each method's CLIs as a user runs them, on the fast paths (DiRA `--data_path cache` with
   device-side augmentation, VoCo `--cache_dir` with `--crops_on device`, LoVT `data_path=cache`), with
   persistent loader workers, at least 10 warm-up + 30 timed steps per timed stage on CUDA; then the
   pre-training killed (SIGKILL) once it has written a checkpoint and resumed with the CLI's resume flag.
   Optional mode `launch`: the pre-training under `torchrun --standalone --nproc_per_node=1`: this tests the
   torchrun launch only. torchrun then sets WORLD_SIZE=1 and no process group is created, so it runs neither
   NCCL nor DDP (one GPU cannot: NCCL needs one GPU per rank); DDP is tested on CPU with 2 gloo processes.
4. FLOPs per sample (torch.utils.flop_counter on the model the CLI builds), MFU against the dense peak of the
   precision the stage ran in.

report.json and report.md are rewritten (atomically) after every stage, so a timeout keeps what finished.
Prints one PASS/FAIL line per method, exits 1 if any failed. Nothing here imports SimpleITK.
"""

import argparse
import csv
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.methods import GENESIS_FAMILY, METHODS  # noqa: E402
from tools.gpu_check_plan import (  # noqa: E402
    DISK_NEED,
    LIMIT_S,
    MIN_TIMED_STEPS,
    PLAN,
    PREFETCH,
    WARMUP_STEPS,
    loader_batch_bytes,
    peak_tflops,
    profile,
    shm_need_bytes,
)

MODES = ("plain", "resume", "launch")
DEFAULT_MODES = ("plain", "resume")
MODE_LABELS = {"plain": "plain", "resume": "kill + resume", "launch": "torchrun launch, no DDP"}

# What each method's CLIs import (module, pip name); checked by the pre-flight
COMMON_NEEDS = [("torch", "torch"), ("torchvision", "torchvision"), ("numpy", "numpy"), ("scipy", "scipy"),
                ("pandas", "pandas"), ("PIL", "pillow"), ("tqdm", "tqdm"), ("matplotlib", "matplotlib"),
                ("tensorboard", "tensorboard"), ("safetensors", "safetensors"), ("filelock", "filelock"),
                ("sklearn", "scikit-learn")]
METHOD_NEEDS = {
    "semantic_genesis": [],
    "transvw": [],
    "dira": [("segmentation_models_pytorch", "segmentation-models-pytorch"), ("timm", "timm")],
    "voco": [("monai", "monai"), ("nibabel", "nibabel")],
    "lovt": [("pytorch_lightning", "pytorch-lightning"), ("torchmetrics", "torchmetrics"),
             ("transformers", "transformers"), ("tokenizers", "tokenizers"), ("hydra", "hydra-core"),
             ("omegaconf", "omegaconf"), ("antlr4", "antlr4-python3-runtime"), ("datasets", "datasets"),
             ("pyarrow", "pyarrow"), ("pydicom", "pydicom")],
}


# ---------------------------------------------------------------------------------------------- launching

def launcher(mode, nnodes=1, node_rank=0, endpoint=None):
    """The command prefix that starts a script: a plain interpreter or torchrun (one process per node)."""
    if mode != "launch":
        return [sys.executable]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1"]
    if nnodes == 1:
        return cmd + ["--standalone"]
    return cmd + [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                  f"--rdzv-endpoint={endpoint}", "--rdzv-id=gpu-check", "--max-restarts=0"]


def child_env(device, threads=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HYDRA_FULL_ERROR="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU check never touches a GPU, even where one is
        env.setdefault("OMP_NUM_THREADS", str(threads or 1))
    return env


def run_cli(cmd, log_path, env, timeout):
    """Run to the end; returns (returncode, wall seconds). Output goes to log_path. 124: timed out."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # the whole process group: loader workers too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
    return rc, time.perf_counter() - t0


def run_until(cmd, log_path, env, ready, timeout):
    """Start `cmd`, SIGKILL it (its whole process group) once ready() is true. Returns (killed, rc, wall)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None and time.perf_counter() - t0 < timeout:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True, proc.returncode, time.perf_counter() - t0
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return False, proc.returncode, time.perf_counter() - t0


def tail(path, n=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------------------------- metrics

def read_rows(csv_path):
    if not Path(csv_path).is_file():
        return []
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _num(row, key):
    try:
        return float(row.get(key) or "nan")
    except ValueError:
        return math.nan


def timing_summary(rows, batch, warmup_steps=1, row_steps=None):
    """Steady-state figures from the timing columns (shared/timing.py) of a metrics CSV.

    Each timing row holds per-step means over the steps since the previous one: `row_steps` steps (rows per
    epoch) or, by default, the difference of the `step` column. Leading rows are left out until the warm-up
    steps are covered (always the first row, when there are more). steps/s and samples/s are total steps over
    total seconds of the timed rows; batch: samples per step."""
    timed = [r for r in rows if math.isfinite(_num(r, "step_s"))]
    counts, previous = [], 0.0
    for r in timed:
        step = _num(r, "step")
        counts.append(row_steps if row_steps else max(1.0, step - previous))
        previous = step
    done, first = 0.0, 0
    while first < len(timed) - 1 and (first == 0 or done < warmup_steps):
        done += counts[first]
        first += 1
    timed, counts = timed[first:], counts[first:]
    mem = [_num(r, "peak_mem_gib") for r in rows if math.isfinite(_num(r, "peak_mem_gib"))]
    reserved = [_num(r, "peak_reserved_gib") for r in rows if math.isfinite(_num(r, "peak_reserved_gib"))]
    out = {"warmup_steps": done, "peak_mem_gib": max(mem) if mem else None,
           "peak_reserved_gib": max(reserved) if reserved else None}
    if not timed:
        return {**out, "timed_steps": 0}
    seconds = sum(n * _num(r, "step_s") for n, r in zip(counts, timed))
    wait = sum(n * _num(r, "data_wait_s") for n, r in zip(counts, timed) if math.isfinite(_num(r, "data_wait_s")))
    steps = sum(counts)
    return {**out, "timed_steps": steps, "step_s": seconds / steps, "steps_per_s": steps / seconds,
            "samples_per_s": steps / seconds * batch, "data_wait_share": wait / seconds}


def kept_rows(before, after, column):
    """How many leading rows of `after` are those of `before` (same step and `column`). Compared on these two
    only: a CSV writer may rewrite the file with more columns when the resumed run logs new ones."""
    n = 0
    for old, new in zip(before, after):
        if (old.get("step"), old.get(column)) != (new.get("step"), new.get(column)):
            break
        n += 1
    return n


def losses(rows, column):
    return [(int(float(r["step"])), _num(r, column)) for r in rows if math.isfinite(_num(r, column))]


def write_atomic(path, text):
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------------- data

def write_png(path, size, rng):
    """An 8-bit radiograph-like picture: smooth body, two darker lung fields, noise."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size] / size
    lungs = sum(np.exp(-((xx - cx) ** 2 + (yy - 0.5) ** 2) / 0.03) for cx in (0.3, 0.7))
    img = 0.6 - 0.3 * lungs
    img = img + 0.05 * rng.standard_normal((size, size)) + 0.2 * rng.random() * np.exp(
        -((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) / 0.005)
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)


def write_nifti(path, array, spacing):
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def abdomen(shape, rng, labels=False):
    """int16 HU volume with a body and a few organ blobs (and their label map)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    hu = np.full(shape, -1000, np.int16)
    body = (grid[0] ** 2 + grid[1] ** 2) < 0.8
    hu[body] = 20
    lab = np.zeros(shape, np.uint8)
    for organ in range(1, 14):
        c = rng.uniform(-0.5, 0.5, 3)
        blob = ((grid - c[:, None, None, None]) ** 2).sum(0) < rng.uniform(0.01, 0.05)
        hu[blob & body] = int(rng.uniform(-50, 250))
        lab[blob & body] = organ
    hu = (hu + rng.normal(0, 10, shape)).astype(np.int16)
    return (hu, lab) if labels else hu


def repeated(items, n):
    """The first n entries of items, items, items, ...: a list naming each generated sample several times."""
    return [items[i % len(items)] for i in range(n)]


def data_genesis(root, p):
    """Pattern cubes in the pattern generator's layout (classes x per_class x 3 resolutions) and fine-tuning
    cubes with nodule masks (.npy); the fine-tuning train set is ft_steps whole batches."""
    from shared.genesis.data import write_pattern_files

    patterns = root / "patterns"
    if not (patterns / "val_label1_vwGen_ex_ref_fold1.0.npy").is_file():
        write_pattern_files(patterns, p["per_class"], p["classes"], 1, shape=p["cube"], resolutions=3)
    cubes = root / "finetune"
    if not (cubes / "test_y.npy").is_file():
        cubes.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        grid = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in p["cube"]], indexing="ij"))
        for split, n in (("train", p["ft_batch"] * p["ft_steps"]), ("val", p["ft_batch"]), ("test", p["ft_batch"])):
            x = rng.uniform(0, 0.3, (n, *p["cube"])).astype(np.float32)
            r = rng.uniform(3, p["cube"][2] / 4, n)
            y = np.stack([((grid ** 2).sum(0) < ri ** 2) for ri in r]).astype(np.float32)
            np.save(cubes / f"{split}_x.npy", np.clip(x + 0.6 * y, 0, 1))
            np.save(cubes / f"{split}_y.npy", y)
    return patterns, cubes


def data_dira(root, p):
    """Radiograph PNGs, DiRA's list files (name + 14 labels, whole batches) and the decode-once caches of the
    pre-training lists (dira/cache_data.py) at cache_px. The lists need more names than there are generated
    pictures: each name is a link to one of them (a cache refuses a list naming an image twice)."""
    from dira.cache_data import build_list_cache

    images, cache, source = root / "images", root / "cache", root / "pictures"
    if not (root / ".complete").is_file():
        for folder in (images, cache, source):
            shutil.rmtree(folder, ignore_errors=True)
        images.mkdir(parents=True)
        source.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(p["images"]):
            write_png(source / f"{i:04d}.png", p["source_px"], rng)
        need = {"train": p["batch"] * p["steps"], "val": p["batch"] * 2, "ft_train": p["ft_batch"] * p["ft_steps"],
                "test": p["ft_batch"]}
        names = [f"{j:08d}_000.png" for j in range(max(need.values()))]
        for j, name in enumerate(names):
            os.symlink(os.path.relpath(source / f"{j % p['images']:04d}.png", images), images / name)
        labels = rng.integers(0, 2, (len(names), 14))
        lines = [f"{n} " + " ".join(map(str, lab)) for n, lab in zip(names, labels)]
        for name, n in need.items():
            (root / f"{name}.txt").write_text("\n".join(lines[:n]) + "\n")
        for name in ("train", "val"):
            build_list_cache(images, root / f"{name}.txt", cache, p["cache_px"], workers=p["workers"],
                             progress=False, log=lambda *a: None)
        (root / ".complete").write_text("ok\n")
    return images, cache


def data_voco(root, p):
    """CT volumes for pre-training (listed `batch x steps` times over) and a BTCV-style labelled set
    (imagesTr/labelsTr/dataset_0.json, its two training cases listed ft_steps times over)."""
    if (root / "btcv" / "dataset_0.json").is_file():
        return root / "pretrain.json", root / "btcv"
    rng = np.random.default_rng(0)
    (root / "ct").mkdir(parents=True, exist_ok=True)
    for i in range(p["volumes"]):
        write_nifti(root / "ct" / f"ct{i:03d}.nii.gz", abdomen(p["shape"], rng), (1.5, 1.5, 2.0))
    volumes = [{"image": f"ct/ct{i:03d}.nii.gz"} for i in range(p["volumes"])]
    (root / "pretrain.json").write_text(json.dumps({"training": repeated(volumes, p["batch"] * p["steps"])}))
    btcv = root / "btcv"
    for sub in ("imagesTr", "labelsTr"):
        (btcv / sub).mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(3):
        hu, lab = abdomen(p["ft_shape"], rng, labels=True)
        write_nifti(btcv / "imagesTr" / f"img{i:04d}.nii.gz", hu, (1.5, 1.5, 1.5))
        write_nifti(btcv / "labelsTr" / f"label{i:04d}.nii.gz", lab, (1.5, 1.5, 1.5))
        items.append({"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"})
    (btcv / "dataset_0.json").write_text(json.dumps({"training": repeated(items[:2], p["ft_steps"]),
                                                     "validation": items[2:]}))
    return root / "pretrain.json", btcv


def fill_voco_cache(train_args):
    """Pre-process every distinct listed volume into the pre-training's --cache_dir (MONAI's
    PersistentDataset, exactly as voco/train.py builds it), so that the timed run reads cached volumes."""
    from voco.data import build_pretrain_dataset
    from voco.train import build_datalist, get_parser

    args = get_parser().parse_args(train_args)
    items = build_datalist(args.json_list, args.data_dir)
    dataset = build_pretrain_dataset(args, items)
    seen = set()
    for i, item in enumerate(items):
        if item["image"] not in seen:
            seen.add(item["image"])
            dataset.load(i)


def repeat_parquet_split(path, n_rows):
    """Rewrite a parquet split with its rows repeated up to at least n_rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if table.num_rows < n_rows:
        table = pa.concat_tables([table] * math.ceil(n_rows / table.num_rows))
        pq.write_table(table, path)


def data_lovt(root, p):
    """A BERT of the configured size (random init, local tokenizer), MIMIC-CXR studies prepared by LoVT's
    own preparation (parquet; the training split's studies repeated up to `batch x steps`), its fast path's
    caches (lovt/data/prepare_cache.py: image cache + stored token ids), and object-CXR images for the
    localized task, prepared by LoVT (the training csv's rows repeated up to `task batch x eval_steps`)."""
    from lovt.data.mimic_cxr import create_dataset
    from lovt.data.prepare_cache import build_caches
    from lovt.evaluation.data import OBJECT, SAMPLE_FOLDERS
    from lovt.evaluation.demo import prepare_sample
    from lovt.evaluation.tasks import get_task
    from lovt.models.report_encoder import load_tokenizer
    from lovt.synthetic import build_tiny_language_model
    from shared.sample_data.localized_extra import write_object_cxr
    from shared.sample_data.mimic import write_mimic

    bert = root / "bert"
    if not (bert / "config.json").is_file():
        build_tiny_language_model(bert, **p["bert"])
    sample, prepared = root / "sample", root / "mimic_prepared"
    if not (root / ".complete").is_file():  # all or nothing: the prepared dataset links to the images
        for folder in (sample, prepared):
            shutil.rmtree(folder, ignore_errors=True)
        mimic = sample / "mimic-cxr-jpg"
        write_mimic(mimic, np.random.default_rng(0), n_patients=p["patients"])
        create_dataset(mimic, config="mimic-cxr_ap-pa", target_path=prepared, fmt="parquet", num_workers=1)
        repeat_parquet_split(prepared / "train" / "data.parquet", p["batch"] * p["steps"])
        build_caches(prepared, 256, load_tokenizer(str(bert)), p["max_length"], p["workers"])
        n = p["task_images"]
        write_object_cxr(sample / SAMPLE_FOLDERS[OBJECT], np.random.default_rng(1), n_train=n, n_dev=max(8, n // 4))
        prepared_task = prepare_sample(sample, OBJECT)  # LoVT's own preparation of the downstream dataset
        train_csv = prepared_task / "train.csv"
        header, *rows = train_csv.read_text().splitlines()
        need = (p.get("eval_batch") or get_task(p["task"]).batch_size) * p["eval_steps"]
        write_atomic(train_csv, "\n".join([header, *repeated(rows, max(need, len(rows)))]) + "\n")
        (root / ".complete").write_text("ok\n")
    return bert, prepared, sample


# ------------------------------------------------------------------------------------------------ stages

class Stage:
    """One CLI run of a method: its command, where it logs, what a step holds.

    batch: samples per step (None: the task's, read from the run's config.json); row_steps: steps per
    timing row when the CSV has a row per epoch (None: the `step` column counts them); precision: what the
    step computes in (bf16, fp16, or fp32, whose convolutions cuDNN runs on TF32 tensor cores by default:
    measured against the TF32 peak)."""

    def __init__(self, name, script, args, csv_path, batch, loss, precision, flops=None, row_steps=None):
        self.name, self.script, self.args, self.csv_path = name, script, list(args), Path(csv_path)
        self.batch, self.loss, self.precision, self.flops, self.row_steps = batch, loss, precision, flops, row_steps
        self.launch_args, self.resume = None, None

    def command(self, args=None, mode="plain", **launch):
        return launcher(mode, **launch) + [self.script] + list(self.args if args is None else args)


class Resume:
    """How the pre-training is killed and resumed: the checkpoint to wait for, the flags of each part."""

    def __init__(self, checkpoint, long_args, resume_args, csv_path):
        self.checkpoint, self.long_args, self.resume_args = Path(checkpoint), long_args, resume_args
        self.csv_path = Path(csv_path)


def genesis_stages(method, run, data, p, device):
    patterns, cubes = data
    cuda = device == "cuda"
    amp = ["--amp", "on" if cuda else "off"]
    common = ["--data_dir", str(patterns), "--cls_classes", str(p["classes"]), "--batch_size", str(p["batch"]),
              "--width", str(p["width"]), "--input_rows", str(p["cube"][0]), "--input_cols", str(p["cube"][1]),
              "--input_deps", str(p["cube"][2]), "--num_workers", str(p["workers"]), "--n_images", "0",
              "--device", device, *amp]  # pre-training: persistent workers whenever workers > 0 (always)
    exp_dir = run / "pretrain" / "en_de"
    name = "semantic_genesis_chest_ct" if method == "semantic_genesis" else "TransVW_chest_ct"
    epoch_steps = math.ceil(p["classes"] * p["per_class"] * 3 / p["batch"])  # the last one partial

    def train(out, steps):
        return common + ["--output_dir", str(out), "--max_steps", str(steps), "--exp_name", name]

    pre = Stage("pretrain", f"{method}/train.py", train(run / "pretrain", p["steps"]), exp_dir / f"{name}.metrics.csv",
                p["batch"], "train_loss", "bf16" if cuda else "fp32", flops=("genesis_pretrain", p))
    pre.launch_args = train(run / "pretrain_launch", p["steps"])
    resume_dir = run / "pretrain_resume" / "en_de"  # killed once <name>.last.pt (end of epoch 1) exists
    pre.resume = Resume(resume_dir / f"{name}.last.pt", train(run / "pretrain_resume", 100000),
                        train(run / "pretrain_resume", epoch_steps + 4) + ["--resume"],
                        resume_dir / f"{name}.metrics.csv")
    ft = Stage("finetune_segmentation", f"{method}/finetune_segmentation.py",
               ["--data_dir", str(cubes), "--weights", str(exp_dir / f"{name}.pt"), "--width", str(p["width"]),
                "--batch_size", str(p["ft_batch"]), "--nb_epoch", "2", "--input_rows", str(p["cube"][0]),
                "--input_cols", str(p["cube"][1]), "--input_deps", str(p["cube"][2]), "--device", device, *amp,
                "--num_workers", str(p["workers"]), "--persistent_workers", "--output_dir", str(run / "finetune")],
               run / "finetune" / f"{name}_segmentation.metrics.csv", p["ft_batch"], "train_loss",
               "bf16" if cuda else "fp32",
               flops=("genesis_finetune", p), row_steps=p["ft_steps"])
    return [pre, ft]


def dira_stages(run, data, p, device):
    images, cache = data
    root = images.parent
    cuda = device == "cuda"

    def args(out, mode, batch, epochs, steps, more=()):
        return [str(images), "-a", p["arch"], "--mlp", "--moco-t", "0.2", "--cos", "--moco-k", str(p["moco_k"]),
                "--img_size", str(p["img"]), "-j", str(p["workers"]), "--persistent_workers",
                "--train_list", str(root / "train.txt"), "--val_list", str(root / "val.txt"),
                "--data_path", "cache", "--cache_dir", str(cache), "--cache_size", str(p["cache_px"]),
                "--augment_on", "device" if cuda else "auto", "--max_steps_per_epoch", str(steps),
                "--preview_images", "0", "-p", str(p["log_every"]), *(["--amp", "bf16"] if cuda else []),
                "--mode", mode, "--batch-size", str(batch), "--epochs", str(epochs), "--checkpoint-dir", str(out),
                *more]  # no --seed: it turns cuDNN autotuning off

    dir_ckpt = run / "pretrain" / "DiRA_moco" / "dir" / "checkpoint.pth"
    pre = Stage("pretrain_dir", "dira/train.py", args(run / "pretrain", "dir", p["batch"], 1, p["steps"]),
                run / "pretrain" / "DiRA_moco" / "dir" / "metrics.csv", p["batch"], "loss",
                "bf16" if cuda else "fp32", flops=("dira", p, "dir", p["batch"]))
    pre.launch_args = args(run / "pretrain_launch", "dir", p["batch"], 1, p["steps"])
    resume_dir = run / "pretrain_resume" / "DiRA_moco" / "dir"
    short = min(p["steps"], 10)
    pre.resume = Resume(resume_dir / "checkpoint.pth", args(run / "pretrain_resume", "dir", p["batch"], 1000, short),
                        args(run / "pretrain_resume", "dir", p["batch"], 2, short,
                             ["--resume", str(resume_dir / "checkpoint.pth")]), resume_dir / "metrics.csv")
    dira = Stage("pretrain_dira", "dira/train.py",
                 args(run / "pretrain", "dira", p["dira_batch"], 1, p["steps"],
                      ["--generator_pre_trained_weights", str(dir_ckpt)]),
                 run / "pretrain" / "DiRA_moco" / "dira" / "metrics.csv", p["dira_batch"], "loss",
                 "bf16" if cuda else "fp32", flops=("dira", p, "dira", p["dira_batch"]))
    ft_out = run / "finetune"
    ft = Stage("finetune_classification", "dira/finetune.py",
               ["classification", "--data_dir", str(images), "--train_list", str(root / "ft_train.txt"),
                "--val_list", str(root / "test.txt"), "--test_list", str(root / "test.txt"), "--init", "dira",
                "--proxy_dir", str(run / "pretrain" / "DiRA_moco" / "dira" / "checkpoint.pth"), "-a", p["arch"],
                "--img_size", str(p["img"]), "--batch_size", str(p["ft_batch"]), "--epochs", "2",
                "--workers", str(p["workers"]), "--persistent_workers", "--device", device,
                "--output_dir", str(ft_out)],
               ft_out / "classification_dira_trial0" / "metrics.csv", p["ft_batch"], "train_loss",
               "tf32" if cuda else "fp32", flops=("dira_finetune", p), row_steps=p["ft_steps"])
    return [pre, dira, ft]


def voco_stages(run, data, p, device):
    (pre_json, btcv), cache = data, data[0].parent / "cache"
    cuda = device == "cuda"
    model = ["--feature_size", str(p["feature"]), "--window_size", str(p["window"]), "--hidden_dim", str(p["hidden"]),
             "--out_dim", str(p["hidden"])]
    common = ["--json_list", str(pre_json), "--base_roi", str(p["base_roi"]), "--num_crops", str(p["num_crops"]),
              "--roi_x", str(p["roi"]), "--roi_y", str(p["roi"]), "--roi_z", str(p["roi"]),
              "--batch_size", str(p["batch"]), "--sw_batch_size", str(p["sw"]), "--workers", str(p["workers"]),
              "--use_checkpoint", "True", "--device", device, "--cache_dir", str(cache),
              "--crops_on", "device" if cuda else "auto", *model]
    # one pass of the list holds every step, so its loader (built per pass, no persistent workers) never restarts

    def train(out, steps, eval_num):
        return common + ["--logdir", str(out), "--num_steps", str(steps), "--eval_num", str(eval_num),
                         "--save_every", "0"]

    fill_voco_cache(train(run / "pretrain", p["steps"], p["steps"]))
    pre = Stage("pretrain", "voco/train.py", train(run / "pretrain", p["steps"], p["steps"]),
                run / "pretrain" / "voco_pretrain.metrics.csv", p["batch"], "loss", "fp16" if cuda else "fp32",
                flops=("voco_pretrain", p))
    pre.launch_args = train(run / "pretrain_launch", p["steps"], p["steps"])
    every = 5 if cuda else 2
    ckpt = run / "pretrain_resume" / "model_current_epoch.pt"
    pre.resume = Resume(ckpt, train(run / "pretrain_resume", 100000, every),
                        train(run / "pretrain_resume", 2 * every, every) + ["--resume", str(ckpt)],
                        run / "pretrain_resume" / "voco_pretrain.metrics.csv")
    r = str(p["ft_roi"])
    ft = Stage("finetune_btcv", "voco/finetune.py",
               ["--data_dir", str(btcv), "--json_list", "dataset_0.json", "--pretrained_checkpoint",
                str(run / "pretrain" / "model_final_epoch.pt"), "--feature_size", str(p["feature"]),
                "--window_size", str(p["window"]), "--roi_x", r, "--roi_y", r, "--roi_z", r,
                "--sw_batch_size", str(p["ft_sw"]), "--max_epochs", "2", "--val_every", "2", "--warmup_epochs", "0",
                "--workers", str(p["workers"]), "--persistent_workers", "True", "--use_checkpoint", "True",
                "--device", device, "--noamp", "False", "--amp_dtype", "bfloat16", "--infer_overlap", "0.5",
                "--logdir", str(run / "finetune"), "--cache_dir", str(run / "cache_ft")],
               run / "finetune" / "voco_finetune.metrics.csv", p["ft_sw"], "train_loss", "bf16" if cuda else "fp32",
               flops=("voco_finetune", p), row_steps=p["ft_steps"])
    return [pre, ft]


def lovt_overrides(bert, prepared, p, device):
    out = ["+experiment=LoVT_100", "pretrain_dataset=mimic-cxr_sample", f"dataset_path={prepared}",
           "data_path=cache", "cache_size=256", "augment_on=auto",
           f"pretrain_model.encoder_a.input_size=[{p['img']},{p['img']}]",
           f"pretrain_model.encoder_b.language_encoder={bert}", f"pretrain_model.batch_size={p['batch']}",
           "pretrain_model.encoder_a.backbone_pretrained=false", "print_config=false", "attention_plots=0",
           "export_run=false", f"num_dataloader_workers={p['workers']}", "callback.early_stopping.patience=1000",
           f"trainer.accumulate_grad_batches={p['accumulate']}", "+trainer.limit_val_batches=1",
           "trainer.log_every_n_steps=1"]
    if device == "cuda":
        out += ["trainer.accelerator=gpu", "trainer.precision=16-mixed"]  # the original: fp16 (precision 16)
    else:
        out += ["trainer.accelerator=cpu", "trainer.precision=32-true", "pretrain_model.d_z=32",
                "pretrain_model.d_hidden=64", f"pretrain_model.encoder_b.max_length={p['max_length']}"]
    return out


def lovt_stages(run, data, p, device):
    bert, prepared, sample = data
    cuda = device == "cuda"

    def train(out, epochs, batches):
        return lovt_overrides(bert, prepared, p, device) + [
            f"+trainer.limit_train_batches={batches}", f"pretrain_model.max_epochs={epochs}",
            f"hydra.run.dir={out}", f"models.base_path={run / 'models'}"]

    # a timing row per optimizer step: accumulate batches, each of `batch` studies
    pre = Stage("pretrain", "lovt/train.py", train(run / "pretrain", 1, p["steps"]), run / "pretrain" / "metrics.csv",
                p["batch"], "train/total_loss_step", "fp16" if cuda else "fp32", flops=("lovt_pretrain", p, bert),
                row_steps=p["accumulate"])
    pre.launch_args = train(run / "pretrain_launch", 1, p["steps"])
    ckpt = run / "pretrain_resume" / "checkpoints" / "last.ckpt"
    short = p["accumulate"]
    pre.resume = Resume(ckpt, train(run / "pretrain_resume", 1000, short),
                        train(run / "pretrain_resume", 2, short) + ["resume=last"],
                        run / "pretrain_resume" / "metrics.csv")
    ev_out = run / "evaluate"
    ev = Stage("evaluate_" + p["task"], "lovt/evaluate.py",
               ["run_task", p["task"], "--weights", str(run / "pretrain" / "checkpoints" / "backbone_weights.pt"),
                "--out", str(ev_out), "--sample_root", str(sample), "--max_steps", str(p["eval_steps"]),
                "--max_epochs", "1", "--input_size", str(p["img"]), "--num_workers", str(p["workers"]),
                "--persistent_workers", "--device", device, "--quiet",
                *(["--batch_size", str(p["eval_batch"])] if p.get("eval_batch") else [])],
               ev_out / "metrics.csv", None, "train/loss", "fp16" if cuda else "fp32",
               flops=("lovt_task", p, sample))
    return [pre, ev]


def make_data(method, out, device, p):
    """The method's generated data and caches under <out>/data/<device>/<family> (kept between checks)."""
    family = "genesis" if method in GENESIS_FAMILY else method
    root = out / "data" / device / family  # sizes differ per device: data too
    root.mkdir(parents=True, exist_ok=True)
    maker = {"genesis": data_genesis, "dira": data_dira, "voco": data_voco, "lovt": data_lovt}[family]
    return maker(root, p)


def build_stages(method, out, device, data, p):
    run = out / method
    if method in GENESIS_FAMILY:
        return genesis_stages(method, run, data, p, device)
    if method == "dira":
        return dira_stages(run, data, p, device)
    if method == "voco":
        return voco_stages(run, data, p, device)
    if method == "lovt":
        return lovt_stages(run, data, p, device)
    raise ValueError(f"unknown method {method!r}; one of {METHODS}")


# ------------------------------------------------------------------------------------------------- FLOPs

def count_flops(kind, device):
    """Model FLOPs of one forward + backward of one sample (torch.utils.flop_counter), the CLI's model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    name, p, *rest = kind
    dev = torch.device(device)
    n = 2  # samples in the counted batch (BatchNorm needs 2); FLOPs scale linearly with the batch
    with FlopCounterMode(display=False) as counter:
        if name == "genesis_pretrain":
            from shared.genesis.pretrain import build_model, genesis_loss
            model = build_model("en_de", p["classes"], p["width"]).to(dev)
            x = torch.rand(n, 1, *p["cube"], device=dev)
            loss = genesis_loss(model(x), x, torch.zeros(n, dtype=torch.long, device=dev))[0]
        elif name == "genesis_finetune":
            from shared.losses import dice_coef_loss
            from shared.unet3d import UNet3D
            model = UNet3D(n_class=1, width=p["width"]).to(dev)
            x = torch.rand(n, 1, *p["cube"], device=dev)
            loss = dice_coef_loss((x > 0.5).float(), model(x))
        elif name == "dira":
            from dira import engine
            from dira.models import Discriminator, build_generator
            from dira.train import parse_args
            mode, _ = rest
            args = parse_args(["x", "-a", p["arch"], "--mlp", "--moco-k", str(p["moco_k"]), "--mode", mode,
                               "--img_size", str(p["img"])])
            model, disc = build_generator(args).to(dev), Discriminator(channels=1).to(dev)
            x = torch.rand(n, 3, p["img"], p["img"], device=dev)  # two 3-channel views, a 1-channel target
            target = torch.rand(n, 1, p["img"], p["img"], device=dev)
            loss = engine.generator_losses(model, disc, [x, x.clone(), target], args)[0]
            if mode == "dira":
                loss = loss + disc(target).mean()  # the discriminator's own step: one more forward + backward
        elif name == "dira_finetune":
            import torchvision
            model = torchvision.models.__dict__[p["arch"]](num_classes=14).to(dev)
            x = torch.rand(n, 3, p["img"], p["img"], device=dev)
            loss = model(x).sigmoid().mean()
        elif name == "voco_pretrain":
            from voco.models import VoCo
            n = 1
            model = VoCo(1, p["feature"], p["hidden"], p["hidden"], use_checkpoint=False,
                         window_size=p["window"]).to(dev)
            k = p["num_crops"] ** 2
            img = torch.rand(p["sw"], 1, p["roi"], p["roi"], p["roi"], device=dev)
            bases = torch.rand(k, 1, p["roi"], p["roi"], p["roi"], device=dev)
            labels = torch.full((1, p["sw"], k), 1.0 / k, dtype=torch.float64, device=dev)
            pos, neg, reg, _ = model(img, bases, labels)
            loss = pos + neg + reg
        elif name == "voco_finetune":
            from voco.models import swinunetr
            n = 1
            model = swinunetr(1, 14, p["feature"], False, 0.0, 3, False, window_size=p["window"]).to(dev)
            r = p["ft_roi"]
            loss = model(torch.rand(n, 1, r, r, r, device=dev)).mean()
        elif name == "lovt_pretrain":
            loss = _lovt_loss(p, rest[0], dev, n)
        elif name == "lovt_task":
            loss = _lovt_task_loss(p, rest[0], dev, n)
        else:
            raise ValueError(name)
        loss.backward()
    return counter.get_total_flops() / n


def _lovt_loss(p, bert, dev, n):
    from hydra import compose, initialize_config_dir

    from lovt.datamodule import PretrainCollator
    from lovt.engine import BiModalModelRepresentationLearner
    from lovt.models.report_encoder import load_tokenizer
    from lovt.synthetic import SyntheticImageTextDataset
    from lovt.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=[o for o in lovt_overrides(bert, "x", p, dev.type)
                                                         if not o.startswith(("+trainer", "~"))])
    module = BiModalModelRepresentationLearner(cfg.pretrain_model).to(dev)
    collate = PretrainCollator(load_tokenizer(str(bert)))
    batch = collate([SyntheticImageTextDataset(n, size=p["img"])[i] for i in range(n)])
    batch = {k: v.to(dev) if hasattr(v, "to") else v for k, v in batch.items()}
    return module.model(batch)[0]


def _lovt_task_loss(p, sample, dev, n):
    from lovt.evaluation.data import build_split, collate
    from lovt.evaluation.engine import Evaluator, build_model
    from lovt.evaluation.tasks import get_task

    task = get_task(p["task"])
    split = build_split(task.dataset, "train", p["img"], sample_root=str(sample))
    model = build_model(task, "random", p["img"], len(split.target_names)).to(dev)
    model.train()
    return Evaluator(task, model, split.target_names).loss(collate([split[i] for i in range(n)]), task.frozen, dev)[0]




# --------------------------------------------------------------------------------------------- pre-flight

def gib(n):
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def preflight(methods, device, out, workers_flag="--workers"):
    """Seconds, before any stage: imports + versions, the CUDA device and its peaks, /dev/shm, free disk.
    Returns (record, problems): problems is the list of what is missing (empty: go)."""
    from importlib.metadata import PackageNotFoundError, version

    t0 = time.perf_counter()
    needs = list(COMMON_NEEDS)
    for m in methods:
        needs += [n for n in METHOD_NEEDS[m] if n not in needs]
    versions, problems = {}, []
    for module, dist in needs:
        try:
            importlib.import_module(module)
        except Exception as err:  # ImportError, or a package that fails while importing
            problems.append(f"python package {dist} (import {module}: {type(err).__name__}: {err})")
            continue
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "?"
    rec = {"stage": "preflight", "versions": versions, "python": sys.version.split()[0]}
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append("a CUDA device (torch.cuda.is_available() is False; `--device cpu` runs the CPU check)")
        else:
            name = torch.cuda.get_device_name(0)
            props = torch.cuda.get_device_properties(0)
            rec.update(device_name=name, capability=f"{props.major}.{props.minor}",
                       memory_gib=props.total_memory / 2**30, cuda=torch.version.cuda,
                       peaks_tflops={k: peak_tflops(name, k) for k in ("bf16", "fp16", "tf32", "fp32")})
            if rec["peaks_tflops"]["bf16"] is None:
                rec["warning"] = f"{name!r} is not in the peak table: MFU needs --peak_tflops (its bf16 dense peak)"
    shm_free = shutil.disk_usage("/dev/shm").free if Path("/dev/shm").is_dir() else None
    rec["shm_free_bytes"] = shm_free
    for m in methods:
        p = profile(m, device)
        need = shm_need_bytes(m, p)
        rec.setdefault("shm_need_bytes", {})[m] = need
        if shm_free is not None and need > shm_free:
            problems.append(f"/dev/shm: {gib(shm_free)} free, {m}'s loaders hold up to {gib(need)} there "
                            f"({p['workers']} workers x prefetch {PREFETCH} x {gib(loader_batch_bytes(m, p))} per "
                            f"batch): give the container more (docker --shm-size=4g) or lower {workers_flag}")
    out.mkdir(parents=True, exist_ok=True)
    disk_free = shutil.disk_usage(out).free
    disk_need = sum(DISK_NEED[device][m] for m in methods)
    rec.update(disk_free_bytes=disk_free, disk_need_bytes=disk_need)
    if disk_free < disk_need:
        problems.append(f"disk: {gib(disk_free)} free under {out}, the data, caches and checkpoints take up to "
                        f"{gib(disk_need)}: choose another --out")
    rec.update(wall_s=time.perf_counter() - t0, ok=not problems, missing=problems)
    return rec, problems


# ------------------------------------------------------------------------------------------------- check

class Check:
    """One method's check: runs its stages in order, appending a record per stage to `entry` and calling
    `save()` after each one (report.json / report.md rewritten, so a timeout keeps what finished)."""

    def __init__(self, method, out, device, modes, timeout, threads, save, peak_override=None, workers=None,
                 no_flops=False):
        self.method, self.out, self.device, self.modes = method, out, device, modes
        self.timeout, self.save, self.peak_override, self.no_flops = timeout, save, peak_override, no_flops
        self.env = child_env(device, threads)
        self.logs = out / "logs" / method
        self.p = dict(profile(method, device))
        if workers is not None:
            self.p["workers"] = workers
        self.plan = dict(PLAN[method])
        self.entry = {"method": method, "ok": True, "errors": [], "stages": [], "plan_s": sum(self.plan.values())}

    def record(self, rec, error=None):
        rec["plan_s"] = self.plan.get(rec["stage"] if rec.get("mode", "plain") == "plain"
                                      else f"{rec['stage']} {rec['mode']}")
        rec["ok"] = error is None
        self.entry["stages"].append(rec)
        if error:
            self.entry["errors"].append(error)
            self.entry["ok"] = False
        self.save()

    def stage_timeout(self, name):
        if self.timeout:
            return self.timeout
        return 3 * self.plan.get(name, 60) + 60 if self.device == "cuda" else 1800

    def run(self):
        t0 = time.perf_counter()
        self.logs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.out / self.method, ignore_errors=True)  # a fresh run folder each time (data kept)
        try:
            stages = self.data()
        except Exception as err:  # data preparation failed: the method fails, others still run
            self.record({"stage": "data", "wall_s": time.perf_counter() - t0},
                        f"data: {type(err).__name__}: {err}")
            return self.finish(t0)
        for stage in stages:
            if "plain" in self.modes:
                self.plain(stage)
            if "launch" in self.modes and stage.launch_args is not None:
                self.launch(stage)
        if "resume" in self.modes and stages[0].resume is not None:
            self.kill_and_resume(stages[0])
        if not self.no_flops:
            self.flops(stages)
        return self.finish(t0)

    def finish(self, t0):
        self.entry["wall_s"] = time.perf_counter() - t0
        self.save()
        return self.entry

    def data(self):
        t0 = time.perf_counter()
        data = make_data(self.method, self.out, self.device, self.p)
        stages = build_stages(self.method, self.out, self.device, data, self.p)  # VoCo fills its cache here
        self.record({"stage": "data", "wall_s": time.perf_counter() - t0})
        return stages

    def plain(self, stage):
        log = self.logs / f"{stage.name}.log"
        rc, wall = run_cli(stage.command(), log, self.env, self.stage_timeout(stage.name))
        rows = read_rows(stage.csv_path)
        rec = {"stage": stage.name, "mode": "plain", "command": " ".join(stage.command()), "rc": rc, "wall_s": wall,
               "precision": stage.precision, "batch": stage.batch,
               **timing_summary(rows, stage.batch or 1, WARMUP_STEPS[self.device], stage.row_steps)}
        if stage.batch is None and rec.get("steps_per_s") and (stage.csv_path.parent / "config.json").is_file():
            config = json.loads((stage.csv_path.parent / "config.json").read_text())
            rec["batch"] = config["task_config"]["batch_size"]  # the task's batch, from the run's config
            rec["samples_per_s"] = rec["steps_per_s"] * rec["batch"]
        rec["losses"] = losses(rows, stage.loss)[-3:]
        if rec["timed_steps"] < MIN_TIMED_STEPS[self.device]:
            rec["note"] = f"only {rec['timed_steps']:g} timed steps: not a steady-state figure"
        error = None
        if rc != 0:
            error = f"{stage.name}: {'timed out' if rc == 124 else f'exit {rc}'}\n{tail(log)}"
        elif not rows:
            error = f"{stage.name}: no metrics in {stage.csv_path}"
        self.record(rec, error)

    def launch(self, stage):
        log = self.logs / f"{stage.name}_launch.log"
        cmd = stage.command(stage.launch_args, mode="launch")
        rc, wall = run_cli(cmd, log, self.env, self.stage_timeout(stage.name))
        self.record({"stage": stage.name, "mode": MODE_LABELS["launch"], "command": " ".join(cmd), "rc": rc,
                     "wall_s": wall},
                    None if rc == 0 else f"{stage.name} (torchrun launch): exit {rc}\n{tail(log)}")

    def kill_and_resume(self, stage):
        r, name = stage.resume, f"{stage.name} kill + resume"
        timeout = self.stage_timeout(name)
        killed, rc, wall = run_until(stage.command(r.long_args), self.logs / f"{stage.name}_killed.log", self.env,
                                     r.checkpoint.is_file, timeout)
        time.sleep(0.2)
        before = read_rows(r.csv_path)
        rec = {"stage": stage.name, "mode": MODE_LABELS["resume"], "killed": killed, "killed_after_s": wall,
               "checkpoint": str(r.checkpoint)}
        if not killed:
            error = (f"no checkpoint {r.checkpoint} before the process ended (exit {rc})\n"
                     + tail(self.logs / f"{stage.name}_killed.log"))
            return self.record({**rec, "wall_s": wall}, f"{name}: {error}")
        loss_before = losses(before, stage.loss)
        rc, wall2 = run_cli(stage.command(r.resume_args), self.logs / f"{stage.name}_resumed.log", self.env, timeout)
        after = read_rows(r.csv_path)
        new = after[kept_rows(before, after, stage.loss):]
        loss_after = losses(new, stage.loss)
        rec.update(rc=rc, resumed_wall_s=wall2, wall_s=wall + wall2,
                   loss_before=loss_before[-1] if loss_before else None,
                   loss_after=loss_after[0] if loss_after else None)
        error = None
        if rc != 0:
            error = f"the resumed run exited {rc}\n" + tail(self.logs / f"{stage.name}_resumed.log")
        elif not loss_after:
            error = f"the resumed run logged no {stage.loss} in {r.csv_path}"
        elif loss_before and loss_after[0][0] <= loss_before[0][0]:
            error = (f"the resumed run started again from step {loss_after[0][0]} (first step before the kill "
                     f"{loss_before[0][0]}): it did not continue from the checkpoint")
        self.record(rec, None if error is None else f"{name}: {error}")

    def flops(self, stages):
        """FLOPs per sample and MFU of every timed stage; counted after the runs (no GPU memory held then)."""
        t0 = time.perf_counter()
        name = device_name(self.device)
        done = {}
        for stage in stages:
            try:
                done[stage.name] = count_flops(stage.flops, self.device)
            except Exception as err:  # reported, not a failure of the method's CLIs
                done[stage.name] = f"{type(err).__name__}: {err}"
        for rec in self.entry["stages"]:
            if rec.get("mode") != "plain" or rec["stage"] not in done:
                continue
            if isinstance(done[rec["stage"]], str):
                rec["flops_error"] = done[rec["stage"]]
                continue
            rec["flops_per_sample"] = done[rec["stage"]]
            peak = peak_tflops(name, rec["precision"], self.peak_override) if self.device == "cuda" else None
            rec["peak_tflops"] = peak
            if peak and rec.get("samples_per_s"):
                rec["mfu"] = rec["flops_per_sample"] * rec["samples_per_s"] / (peak * 1e12)
        if self.device == "cuda":
            import torch
            torch.cuda.empty_cache()
        self.record({"stage": "flops", "wall_s": time.perf_counter() - t0})


def device_name(device):
    if device != "cuda":
        return "CPU"
    import torch
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"


# ------------------------------------------------------------------------------------------------ report

def step_loss(pair):
    return "?" if not pair else f"step {pair[0]} (loss {pair[1]:.4g})"


def fmt(v, spec=".3g", none="-"):
    return none if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def stage_status(s):
    return "ok" if s.get("ok") else "FAIL"


def write_report(report, out):
    """report.json and report.md, each replaced atomically (a reader never sees half a file)."""
    write_atomic(out / "report.json", json.dumps(report, indent=2, default=str))
    lines = [f"# GPU check: {report['device_name']}", "",
             f"`{report['command']}` on {report['date']}, torch {report['torch']}, {report['wall_s']:.0f} s so far"
             f"{'' if report.get('finished') else ' (still running or stopped: the stages below are those finished)'}.",
             "", "Plan: each method under " f"{LIMIT_S} s on one H100, start-up included; `plan s` = estimated "
             "(not measured) seconds of the stage.", "",
             "| method | stage | mode | status | wall s | plan s | timed steps | steps/s | samples/s "
             "| peak alloc GiB | peak reserved GiB | GFLOP/sample | precision | MFU | data wait "
             "| kill + resume (loss before -> after) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in report["methods"]:
        for s in e["stages"]:
            res = ""
            if s.get("mode") == MODE_LABELS["resume"] and s.get("ok"):
                res = f"{step_loss(s.get('loss_before'))} -> {step_loss(s.get('loss_after'))}"
            flops = s.get("flops_per_sample")
            lines.append(
                f"| {e['method']} | {s['stage']} | {s.get('mode', '-')} | {stage_status(s)} "
                f"| {fmt(s.get('wall_s'), '.0f')} "
                f"| {fmt(s.get('plan_s'), '.0f')} | {fmt(s.get('timed_steps'), '.0f')} | {fmt(s.get('steps_per_s'))} "
                f"| {fmt(s.get('samples_per_s'))} | {fmt(s.get('peak_mem_gib'))} | {fmt(s.get('peak_reserved_gib'))} "
                f"| {fmt(flops / 1e9 if flops else None)} | {s.get('precision', '-')} | {fmt(s.get('mfu'), '.1%')} "
                f"| {fmt(s.get('data_wait_share'), '.0%')} | {res} |")
        status = "FAIL" if not e["ok"] else ("PASS" if "wall_s" in e else "running (or stopped)")
        lines.append(f"| {e['method']} | **total** | | {status} | {fmt(e.get('wall_s'), '.0f')} "
                     f"| {e['plan_s']} | | | | | | | | | | |")
    notes = [f"- {e['method']} {s['stage']}: {s['note']}" for e in report["methods"] for s in e["stages"]
             if s.get("note")]
    if notes:
        lines += ["", "## Notes", ""] + notes
    failures = [f"### {e['method']}\n\n```\n" + "\n\n".join(e["errors"]) + "\n```" for e in report["methods"]
                if e["errors"]]
    if failures:
        lines += ["", "## Failures", ""] + failures
    write_atomic(out / "report.md", "\n".join(lines) + "\n")


def summary_line(e):
    if not e["ok"]:
        return f"FAIL {e['method']}: " + e["errors"][0].splitlines()[0]
    parts = []
    for s in e["stages"]:
        if s.get("mode") == "plain":
            part = f"{s['stage']} {fmt(s.get('steps_per_s'))} steps/s {fmt(s.get('samples_per_s'))} samples/s"
            if s.get("peak_mem_gib") is not None:
                part += f" {s['peak_mem_gib']:.1f}/{fmt(s.get('peak_reserved_gib'), '.1f')} GiB"
            if s.get("mfu") is not None:
                part += f" MFU {s['mfu']:.1%} ({s['precision']})"
            part += f" wait {fmt(s.get('data_wait_share'), '.0%')}"
            parts.append(part)
        elif s.get("mode") == MODE_LABELS["resume"]:
            parts.append(f"killed after {step_loss(s.get('loss_before'))}, resumed at {step_loss(s.get('loss_after'))}")
    return f"PASS {e['method']} ({e['wall_s']:.0f} s): " + " | ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", required=True, help="one of " + ", ".join(METHODS) + " (a,b runs several; all: all)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default="runs/gpu_check")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES),
                    help="comma-separated subset of " + ",".join(MODES) + " (launch: torchrun launch, no DDP)")
    ap.add_argument("--peak_tflops", type=float, default=None,
                    help="the device's bf16/fp16 dense peak, where its name is not in the table")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds allowed to each CLI run (default: 3 x its plan + 60 on CUDA, 1800 on CPU)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers of every stage (default: the profile's)")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads of each CPU child (default 1)")
    ap.add_argument("--no_flops", action="store_true", help="skip the FLOP counting")
    args = ap.parse_args(argv)
    methods = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    unknown = [m for m in methods if m not in METHODS] + [m for m in modes if m not in MODES]
    if unknown or not methods:
        ap.error(f"unknown method/mode {unknown}: methods are {', '.join(METHODS)}; modes {', '.join(MODES)}")
    out = Path(args.out).resolve()
    import torch

    t0 = time.perf_counter()
    report = {"device": args.device, "device_name": "?", "torch": torch.__version__, "modes": sorted(modes),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "finished": False,
              "command": "python tools/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "wall_s": 0.0, "preflight": None, "methods": []}

    def save():
        report["wall_s"] = time.perf_counter() - t0
        write_report(report, out)

    pre, problems = preflight(methods, args.device, out)
    report["preflight"] = pre
    report["device_name"] = pre.get("device_name", "CPU" if args.device == "cpu" else "no CUDA device")
    save()
    versions = ", ".join(f"{k} {v}" for k, v in pre["versions"].items())
    print(f"pre-flight ({pre['wall_s']:.1f} s): {report['device_name']}; {versions}", flush=True)
    if pre.get("warning"):
        print(f"pre-flight: {pre['warning']}", flush=True)
    if problems:
        print("pre-flight: missing, nothing was run:\n  - " + "\n  - ".join(problems), file=sys.stderr, flush=True)
        return 2
    for method in methods:
        check = Check(method, out, args.device, modes, args.timeout, args.threads, save, args.peak_tflops,
                      args.workers, args.no_flops)
        report["methods"].append(check.entry)
        check.record({"stage": "preflight", "wall_s": pre["wall_s"]})
        entry = check.run()
        print(summary_line(entry), flush=True)
    report["finished"] = True
    save()
    print(f"report: {out / 'report.md'} ({report['wall_s']:.0f} s)")
    return 0 if all(e["ok"] for e in report["methods"]) else 1


if __name__ == "__main__":
    sys.exit(main())
