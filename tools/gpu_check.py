"""`make gpu-check`: every method through its real command line on one device, with what it measured.

    python tools/gpu_check.py                       # one CUDA GPU, the originals' model and input sizes
    python tools/gpu_check.py --device cpu          # the same code paths at tiny sizes (the CPU suite runs it)
    python tools/gpu_check.py --methods dira,voco --modes plain,resume --peak_tflops 989

For each method it generates sample data (sized for the original's inputs on a GPU), then runs each stage's
CLI (pre-training, then the downstream use) as a plain process, the pre-training and DDP-capable stages again
under `torchrun --nproc_per_node=1` (NCCL on CUDA, gloo on CPU), and the pre-training once more killed
(SIGKILL) as soon as it has written a checkpoint and resumed with the CLI's resume flag. Each stage runs a
fixed small number of steps under bf16 autocast (fp16 where the original used mixed precision: VoCo
pre-training, LoVT). The training loops log `data_wait_s` / `step_s` / `peak_mem_gib` (shared/timing.py);
model FLOPs per sample are counted with torch.utils.flop_counter on the model the CLI builds, at its size
(one forward + backward, without activation-checkpoint recomputation: model FLOPs, as MFU is defined).

Writes <out>/report.json and <out>/report.md, prints one PASS/FAIL line per method, exits 1 if any failed.
Nothing here imports SimpleITK: the Genesis cubes are written as .npy, the CT volumes with nibabel.
"""

import argparse
import csv
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

METHODS = ("semantic_genesis", "transvw", "dira", "voco", "lovt")
MODES = ("plain", "torchrun", "resume")

# bf16 dense tensor-core peaks (TFLOP/s) from the vendors' spec sheets; the first matching name wins
PEAK_BF16_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
                    ("RTX 4090", 165.0), ("RTX 3090", 71.0)]

# Sizes per device. "cuda": the originals' configurations; "cpu": the same code paths, tiny.
PROFILES = {
    "cuda": {
        "genesis": dict(width=32, batch=64, cube=(64, 64, 32), classes=44, per_class=2, steps=10, ft_batch=8,
                        ft_cubes=32, workers=8),
        "dira": dict(img=224, source_px=1024, batch=64, dira_batch=4, moco_k=65536, arch="resnet50", images=64,
                     steps=5, ft_batch=32, workers=8),
        "voco": dict(feature=48, base_roi=96, num_crops=4, roi=64, batch=2, sw=2, window=7, hidden=2048,
                     volumes=8, shape=(192, 192, 96), steps=10, ft_roi=96, ft_sw=4, ft_shape=(160, 160, 112),
                     workers=8),
        "lovt": dict(img=224, batch=32, arch="resnet50", bert=dict(hidden_size=768, num_layers=12, num_heads=12,
                                                                    intermediate_size=3072, vocab_size=28996),
                     patients=80, steps=5, task="object_frozen_100", task_images=96, eval_steps=5, workers=8),
    },
    "cpu": {
        "genesis": dict(width=4, batch=6, cube=(32, 32, 16), classes=4, per_class=1, steps=5, ft_batch=2,
                        ft_cubes=4, workers=0),
        "dira": dict(img=64, source_px=96, batch=4, dira_batch=2, moco_k=16, arch="resnet18", images=8,
                     steps=2, ft_batch=4, workers=0),
        "voco": dict(feature=12, base_roi=32, num_crops=2, roi=64, batch=1, sw=1, window=2, hidden=32,
                     volumes=2, shape=(48, 48, 32), steps=3, ft_roi=64, ft_sw=1, ft_shape=(64, 64, 64),
                     workers=0),
        "lovt": dict(img=64, batch=4, arch="resnet50", bert=dict(), patients=30, steps=2,
                     task="object_frozen_100", task_images=24, eval_steps=2, workers=0),
    },
}


# ---------------------------------------------------------------------------------------------- launching

def launcher(mode, nnodes=1, node_rank=0, endpoint=None):
    """The command prefix that starts a script: a plain interpreter or torchrun (one process per node)."""
    if mode == "plain":
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
    """Run to the end; returns (returncode, wall seconds). Output goes to log_path."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
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
        v = float(row.get(key) or "nan")
    except ValueError:
        return math.nan
    return v


def timing_summary(rows, batch):
    """steps/s, samples/s, data-wait share and peak memory from the timing columns (first row = warm-up)."""
    timed = [r for r in rows if math.isfinite(_num(r, "step_s"))]
    if len(timed) > 1:
        timed = timed[1:]
    if not timed:
        return {"timed_rows": 0}
    step = [_num(r, "step_s") for r in timed]
    wait = [_num(r, "data_wait_s") for r in timed]
    mem = [_num(r, "peak_mem_gib") for r in rows if math.isfinite(_num(r, "peak_mem_gib"))]
    steps_per_s = 1.0 / float(np.mean(step))
    return {"timed_rows": len(timed), "step_s": float(np.mean(step)), "steps_per_s": steps_per_s,
            "samples_per_s": steps_per_s * batch, "data_wait_share": float(np.nansum(wait) / np.sum(step)),
            "peak_mem_gib": max(mem) if mem else None}


def losses(rows, column):
    return [(int(float(r["step"])), _num(r, column)) for r in rows if math.isfinite(_num(r, column))]


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


def data_genesis(root, p):
    """Pattern cubes in the pattern generator's layout and fine-tuning cubes with nodule masks (.npy)."""
    from shared.genesis.data import write_pattern_files

    patterns = root / "patterns"
    if not (patterns / "val_label1_vwGen_ex_ref_fold1.0.npy").is_file():
        write_pattern_files(patterns, p["per_class"], p["classes"], 1, shape=p["cube"], resolutions=3)
    cubes = root / "finetune"
    if not (cubes / "test_y.npy").is_file():
        cubes.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        grid = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in p["cube"]], indexing="ij"))
        for split, n in (("train", p["ft_cubes"]), ("val", p["ft_batch"]), ("test", p["ft_batch"])):
            x = rng.uniform(0, 0.3, (n, *p["cube"])).astype(np.float32)
            r = rng.uniform(3, p["cube"][2] / 4, n)
            y = np.stack([((grid ** 2).sum(0) < ri ** 2) for ri in r]).astype(np.float32)
            np.save(cubes / f"{split}_x.npy", np.clip(x + 0.6 * y, 0, 1))
            np.save(cubes / f"{split}_y.npy", y)
    return patterns, cubes


def data_dira(root, p):
    """Radiograph PNGs and DiRA's list files (name + 14 labels), repeated up to whole batches."""
    images = root / "images"
    if not (root / "test.txt").is_file():
        images.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        names = []
        for i in range(p["images"]):
            names.append(f"{i:08d}_000.png")
            write_png(images / names[-1], p["source_px"], rng)
        labels = rng.integers(0, 2, (len(names), 14))
        lines = [f"{n} " + " ".join(map(str, lab)) for n, lab in zip(names, labels)]
        need = {"train": p["batch"] * p["steps"], "val": p["batch"] * 2, "ft_train": p["ft_batch"] * 2,
                "test": p["ft_batch"]}
        for name, n in need.items():
            (root / f"{name}.txt").write_text("\n".join(lines[i % len(lines)] for i in range(n)) + "\n")
    return images


def data_voco(root, p):
    """CT volumes for pre-training and a BTCV-style labelled set (imagesTr/labelsTr/dataset_0.json)."""
    if (root / "btcv" / "dataset_0.json").is_file():
        return root / "pretrain.json", root / "btcv"
    rng = np.random.default_rng(0)
    (root / "ct").mkdir(parents=True, exist_ok=True)
    for i in range(p["volumes"]):
        write_nifti(root / "ct" / f"ct{i:03d}.nii.gz", abdomen(p["shape"], rng), (1.5, 1.5, 2.0))
    (root / "pretrain.json").write_text(json.dumps(
        {"training": [{"image": f"ct/ct{i:03d}.nii.gz"} for i in range(p["volumes"])]}))
    btcv = root / "btcv"
    for sub in ("imagesTr", "labelsTr"):
        (btcv / sub).mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(3):
        hu, lab = abdomen(p["ft_shape"], rng, labels=True)
        write_nifti(btcv / "imagesTr" / f"img{i:04d}.nii.gz", hu, (1.5, 1.5, 1.5))
        write_nifti(btcv / "labelsTr" / f"label{i:04d}.nii.gz", lab, (1.5, 1.5, 1.5))
        items.append({"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"})
    (btcv / "dataset_0.json").write_text(json.dumps({"training": items[:2], "validation": items[2:]}))
    return root / "pretrain.json", btcv


def data_lovt(root, p):
    """A BERT of the configured size (random init, local tokenizer), MIMIC-CXR studies prepared by LoVT's
    own preparation, and object-CXR images for the localized task (the sample-data writers; the RSNA sample
    is DICOM, written with SimpleITK, which the GPU machine lacks)."""
    from lovt.data.mimic_cxr import create_dataset
    from lovt.evaluation.data import OBJECT, SAMPLE_FOLDERS
    from lovt.evaluation.demo import prepare_sample
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
        create_dataset(mimic, config="mimic-cxr_ap-pa", target_path=prepared, num_workers=1)
        n = p["task_images"]
        write_object_cxr(sample / SAMPLE_FOLDERS[OBJECT], np.random.default_rng(1), n_train=n, n_dev=max(8, n // 4))
        prepare_sample(sample, OBJECT)  # LoVT's own preparation of the downstream dataset, in place
        (root / ".complete").write_text("ok\n")
    return bert, prepared, sample


# ------------------------------------------------------------------------------------------------ stages

class Stage:
    """One CLI run of a method: how to build its command, where it logs, what counts as a sample."""

    def __init__(self, name, script, args, csv_path, batch, loss, resume=None, ddp=True, flops=None):
        self.name, self.script, self.args, self.csv_path = name, script, args, Path(csv_path)
        self.batch, self.loss, self.resume, self.ddp, self.flops = batch, loss, resume, ddp, flops

    def command(self, mode, extra=(), **launch):
        script = [self.script] if self.script.endswith(".py") else ["-m", self.script]
        return launcher(mode, **launch) + script + list(self.args) + list(extra)


class Resume:
    """How the pre-training is killed and resumed: the checkpoint to wait for, the flags of each part."""

    def __init__(self, checkpoint, long_args, resume_args):
        self.checkpoint, self.long_args, self.resume_args = Path(checkpoint), long_args, resume_args


def genesis_stages(method, run, data, p, device):
    patterns, cubes = data
    amp = ["--amp", "on"] if device == "cuda" else ["--amp", "off"]
    common = ["--data_dir", str(patterns), "--cls_classes", str(p["classes"]), "--batch_size", str(p["batch"]),
              "--width", str(p["width"]), "--input_rows", str(p["cube"][0]), "--input_cols", str(p["cube"][1]),
              "--input_deps", str(p["cube"][2]), "--num_workers", str(p["workers"]), "--n_images", "0",
              "--device", device, *amp]
    exp_dir = run / "pretrain" / "en_de"
    name = "semantic_genesis_chest_ct" if method == "semantic_genesis" else "TransVW_chest_ct"

    def train(out, steps):
        return common + ["--output_dir", str(out), "--max_steps", str(steps), "--exp_name", name]

    pre = Stage("pretrain", f"{method}/train.py", train(run / "pretrain", p["steps"]), exp_dir / f"{name}.metrics.csv",
                p["batch"], "train_loss", flops=("genesis_pretrain", p))
    pre.variants = {"torchrun": train(run / "pretrain_torchrun", max(2, p["steps"] // 2))}
    pre.resume = Resume(run / "pretrain_resume" / "en_de" / f"{name}.last.pt",
                        train(run / "pretrain_resume", 100000),
                        train(run / "pretrain_resume", p["steps"]) + ["--resume"])
    pre.resume_csv = run / "pretrain_resume" / "en_de" / f"{name}.metrics.csv"
    ft_args = ["--data_dir", str(cubes), "--weights", str(exp_dir / f"{name}.pt"), "--width", str(p["width"]),
               "--batch_size", str(p["ft_batch"]), "--nb_epoch", "2", "--input_rows", str(p["cube"][0]),
               "--input_cols", str(p["cube"][1]), "--input_deps", str(p["cube"][2]), "--device", device, *amp]
    ft = Stage("finetune_segmentation", f"{method}/finetune_segmentation.py",
               ft_args + ["--output_dir", str(run / "finetune")], run / "finetune" / f"{name}_segmentation.metrics.csv",
               p["ft_batch"],
               "train_loss", flops=("genesis_finetune", p))
    ft.variants = {"torchrun": ft_args + ["--output_dir", str(run / "finetune_torchrun")]}
    return [pre, ft]


def dira_stages(run, images, p, device):
    root = images.parent
    amp = ["--amp", "bf16"] if device == "cuda" else []
    common = [str(images), "-a", p["arch"], "--mlp", "--moco-t", "0.2", "--cos", "--moco-k", str(p["moco_k"]),
              "--img_size", str(p["img"]), "-j", str(p["workers"]), "--train_list", str(root / "train.txt"),
              "--val_list", str(root / "val.txt"), "--max_steps_per_epoch", str(p["steps"]),
              "--preview_images", "0", "-p", "1", *amp]  # no --seed: it turns cuDNN autotuning off

    def stage_args(out, mode, batch, epochs, more=()):
        return common + ["--mode", mode, "--batch-size", str(batch), "--epochs", str(epochs),
                         "--checkpoint-dir", str(out), *more]

    dir_ckpt = run / "pretrain" / "DiRA_moco" / "dir" / "checkpoint.pth"
    pre = Stage("pretrain_dir", "dira/train.py", stage_args(run / "pretrain", "dir", p["batch"], 2),
                run / "pretrain" / "DiRA_moco" / "dir" / "metrics.csv", p["batch"], "loss",
                flops=("dira", p, "dir", p["batch"]))
    pre.variants = {"torchrun": stage_args(run / "pretrain_torchrun", "dir", p["batch"], 1)}
    resume_dir = run / "pretrain_resume" / "DiRA_moco" / "dir"
    pre.resume = Resume(resume_dir / "checkpoint.pth", stage_args(run / "pretrain_resume", "dir", p["batch"], 1000),
                        stage_args(run / "pretrain_resume", "dir", p["batch"], 2,
                                   ["--resume", str(resume_dir / "checkpoint.pth")]))
    pre.resume_csv = resume_dir / "metrics.csv"
    gen = ["--generator_pre_trained_weights", str(dir_ckpt)]
    dira = Stage("pretrain_dira", "dira/train.py", stage_args(run / "pretrain", "dira", p["dira_batch"], 2, gen),
                 run / "pretrain" / "DiRA_moco" / "dira" / "metrics.csv", p["dira_batch"], "loss",
                 flops=("dira", p, "dira", p["dira_batch"]))
    dira.variants = {"torchrun": stage_args(run / "pretrain_torchrun", "dira", p["dira_batch"], 1, gen)}
    ft_out = run / "finetune"
    ft = Stage("finetune_classification", "dira/finetune.py",
               ["classification", "--data_dir", str(images), "--train_list", str(root / "ft_train.txt"),
                "--val_list", str(root / "test.txt"), "--test_list", str(root / "test.txt"), "--init", "dira",
                "--proxy_dir", str(run / "pretrain" / "DiRA_moco" / "dira" / "checkpoint.pth"), "-a", p["arch"],
                "--img_size", str(p["img"]), "--batch_size", str(p["ft_batch"]), "--epochs", "2",
                "--workers", str(p["workers"]), "--device", device, "--output_dir", str(ft_out)],
               ft_out / "classification_dira_trial0" / "metrics.csv", p["ft_batch"], "train_loss", ddp=False,
               flops=("dira_finetune", p))
    return [pre, dira, ft]


def voco_stages(run, data, p, device):
    pre_json, btcv = data
    model = ["--feature_size", str(p["feature"]), "--window_size", str(p["window"]), "--hidden_dim", str(p["hidden"]),
             "--out_dim", str(p["hidden"])]
    common = ["--json_list", str(pre_json), "--base_roi", str(p["base_roi"]), "--num_crops", str(p["num_crops"]),
              "--roi_x", str(p["roi"]), "--roi_y", str(p["roi"]), "--roi_z", str(p["roi"]),
              "--batch_size", str(p["batch"]), "--sw_batch_size", str(p["sw"]), "--workers", str(p["workers"]),
              "--use_checkpoint", "True", "--device", device, *model]

    def train(out, steps, eval_num):
        return common + ["--logdir", str(out), "--num_steps", str(steps), "--eval_num", str(eval_num),
                         "--save_every", "0"]

    pre = Stage("pretrain", "voco/train.py", train(run / "pretrain", p["steps"], p["steps"]),
                run / "pretrain" / "voco_pretrain.metrics.csv", p["batch"], "loss", flops=("voco_pretrain", p))
    pre.variants = {"torchrun": train(run / "pretrain_torchrun", max(2, p["steps"] // 2), p["steps"])}
    every = max(2, p["steps"] // 2)
    ckpt = run / "pretrain_resume" / "model_current_epoch.pt"
    pre.resume = Resume(ckpt, train(run / "pretrain_resume", 100000, every),
                        train(run / "pretrain_resume", every + p["steps"], every) + ["--resume", str(ckpt)])
    pre.resume_csv = run / "pretrain_resume" / "voco_pretrain.metrics.csv"
    r = str(p["ft_roi"])
    ft_args = ["--data_dir", str(btcv), "--json_list", "dataset_0.json", "--pretrained_checkpoint",
               str(run / "pretrain" / "model_final_epoch.pt"), "--feature_size", str(p["feature"]),
               "--window_size", str(p["window"]), "--roi_x", r, "--roi_y", r, "--roi_z", r,
               "--sw_batch_size", str(p["ft_sw"]), "--max_epochs", "2", "--val_every", "2", "--warmup_epochs", "0",
               "--workers", str(p["workers"]), "--use_checkpoint", "True", "--device", device,
               "--noamp", "False", "--amp_dtype", "bfloat16", "--infer_overlap", "0.5"]
    ft = Stage("finetune_btcv", "voco/finetune.py",
               ft_args + ["--logdir", str(run / "finetune"), "--cache_dir", str(run / "cache_ft")],
               run / "finetune" / "voco_finetune.metrics.csv", p["ft_sw"], "train_loss", flops=("voco_finetune", p))
    ft.variants = {"torchrun": ft_args + ["--logdir", str(run / "finetune_torchrun"),
                                          "--cache_dir", str(run / "cache_ft_torchrun")]}
    return [pre, ft]


def lovt_overrides(bert, prepared, p, device):
    out = ["+experiment=LoVT_100", "pretrain_dataset=mimic-cxr_sample", f"dataset_path={prepared}",
           f"pretrain_model.encoder_a.input_size=[{p['img']},{p['img']}]",
           f"pretrain_model.encoder_b.language_encoder={bert}", f"pretrain_model.batch_size={p['batch']}",
           "pretrain_model.encoder_a.backbone_pretrained=false", "print_config=false", "attention_plots=0",
           "export_run=false", f"num_dataloader_workers={p['workers']}", "callback.early_stopping.patience=1000",
           f"+trainer.limit_train_batches={p['steps']}", "+trainer.limit_val_batches=1", "trainer.log_every_n_steps=1"]
    if device == "cuda":
        out += ["trainer.accelerator=gpu", "trainer.precision=16-mixed"]  # the original: fp16 (precision 16)
    else:
        out += ["trainer.accelerator=cpu", "trainer.precision=32-true", "pretrain_model.d_z=32",
                "pretrain_model.d_hidden=64", "pretrain_model.encoder_b.max_length=128"]
    return out


def lovt_stages(run, data, p, device):
    bert, prepared, sample = data

    def train(out, epochs, more=()):
        return lovt_overrides(bert, prepared, p, device) + [
            f"pretrain_model.max_epochs={epochs}", f"hydra.run.dir={out}", f"models.base_path={run / 'models'}",
            *more]

    pre = Stage("pretrain", "lovt/train.py", train(run / "pretrain", 2), run / "pretrain" / "metrics.csv",
                p["batch"], "train/total_loss_step", flops=("lovt_pretrain", p, bert))
    pre.variants = {"torchrun": train(run / "pretrain_torchrun", 1)}
    ckpt = run / "pretrain_resume" / "checkpoints" / "last.ckpt"
    pre.resume = Resume(ckpt, train(run / "pretrain_resume", 1000), train(run / "pretrain_resume", 2, ["resume=last"]))
    pre.resume_csv = run / "pretrain_resume" / "metrics.csv"
    ev_out = run / "evaluate"
    ev = Stage("evaluate_" + p["task"], "lovt/evaluate.py",
               ["run_task", p["task"], "--weights", str(run / "pretrain" / "checkpoints" / "backbone_weights.pt"),
                "--out", str(ev_out), "--sample_root", str(sample), "--max_steps", str(p["eval_steps"]),
                "--max_epochs", "1", "--input_size", str(p["img"]), "--num_workers", str(p["workers"]),
                "--device", device, "--quiet"],
               ev_out / "metrics.csv", None, "train/loss", ddp=False, flops=("lovt_task", p, sample))
    return [pre, ev]


def build_stages(method, out, device, profile=None):
    """(stages, data-making function) of one method under <out>/<method>."""
    p = (profile or PROFILES[device])["genesis" if method in ("semantic_genesis", "transvw") else method]
    family = "genesis" if method in ("semantic_genesis", "transvw") else method
    run, data_root = out / method, out / "data" / device / family  # sizes differ per device: data too
    data_root.mkdir(parents=True, exist_ok=True)
    if method in ("semantic_genesis", "transvw"):
        return genesis_stages(method, run, data_genesis(data_root, p), p, device)
    if method == "dira":
        return dira_stages(run, data_dira(data_root, p), p, device)
    if method == "voco":
        return voco_stages(run, data_voco(data_root, p), p, device)
    if method == "lovt":
        return lovt_stages(run, data_lovt(data_root, p), p, device)
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


def peak_tflops(device_name, given=None):
    if given:
        return float(given)
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in (device_name or "").lower():
            return value
    return None


# ------------------------------------------------------------------------------------------------- check

def check_method(method, out, device, modes, timeout, threads=None):
    """Run one method's stages in the requested modes; returns its report entry."""
    env = child_env(device, threads)
    logs = out / "logs" / method
    logs.mkdir(parents=True, exist_ok=True)
    entry = {"method": method, "stages": [], "ok": True, "errors": []}
    t0 = time.perf_counter()
    shutil.rmtree(out / method, ignore_errors=True)  # a fresh run folder each time (the data is kept)
    try:
        stages = build_stages(method, out, device)
    except Exception as err:  # data preparation failed: the method fails, the others still run
        entry.update(ok=False, errors=[f"data: {type(err).__name__}: {err}"])
        return entry
    entry["data_s"] = time.perf_counter() - t0
    for stage in stages:
        rec = {"stage": stage.name, "command": " ".join(stage.command("plain"))}
        if "plain" in modes:
            rc, wall = run_cli(stage.command("plain"), logs / f"{stage.name}.log", env, timeout)
            rows = read_rows(stage.csv_path)
            rec.update(plain_rc=rc, wall_s=wall, **timing_summary(rows, stage.batch or 1))
            if stage.batch is None and rec.get("steps_per_s"):  # the task's batch, from the run's config
                config = json.loads((stage.csv_path.parent / "config.json").read_text())
                rec["samples_per_s"] = rec["steps_per_s"] * config["task_config"]["batch_size"]
            rec["losses"] = losses(rows, stage.loss)[-3:]
            if rc != 0:
                entry["errors"].append(f"{stage.name}: exit {rc}\n{tail(logs / f'{stage.name}.log')}")
            elif not rec.get("timed_rows") and not rows:
                entry["errors"].append(f"{stage.name}: no metrics in {stage.csv_path}")
        if "torchrun" in modes and stage.ddp:
            cmd = launcher("torchrun") + [stage.script] + stage.variants["torchrun"]
            rc, wall = run_cli(cmd, logs / f"{stage.name}_torchrun.log", env, timeout)
            rec.update(torchrun_rc=rc, torchrun_wall_s=wall)
            if rc != 0:
                entry["errors"].append(f"{stage.name} (torchrun): exit {rc}\n"
                                       f"{tail(logs / f'{stage.name}_torchrun.log')}")
        if "resume" in modes and stage.resume is not None:
            rec["resume"] = check_resume(stage, logs, env, timeout)
            if not rec["resume"]["ok"]:
                entry["errors"].append(f"{stage.name} (kill + resume): {rec['resume']['error']}")
        entry["stages"].append(rec)
    entry["ok"] = not entry["errors"]
    entry["wall_s"] = time.perf_counter() - t0
    return entry


def check_resume(stage, logs, env, timeout):
    r, csv_path = stage.resume, stage.resume_csv
    killed, rc, wall = run_until(launcher("plain") + [stage.script] + r.long_args, logs / f"{stage.name}_killed.log",
                                 env, r.checkpoint.is_file, timeout)
    time.sleep(0.2)
    before = read_rows(csv_path)
    res = {"killed": killed, "killed_after_s": wall, "checkpoint": str(r.checkpoint), "ok": False}
    if not killed:
        res["error"] = f"no checkpoint {r.checkpoint} before the process ended (exit {rc})\n" + \
                       tail(logs / f"{stage.name}_killed.log")
        return res
    loss_before = losses(before, stage.loss)
    rc, wall = run_cli(launcher("plain") + [stage.script] + r.resume_args, logs / f"{stage.name}_resumed.log",
                       env, timeout)
    after = read_rows(csv_path)
    new = after[len(before):] if after[:len(before)] == before else after
    loss_after = losses(new, stage.loss)
    res.update(resumed_rc=rc, resumed_wall_s=wall,
               loss_before=loss_before[-1] if loss_before else None,
               loss_after=loss_after[0] if loss_after else None)
    if rc != 0:
        res["error"] = f"the resumed run exited {rc}\n" + tail(logs / f"{stage.name}_resumed.log")
    elif not loss_after:
        res["error"] = f"the resumed run logged no {stage.loss} in {csv_path}"
    elif loss_before and loss_after[0][0] <= loss_before[0][0]:
        res["error"] = (f"the resumed run started again from step {loss_after[0][0]} (first step before the kill "
                        f"{loss_before[0][0]}): it did not continue from the checkpoint")
    else:
        res["ok"] = True
    return res


def add_flops(entries, out, device, peak):
    """FLOPs per sample and MFU for every stage that ran; counted after the runs (no GPU memory held during them)."""
    for entry in entries:
        if entry.get("errors") and not entry.get("stages"):
            continue
        try:
            stages = {s.name: s for s in build_stages(entry["method"], out, device)}
        except Exception:  # the data failed: already reported
            continue
        for rec in entry["stages"]:
            kind = stages[rec["stage"]].flops
            try:
                rec["flops_per_sample"] = count_flops(kind, device)
            except Exception as err:  # reported, not a failure of the method's CLI
                rec["flops_error"] = f"{type(err).__name__}: {err}"
                continue
            if peak and rec.get("samples_per_s"):
                rec["mfu"] = rec["flops_per_sample"] * rec["samples_per_s"] / (peak * 1e12)
        if device == "cuda":
            import torch
            torch.cuda.empty_cache()


def step_loss(pair):
    return "?" if not pair else f"step {pair[0]} (loss {pair[1]:.4g})"


def fmt(v, spec=".3g", none="-"):
    return none if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def write_report(report, out):
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# GPU check: {report['device_name']}", "",
             f"`{report['command']}` on {report['date']}, torch {report['torch']}, peak bf16 "
             f"{fmt(report['peak_tflops'])} TFLOP/s, {report['wall_s']:.0f} s in all.", "",
             "| method | stage | status | steps/s | samples/s | peak GiB | GFLOP/sample | MFU | data wait | torchrun "
             "| kill + resume (loss before -> after) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in report["methods"]:
        status = "PASS" if e["ok"] else "FAIL"
        for s in e["stages"] or [{"stage": "-"}]:
            res = s.get("resume")
            resume = "-" if res is None else (
                f"{step_loss(res['loss_before'])} -> {step_loss(res['loss_after'])}" if res.get("ok") else "FAIL")
            tr = "-" if "torchrun_rc" not in s else ("ok" if s["torchrun_rc"] == 0 else f"exit {s['torchrun_rc']}")
            flops = s.get("flops_per_sample")
            lines.append(f"| {e['method']} | {s['stage']} | {status} | {fmt(s.get('steps_per_s'))} | "
                         f"{fmt(s.get('samples_per_s'))} | {fmt(s.get('peak_mem_gib'))} | "
                         f"{fmt(flops / 1e9 if flops else None)} | {fmt(s.get('mfu'), '.1%')} | "
                         f"{fmt(s.get('data_wait_share'), '.0%')} | {tr} | {resume} |")
    failures = [f"### {e['method']}\n\n```\n" + "\n\n".join(e["errors"]) + "\n```" for e in report["methods"]
                if e["errors"]]
    if failures:
        lines += ["", "## Failures", ""] + failures
    (out / "report.md").write_text("\n".join(lines) + "\n")


def summary_line(e):
    if not e["ok"]:
        return f"FAIL {e['method']}: " + e["errors"][0].splitlines()[0]
    parts = []
    for s in e["stages"]:
        part = f"{s['stage']} {fmt(s.get('steps_per_s'))} steps/s"
        if s.get("samples_per_s"):
            part += f" {fmt(s['samples_per_s'])} samples/s"
        if s.get("peak_mem_gib") is not None:
            part += f" {s['peak_mem_gib']:.1f} GiB"
        if s.get("mfu") is not None:
            part += f" MFU {s['mfu']:.1%}"
        if s.get("data_wait_share") is not None:
            part += f" wait {s['data_wait_share']:.0%}"
        res = s.get("resume")
        if res and res.get("ok"):
            part += f"; killed after {step_loss(res['loss_before'])}, resumed at {step_loss(res['loss_after'])}"
        parts.append(part)
    return f"PASS {e['method']}: " + " | ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default="runs/gpu_check")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--peak_tflops", type=float, default=None, help="the device's bf16 dense peak (default: table)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed to each CLI run")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads of each CPU child (default 1)")
    ap.add_argument("--no_flops", action="store_true", help="skip the FLOP counting")
    args = ap.parse_args(argv)
    import torch

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    unknown = [m for m in methods if m not in METHODS] + [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown method/mode {unknown}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run `make gpu-check DEVICE=cpu` (tools/gpu_check.py --device cpu)")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    peak = peak_tflops(name, args.peak_tflops) if args.device == "cuda" else args.peak_tflops
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    entries = []
    for method in methods:
        entry = check_method(method, out, args.device, modes, args.timeout, args.threads)
        entries.append(entry)
        print(summary_line(entry), flush=True)
    if not args.no_flops:
        add_flops(entries, out, args.device, peak)
    report = {"device": args.device, "device_name": name, "peak_tflops": peak, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "modes": sorted(modes),
              "command": "python tools/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "wall_s": time.perf_counter() - t0, "methods": entries}
    write_report(report, out)
    print("\n".join(summary_line(e) for e in entries))
    print(f"report: {out / 'report.md'} ({report['wall_s']:.0f} s)")
    return 0 if all(e["ok"] for e in entries) else 1


if __name__ == "__main__":
    sys.exit(main())
