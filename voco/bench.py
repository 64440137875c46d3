"""VoCo benchmarks -> runs/bench/voco.json: pre-training step time, volumes/s and peak memory (fp16 vs
bf16, activation checkpointing on/off on CUDA), the data pipeline's volumes/s with and without the
cache, the crop path old (per crop, MONAI, in a worker) vs new (--crops_on device) per CPU core at the
original geometry, and sliding-window inference s/volume. On CUDA also the training loop with a real
DataLoader at the original config (steps/s, data-wait share, peak memory; fp16 and bf16; crops on the
device and in the workers).

    python voco/bench.py                 # the original config on CUDA; a tiny one on CPU
    python voco/bench.py --config original --steps 20
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import resource
import tempfile
import time

import numpy as np
import torch

from shared.bench import device_name, record, write_records
from voco.data import VoCoCrops, VoCoDataset, base_dataset, load_datalist, pretrain_transforms
from voco.device_crops import VolumesWithParameters
from voco.engine import train_step
from voco.models import VoCo, swinunetr

CONFIGS = {  # the original: F=48, batch 2 volumes x (2 random + 16 base) crops of 64^3
    "original": dict(feature_size=48, window_size=7, hidden=2048, batch=2, sw=2, grid=4, roi=64, base_roi=96),
    "tiny": dict(feature_size=12, window_size=2, hidden=64, batch=1, sw=1, grid=2, roi=64, base_roi=32),
}


def peak_gib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def bench_optimizer(model, device, amp_dtype):
    """The original's optimiser (AdamW 1e-4, amsgrad) at a constant LR, and AMP on CUDA only:
    (optimizer, scheduler, scaler, amp) for a timed training step."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, amsgrad=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    return opt, sched, scaler, amp


def bench_pretrain(cfg, device, steps, amp_dtype, use_checkpoint, sdpa=False):
    torch.manual_seed(0)
    model = VoCo(feature_size=cfg["feature_size"], hidden_dim=cfg["hidden"], out_dim=cfg["hidden"],
                 window_size=cfg["window_size"], use_checkpoint=use_checkpoint,
                 use_flash_attention=sdpa).to(device)
    opt, sched, scaler, amp = bench_optimizer(model, device, amp_dtype)
    b, s, k, r = cfg["batch"], cfg["sw"], cfg["grid"] ** 2, cfg["roi"]
    labels = torch.softmax(torch.randn(b, s, k), -1).double()
    batch = {"image": torch.rand(b, s, 1, r, r, r), "crops": torch.rand(b, k, 1, r, r, r), "labels": labels}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_step(model, model.student, batch, opt, sched, scaler, device, amp, amp_dtype)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, model.student, batch, opt, sched, scaler, device, amp, amp_dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    return dt, peak_gib(device)


def bench_data(items, crops, n, cache):
    tf = pretrain_transforms(size=crops.volume_size)
    with tempfile.TemporaryDirectory() as tmp:
        ds = VoCoDataset(items, base_dataset(items, tf, cache_dir=tmp if cache else None), crops)
        if cache:  # fill the cache first: the steady state of a long run
            for i in range(len(items)):
                ds[i]
        t0 = time.perf_counter()
        for i in range(n):
            ds[i % len(items)]
        return n / (time.perf_counter() - t0)


ORIGINAL_GEOMETRY = dict(roi_small=64, base_roi=96, num_crops=4, sw_batch_size=2)


def cpu_seconds_per_item(fn, n):
    """Process CPU time per call of fn(i), i = 0..n-1 (after one untimed call): robust to other jobs."""
    fn(0)
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n


def bench_crop_paths(items, n, dev):
    """Volumes per CPU-second (one thread) of the two crop paths at the original geometry, from the
    persistent cache (the steady state of a long run): old = a worker makes the 18 crops (MONAI, per crop);
    new = a worker reads the volume and draws the parameters, the crops are made batched on the device
    (its CPU cost measured apart, batch of 2 volumes)."""
    crops = VoCoCrops(**ORIGINAL_GEOMETRY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    records = []
    cpu1 = device_name("cpu").split(" (")[0] + " (1 thread)"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            old = VoCoDataset(items, base_dataset(items, pretrain_transforms(size=crops.volume_size), cache_dir=tmp),
                              crops)
            new = VolumesWithParameters(old)
            for i in range(len(items)):  # fill the cache
                old.load(i)
            k = len(items)
            per = {"workers": cpu_seconds_per_item(lambda i: old[i % k], n),
                   "device_loader": cpu_seconds_per_item(lambda i: new[i % k], n)}
            batch = torch.utils.data.default_collate([new[0], new[1 % k]])
            per["device_crops_on_cpu"] = cpu_seconds_per_item(
                lambda i: new.device_crops(batch, torch.device("cpu")), max(1, n // 4)) / 2
        for path, sec in per.items():
            conf = {**ORIGINAL_GEOMETRY, "path": path, "persistent_cache": True, "volumes": n}
            records.append(record("crop_path_volumes_per_cpu_s", 1 / sec, "volumes/CPU-s", cpu1, conf))
            print(f"crop path {path}: {1 / sec:.2f} volumes per CPU-second", flush=True)
        records.append(record("crop_path_worker_speedup", per["workers"] / per["device_loader"], "x", cpu1,
                              {**ORIGINAL_GEOMETRY, "what": "worker CPU time per volume, old / new"}))
    finally:
        torch.set_num_threads(threads)
    return records


def bench_device_crops(device, steps=10):
    """Volumes/s of the device-side crops (batch of 2 volumes, original geometry) on `device`."""
    crops = VoCoCrops(**ORIGINAL_GEOMETRY)
    base = [{"image": torch.rand(1, *crops.volume_size)} for _ in range(2)]
    ds = VolumesWithParameters(VoCoDataset([{"image": f"random{i}"} for i in range(2)], base, crops))
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    batch["volume"] = batch["volume"].to(device)
    from shared.bench import throughput
    return throughput(lambda: ds.device_crops(batch, device), 2, 1, steps, device)


def bench_loop(cfg, device, crops_on, amp_dtype, steps, workers, n_volumes=8):
    """The training loop with a DataLoader over in-RAM working volumes (the CacheDataset case):
    (steps/s, share of wall time spent waiting for the loader, peak memory GiB)."""
    geometry = dict(roi_small=cfg["roi"], base_roi=cfg["base_roi"], num_crops=cfg["grid"],
                    sw_batch_size=cfg["sw"])
    crops = VoCoCrops(**geometry)
    base = [{"image": torch.rand(1, *crops.volume_size)} for _ in range(n_volumes)]
    ds = VoCoDataset([{"image": f"random{i}"} for i in range(n_volumes)], base, crops)
    if crops_on == "device":
        ds = VolumesWithParameters(ds)
    order = [i % n_volumes for i in range(cfg["batch"] * (steps + 3))]
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg["batch"], sampler=order, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True)
    torch.manual_seed(0)
    model = VoCo(feature_size=cfg["feature_size"], hidden_dim=cfg["hidden"], out_dim=cfg["hidden"],
                 window_size=cfg["window_size"], use_checkpoint=True).to(device)
    opt, sched, scaler, amp = bench_optimizer(model, device, amp_dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wait, it = 0.0, iter(loader)
    for step in range(steps + 3):
        if step == 3:  # after the warm-up steps (workers started, cuDNN autotuned)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wait, t0 = 0.0, time.perf_counter()
        w0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - w0
        if crops_on == "device":
            batch = ds.device_crops(batch, device)
        train_step(model, model.student, batch, opt, sched, scaler, device, amp, amp_dtype)
    if device.type == "cuda":  # train_step returns device tensors: wait for the GPU's last steps
        torch.cuda.synchronize(device)
    total = time.perf_counter() - t0
    return steps / total, wait / total, peak_gib(device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, choices=list(CONFIGS), help="default: original on CUDA, tiny on CPU")
    p.add_argument("--steps", default=None, type=int)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--runs", default="runs")
    p.add_argument("--crop_volumes", default=8, type=int, help="volumes timed per crop path (CPU)")
    p.add_argument("--loop_steps", default=20, type=int, help="timed steps of the CUDA training loop")
    p.add_argument("--loop", action="store_true", help="run the training-loop benchmark on CPU too (slow)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = args.config or ("original" if device.type == "cuda" else "tiny")
    cfg = CONFIGS[name]
    steps = args.steps or (20 if device.type == "cuda" else 2)
    dev = device_name(device)
    records = []
    variants = [("float16", True, False)]  # the original: fp16 autocast, activation checkpointing
    if device.type == "cuda":
        variants += [("bfloat16", True, False), ("float16", False, False), ("bfloat16", False, False),
                     ("float16", True, True), ("bfloat16", False, True)]
    for dtype, ckpt, sdpa in variants:
        dt, mem = bench_pretrain(cfg, device, steps, getattr(torch, dtype), ckpt, sdpa)
        conf = {**cfg, "config": name, "amp": dtype if device.type == "cuda" else "off",
                "use_checkpoint": ckpt, "sdpa_teacher": sdpa, "steps": steps}
        records += [record("pretrain_step_s", dt, "s", dev, conf),
                    record("pretrain_steps_per_s", 1 / dt, "steps/s", dev, conf),
                    record("pretrain_volumes_per_s", cfg["batch"] / dt, "volumes/s", dev, conf),
                    record("peak_memory_gib", mem, "GiB", dev, conf)]
        print(f"{name} {conf['amp']} ckpt={ckpt} sdpa={sdpa}: {dt:.3f} s/step, peak {mem:.2f} GiB",
              flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    from voco.demo import sample_btcv
    items = load_datalist(sample_btcv(args.sample) / "btcv.json")
    geometry = (dict(roi_small=64, base_roi=96, num_crops=4, sw_batch_size=2) if name == "original"
                else dict(roi_small=64, base_roi=32, num_crops=2, sw_batch_size=1))
    crops = VoCoCrops(**geometry)
    for cache in (False, True):
        vps = bench_data(items, crops, 2 * len(items), cache)
        records.append(record("data_volumes_per_s", vps, "volumes/s", dev,
                              {**geometry, "persistent_cache": cache, "workers": 0}))
        print(f"data pipeline (cache={cache}): {vps:.2f} volumes/s (one worker)", flush=True)

    records += bench_crop_paths(items, args.crop_volumes, dev)
    for where in ("cpu", "cuda") if device.type == "cuda" else ("cpu",):
        vps = bench_device_crops(torch.device(where))
        name_dev = dev if where == "cuda" else device_name("cpu")
        records.append(record("device_crops_volumes_per_s", vps, "volumes/s", name_dev,
                              {**ORIGINAL_GEOMETRY, "batch_volumes": 2}))
        print(f"device-side crops on {where}: {vps:.2f} volumes/s", flush=True)

    if device.type == "cuda" or args.loop:
        workers = min(16, os.cpu_count() or 1)
        loop_steps = args.loop_steps if device.type == "cuda" else 1
        for crops_on in ("device", "workers"):
            for dtype in ("float16", "bfloat16"):
                sps, share, mem = bench_loop(cfg, device, crops_on, getattr(torch, dtype), loop_steps, workers)
                conf = {**cfg, "config": name, "amp": dtype if device.type == "cuda" else "off",
                        "crops_on": crops_on, "workers": workers, "steps": loop_steps, "use_checkpoint": True}
                records += [record("loop_steps_per_s", sps, "steps/s", dev, conf),
                            record("loop_data_wait_share", share, "fraction", dev, conf),
                            record("loop_peak_memory_gib", mem, "GiB", dev, conf)]
                print(f"loop crops_on={crops_on} {conf['amp']}: {sps:.3f} steps/s, data wait {share:.1%}, "
                      f"peak {mem:.2f} GiB", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    net = swinunetr(feature_size=cfg["feature_size"], window_size=cfg["window_size"]).to(device).eval()
    from monai.inferers import sliding_window_inference
    roi = (96, 96, 96) if name == "original" else (64, 64, 64)
    vol = torch.rand(1, 1, 160, 160, 128 if name == "original" else 64, device=device)
    sw = 4 if name == "original" else 1
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        run = lambda: sliding_window_inference(vol, roi, sw, net, overlap=0.75 if name == "original" else 0.25)  # noqa: E731
        run()
        t0 = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
    records.append(record("sliding_window_s_per_volume", dt, "s", dev,
                          {"volume": list(vol.shape[2:]), "roi": list(roi), "sw_batch_size": sw,
                           "feature_size": cfg["feature_size"]}))
    print(f"sliding window: {dt:.2f} s/volume {tuple(vol.shape[2:])}")
    from voco.v2.bench import main as bench_v2
    labelled = load_datalist(sample_btcv(args.sample) / "dataset_0.json", keys=("image", "label"))
    records += bench_v2(device, steps, items=items, labelled=labelled)  # v2: loss, step, data paths (+ omni)
    print(f"wrote {write_records('voco', records, runs=args.runs)}")
    return records


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
