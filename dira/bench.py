"""`make bench-dira`: training images/s, step time and peak memory of `dir` and `dira` steps at the
original configuration (ResNet-50 U-Net, 224 px, K=65536, MLP head), and the data loader's images/s
with the original per-image PIL augmentation. Writes runs/bench/dira.json (shared.bench records).

On a GPU: per-process batch 64 for `dir` (256 over the paper's 4 GPUs) and 16 for `dira` (the README's
stage-2 batch), each in fp32, bf16, bf16 + channels_last and bf16 + channels_last + torch.compile.
On a CPU: batch 2, fp32 only, a couple of steps (a smoke measurement, not a training speed).
Steps run on fixed synthetic batches already on the device, so the step numbers exclude data loading.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import resource
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from dira import engine, train
from dira.data import ImageListDataset, TwoViewTransform
from dira.models import Discriminator, build_generator
from shared.bench import device_name, record, write_records


def step_benchmark(mode, batch, device, amp="none", channels_last=False, compile_=False, steps=5, warmup=2,
                   arch="resnet50", img_size=224, moco_k=65536, skip_key_decoder=False):
    """Seconds per training step (generator, plus discriminator in dira) and peak memory in GiB."""
    argv = ["bench", "--mode", mode, "-a", arch, "--img_size", str(img_size), "--moco-k", str(moco_k), "--mlp",
            "--cos", "--amp", amp, "--print-freq", "1000000"]
    argv += ["--channels_last"] * channels_last + ["--skip_key_decoder"] * skip_key_decoder
    args = train.parse_args(argv)
    torch.manual_seed(0)
    model = build_generator(args).to(device)
    disc = Discriminator(args.out_channels).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        disc.to(memory_format=torch.channels_last)
    if compile_:
        model.encoder_q.compile()
        model.encoder_k.compile()
    opt_g = train.build_optimizer(model, args, batch)
    opt_d = torch.optim.Adam(disc.parameters(), args.disc_learning_rate, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    scaler_d = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    data = [torch.rand(batch, 3, img_size, img_size, device=device), torch.rand(batch, 3, img_size, img_size,
                                                                                  device=device),
            torch.rand(batch, 1, img_size, img_size, device=device)]

    def run(n):
        engine.train_one_epoch(model, disc, [data] * n, opt_g, opt_d, scaler, scaler_d, 0, args, device, main=False)

    run(warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (KiB -> GiB)
    return (time.perf_counter() - start) / steps, peak


def loader_benchmark(workers, batch, n_images=64, size=1024, batches=4, keep_gray=True):
    """Images/s of the DataLoader alone: PNG decode + two views + distortion at 224 px, per image in PIL
    (keep_gray=False: the original's RGB pipeline; True: the bit-identical one-channel path)."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        grid = np.linspace(0, 1, size)
        names = []
        for i in range(n_images):  # smooth shading plus mild noise: compresses like a radiograph, not like noise
            name = f"{i:08d}_000.png"
            img = 120 + 100 * np.outer(np.sin((3 + i % 3) * grid), np.cos(2 * grid)) + rng.normal(0, 4, (size, size))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(Path(tmp) / name)
            names.append(name)
        (Path(tmp) / "list.txt").write_text("\n".join(names) + "\n")
        ds = ImageListDataset(tmp, Path(tmp) / "list.txt", TwoViewTransform("dira", 224), keep_gray=keep_gray)
        sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=batch * (batches + 1))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers)
        it = iter(loader)
        next(it)  # workers started
        start = time.perf_counter()
        count = sum(b[0].shape[0] for b in it)
        return count / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs")
    p.add_argument("--steps", type=int, default=None, help="timed steps (GPU 10, CPU 2)")
    p.add_argument("--dir_batch", type=int, default=None, help="per-process batch of dir (GPU 64, CPU 2)")
    p.add_argument("--dira_batch", type=int, default=None, help="per-process batch of dira (GPU 16, CPU 2)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default min(16, CPUs))")
    p.add_argument("--quick", action="store_true", help="fp32 only, even on a GPU")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    steps = args.steps or (10 if gpu else 2)
    batches = {"dir": args.dir_batch or (64 if gpu else 2), "dira": args.dira_batch or (16 if gpu else 2)}
    variants = [("fp32", "none", False, False)]
    if gpu and not args.quick:
        variants += [("bf16", "bf16", False, False), ("bf16+channels_last", "bf16", True, False),
                     ("bf16+channels_last+compile", "bf16", True, True)]
    dev = device_name(device)
    records = []
    for mode, batch in batches.items():
        for label, amp, cl, comp in variants:
            config = {"mode": mode, "arch": "resnet50", "img_size": 224, "moco_k": 65536, "mlp": True,
                      "batch_per_process": batch, "precision": label, "steps": steps}
            try:
                sec, peak = step_benchmark(mode, batch, device, amp, cl, comp, steps=steps, warmup=1 if not gpu else 3)
            except Exception as e:  # e.g. compile unavailable: record nothing for this variant, say why
                print(f"{mode} {label}: skipped ({type(e).__name__}: {e})")
                continue
            records += [record("train_images_per_s", batch / sec, "images/s", dev, config),
                        record("step_time_s", sec, "s", dev, config),
                        record("peak_memory_gib" if gpu else "peak_rss_gib", peak, "GiB", dev, config)]
            print(f"{mode:5s} {label:28s} batch {batch:3d}: {batch / sec:8.2f} images/s, {sec:.3f} s/step, "
                  f"peak {peak:.2f} GiB")
            if gpu:
                torch.cuda.empty_cache()
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    for keep_gray, label in ((False, "rgb (original)"), (True, "gray one-channel")):
        ips = loader_benchmark(workers, 32 if gpu else 8, n_images=64 if gpu else 16, batches=8 if gpu else 2,
                               keep_gray=keep_gray)
        records.append(record("loader_images_per_s", ips, "images/s", dev,
                              {"workers": workers, "source": "1024x1024 PNG", "crop": 224, "mode": "dira",
                               "pipeline": label}))
        print(f"data loader, {label}: {ips:.1f} images/s with {workers} workers")
    print(f"wrote {write_records('dira', records, runs=args.runs)}")


if __name__ == "__main__":
    main()
