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

from dira import cache_data, engine, train
from dira.batch_augment import BatchTwoView
from dira.data import ImageListDataset, TwoViewTransform
from dira.models import Discriminator, build_generator
from shared.augment2d import stack_padded
from shared.bench import device_name, record, throughput, write_records


def bench_args(mode, arch, img_size, moco_k, amp, channels_last, extra=()):
    """train.py's settings for a benchmark (no printing inside the timed steps)."""
    return train.parse_args(["bench", "--mode", mode, "-a", arch, "--img_size", str(img_size), "--moco-k",
                             str(moco_k), "--mlp", "--cos", "--amp", amp, "--print-freq", "1000000",
                             *["--channels_last"] * channels_last, *extra])


def training_parts(args, batch, device, channels_last):
    """Generator, discriminator, their optimizers and grad scalers as train.py builds them (seeded)."""
    torch.manual_seed(0)
    model = build_generator(args).to(device)
    disc = Discriminator(args.out_channels).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        disc.to(memory_format=torch.channels_last)
    opt_g = train.build_optimizer(model, args, batch)
    opt_d = torch.optim.Adam(disc.parameters(), args.disc_learning_rate, betas=(0.5, 0.999))
    scaler, scaler_d = (torch.amp.GradScaler(device.type, enabled=args.amp == "fp16") for _ in range(2))
    return model, disc, opt_g, opt_d, scaler, scaler_d


def step_benchmark(mode, batch, device, amp="none", channels_last=False, compile_=False, steps=5, warmup=2,
                   arch="resnet50", img_size=224, moco_k=65536, skip_key_decoder=False):
    """Seconds per training step (generator, plus discriminator in dira) and peak memory in GiB."""
    args = bench_args(mode, arch, img_size, moco_k, amp, channels_last, ["--skip_key_decoder"] * skip_key_decoder)
    model, disc, opt_g, opt_d, scaler, scaler_d = training_parts(args, batch, device, channels_last)
    if compile_:
        model.encoder_q.compile()
        model.encoder_k.compile()
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


def make_pngs(folder, n_images=64, size=1024):
    """n 8-bit PNGs of size x size under `folder` and their list file (names only); returns the list path.
    Smooth shading plus mild noise: compresses like a radiograph, not like noise."""
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, size)
    names = []
    for i in range(n_images):
        name = f"{i:08d}_000.png"
        img = 120 + 100 * np.outer(np.sin((3 + i % 3) * grid), np.cos(2 * grid)) + rng.normal(0, 4, (size, size))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(Path(folder) / name)
        names.append(name)
    (Path(folder) / "list.txt").write_text("\n".join(names) + "\n")
    return Path(folder) / "list.txt"


def _images_per_s(dataset, workers, batch, batches, collate_fn=None):
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batch * (batches + 1))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                         collate_fn=collate_fn)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    count = sum(b[0].shape[0] for b in it)
    return count / (time.perf_counter() - start)


def loader_benchmark(workers, batch, n_images=64, size=1024, batches=4, keep_gray=True, folder=None):
    """Images/s of the DataLoader alone: PNG decode + two views + distortion at 224 px, per image in PIL
    (keep_gray=False: the original's RGB pipeline; True: the bit-identical one-channel path)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or tmp
        lst = Path(folder) / "list.txt"
        if not lst.is_file():
            make_pngs(folder, n_images, size)
        ds = ImageListDataset(folder, lst, TwoViewTransform("dira", 224), keep_gray=keep_gray)
        return _images_per_s(ds, workers, batch, batches)


def cached_loader_benchmark(folder, workers, batch, batches=4, cache_size=512, img_size=224):
    """The cached path on the PNGs of `folder`: images/s of the loader that only reads the cache (the
    augmentation then runs on the training device), of the loader that also augments the batch in its
    workers, and of the batched augmentation itself on this machine's device."""
    cache = cache_data.ImageCache(cache_data.build_list_cache(folder, Path(folder) / "list.txt", Path(folder) / "cache",
                                                              cache_size, progress=False, log=lambda s: None))
    augment = BatchTwoView("dira", img_size)
    ds = cache_data.CachedImages(cache)
    # reading is ~100x faster than decoding: time more batches so start-up does not dominate
    reads = _images_per_s(ds, workers, batch, max(40, batches), cache_data.CacheCollate())
    augmented = _images_per_s(ds, workers, batch, 2 * batches, cache_data.CacheCollate(augment))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, sizes = stack_padded([cache[i % len(cache)] for i in range(batch)])
    images = images.to(device)
    on_device = throughput(lambda: augment(images, sizes), batch, device=device)
    return reads, augmented, on_device


def pipeline_benchmark(folder, mode, batch, device, workers, steps=20, amp="bf16", channels_last=True,
                       arch="resnet50", img_size=224, moco_k=65536, cache_size=512):
    """Training from the cache with device-side augmentation: images/s and the share of step time spent
    waiting for the next batch (loader + copy + augmentation, measured with a device sync per step)."""
    args = bench_args(mode, arch, img_size, moco_k, amp, channels_last)
    cache = cache_data.ImageCache(cache_data.build_list_cache(folder, Path(folder) / "list.txt", Path(folder) / "cache",
                                                              cache_size, progress=False, log=lambda s: None))
    sampler = torch.utils.data.RandomSampler(cache, replacement=True, num_samples=batch * (steps + 3))
    loader = cache_data.make_loader(cache, sampler, batch, workers, device, cache_data.cache_augment(args), "device")
    model, disc, opt_g, opt_d, scaler, scaler_d = training_parts(args, batch, device, channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wait = total = 0.0
    it = iter(loader)
    for step in range(steps + 3):
        sync()
        t0 = time.perf_counter()
        batch_data = next(it)
        sync()
        t1 = time.perf_counter()
        engine.train_one_epoch(model, disc, [batch_data], opt_g, opt_d, scaler, scaler_d, 0, args, device, main=False)
        sync()
        if step >= 3:  # warm-up: workers starting, cudnn autotuning
            wait += t1 - t0
            total += time.perf_counter() - t0
    return batch * steps / total, wait / total


def data_benchmarks(args, gpu, dev, device):
    """Side by side, on the same 1024 px PNGs: the original-style loader (PNG decode + per-sample PIL
    transforms) and the cached one, per loader worker (one worker = one CPU core), and their ratio."""
    records = []
    batch, batches, n_images = (32, 8, 64) if gpu else (8, args.loader_batches, 16)
    with tempfile.TemporaryDirectory() as folder:
        make_pngs(folder, n_images, 1024)
        base = {"source": "1024x1024 PNG", "crop": 224, "mode": "dira", "batch": batch}
        per_core = {}
        for keep_gray, label in ((False, "original: PNG decode + per-sample PIL, RGB"),
                                 (True, "original-style, one-channel PIL")):
            ips = loader_benchmark(1, batch, batches=batches, keep_gray=keep_gray, folder=folder)
            per_core[label] = ips
            records.append(record("loader_images_per_s_per_core", ips, "images/s", dev,
                                  {**base, "workers": 1, "pipeline": label}))
        reads, augmented, on_device = cached_loader_benchmark(folder, 1, batch, batches, args.cache_size)
        cached = {"cache: read only (augmentation on the device)": reads,
                  "cache + batched augmentation in the worker": augmented}
        for label, ips in cached.items():
            records.append(record("loader_images_per_s_per_core", ips, "images/s", dev,
                                  {**base, "workers": 1, "pipeline": label, "cache_size": args.cache_size}))
        records.append(record("batched_augment_images_per_s", on_device, "images/s", dev,
                              {**base, "cache_size": args.cache_size, "device": device.type}))
        original = per_core["original: PNG decode + per-sample PIL, RGB"]
        for label, ips in cached.items():
            records.append(record("loader_speedup_vs_original", ips / original, "x", dev,
                                  {**base, "workers": 1, "pipeline": label, "cache_size": args.cache_size}))
        for label, ips in {**per_core, **cached}.items():
            print(f"loader, 1 worker, {label}: {ips:.1f} images/s ({ips / original:.1f}x the original)")
        print(f"batched augmentation on {device.type}: {on_device:.1f} images/s")
        if gpu or args.pipeline:
            workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
            for mode, batch_size in (("dir", args.dir_batch or (64 if gpu else 2)),
                                     ("dira", args.dira_batch or (16 if gpu else 2))):
                kw = {} if gpu else {"arch": "resnet18", "img_size": 64, "moco_k": 64, "amp": "none",
                                     "channels_last": False, "steps": 2}
                ips, wait = pipeline_benchmark(folder, mode, batch_size, device, workers, **kw)
                config = {"mode": mode, "batch_per_process": batch_size, "workers": workers, "data_path": "cache",
                          "augment_on": "device", "cache_size": 512, **({"precision": "bf16+channels_last",
                                                                         "img_size": 224} if gpu else kw)}
                records += [record("train_images_per_s_from_cache", ips, "images/s", dev, config),
                            record("data_wait_share", wait, "fraction", dev, config)]
                print(f"{mode}: training from the cache {ips:.1f} images/s, waiting for data {100 * wait:.1f} %")
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs")
    p.add_argument("--steps", type=int, default=None, help="timed steps (GPU 10, CPU 2)")
    p.add_argument("--dir_batch", type=int, default=None, help="per-process batch of dir (GPU 64, CPU 2)")
    p.add_argument("--dira_batch", type=int, default=None, help="per-process batch of dira (GPU 16, CPU 2)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default min(16, CPUs))")
    p.add_argument("--quick", action="store_true", help="fp32 only, even on a GPU")
    p.add_argument("--cache_size", type=int, default=512, help="shorter side of the benchmark's image cache")
    p.add_argument("--loader_batches", type=int, default=3, help="timed loader batches on the CPU")
    p.add_argument("--pipeline", action="store_true",
                   help="also time training from the cache on the CPU (tiny settings; always on a GPU)")
    p.add_argument("--data_only", action="store_true", help="only the data-path benchmarks")
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
    for mode, batch in ({} if args.data_only else batches).items():
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
    records += data_benchmarks(args, gpu, dev, device)
    print(f"wrote {write_records('dira', records, runs=args.runs)}")


if __name__ == "__main__":
    main()
