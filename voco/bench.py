"""VoCo benchmarks -> runs/bench/voco.json: pre-training step time, volumes/s and peak memory (fp16 vs
bf16, activation checkpointing on/off on CUDA), the data pipeline's volumes/s with and without the
cache, and sliding-window inference s/volume.

    python voco/bench.py                 # the original config on CUDA; a tiny one on CPU
    python voco/bench.py --config original --steps 20
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import resource
import tempfile
import time

import numpy as np
import torch

from shared.bench import device_name, record, write_records
from voco.data import VoCoCrops, VoCoDataset, base_dataset, load_datalist, pretrain_transforms
from voco.engine import train_step
from voco.models import VoCo, swinunetr

CONFIGS = {  # the original: F=48, batch 2 volumes x (2 random + 16 base) crops of 64^3
    "original": dict(feature_size=48, window_size=7, hidden=2048, batch=2, sw=2, grid=4, roi=64),
    "tiny": dict(feature_size=12, window_size=2, hidden=64, batch=1, sw=1, grid=2, roi=64),
}


def peak_gib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def bench_pretrain(cfg, device, steps, amp_dtype, use_checkpoint, sdpa=False):
    torch.manual_seed(0)
    model = VoCo(feature_size=cfg["feature_size"], hidden_dim=cfg["hidden"], out_dim=cfg["hidden"],
                 window_size=cfg["window_size"], use_checkpoint=use_checkpoint,
                 use_flash_attention=sdpa).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, amsgrad=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, choices=list(CONFIGS), help="default: original on CUDA, tiny on CPU")
    p.add_argument("--steps", default=None, type=int)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--runs", default="runs")
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
    print(f"wrote {write_records('voco', records, runs=args.runs)}")
    return records


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
