"""VoCo v2 benchmarks (part of `make bench-voco`): the vectorised loss against the per-volume loop of
the original (re-expressed in `loss.v2_losses_loop`), forward + backward; the v2 training step at the
original B configuration on CUDA (a tiny one on CPU); the v2 crop path on the sample CTs.

    python -m voco.v2.bench      # these alone (sample CTs from data/sample)
"""

import time

import numpy as np
import torch

from shared.bench import device_name, record
from voco.bench import bench_optimizer
from voco.v2.engine import train_step
from voco.v2.loss import v2_losses, v2_losses_loop
from voco.v2.model import VoCoV2

# the original step per GPU: 2 volumes x (2 random + 9 base crops), heads 1024 wide
LOSS_SHAPE = dict(batch=2, sw=2, bases=9, dim=1024)
CONFIGS = {"original": dict(feature_size=48, window_size=7, hidden=1024, batch=2, sw=2, grid=3),
           "tiny": dict(feature_size=12, window_size=2, hidden=32, batch=1, sw=1, grid=2)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loss(fn, device, reps, batch=2, sw=2, bases=9, dim=1024):
    g = torch.Generator().manual_seed(0)
    x_s = torch.randn(batch * sw, dim, generator=g).to(device).requires_grad_(True)
    q_s = torch.randn(batch * bases, dim, generator=g).to(device).requires_grad_(True)
    x_t = torch.randn(batch * sw, dim, generator=g).to(device)
    q_t = torch.randn(batch * bases, dim, generator=g).to(device)
    labels = torch.softmax(torch.randn(batch, sw, bases, generator=g), -1).double().to(device)

    def once():
        parts = fn(x_s, q_s, x_t, q_t, labels)
        (parts[0] + parts[1] + parts[2]).backward()

    once()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        once()
    _sync(device)
    return (time.perf_counter() - t0) / reps


def time_step(cfg, device, steps, amp_dtype=torch.float16, use_checkpoint=True):
    torch.manual_seed(0)
    model = VoCoV2(feature_size=cfg["feature_size"], hidden_dim=cfg["hidden"], out_dim=cfg["hidden"],
                   window_size=cfg["window_size"], use_checkpoint=use_checkpoint).to(device)
    opt, sched, scaler, amp = bench_optimizer(model, device, amp_dtype)
    b, s, k = cfg["batch"], cfg["sw"], cfg["grid"] ** 2
    batch = {"image": torch.rand(b, s, 1, 64, 64, 64), "crops": torch.rand(b, k, 1, 64, 64, 64),
             "labels": torch.softmax(torch.randn(b, s, k), -1).double()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_step(model, model, batch, opt, sched, scaler, device, amp, amp_dtype, step=0)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(model, model, batch, opt, sched, scaler, device, amp, amp_dtype, step=i + 1)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return (time.perf_counter() - t0) / steps, peak


def time_data(items, n, cache, window="crop"):
    """Volumes/s of the v2 worker path (pre-processing + window + 3x3 crops), one process."""
    import tempfile

    from voco.data import base_dataset
    from voco.v2.data import WindowedVoCoDataset, v2_crops, v2_transforms

    crops = v2_crops()
    with tempfile.TemporaryDirectory() as tmp:
        base = base_dataset(items, v2_transforms(crops.volume_size, window=window), cache_dir=tmp if cache else None)
        ds = WindowedVoCoDataset(items, base, crops)
        if cache:  # the steady state of a long run: the cache filled
            for i in range(len(items)):
                ds[i]
        t0 = time.perf_counter()
        for i in range(n):
            ds[i % len(items)]
        return n / (time.perf_counter() - t0)


def time_labelled(items, n, cache):
    """Steps/s of the omni labelled path (pre-processing + 4 labelled patches of 64^3 at 1.5 mm, the
    original B defaults), one process."""
    import argparse
    import tempfile

    from voco.v2.omni_data import build_labelled

    with tempfile.TemporaryDirectory() as tmp:
        args = argparse.Namespace(roi_x=64, sw_batch_size=4, space_x=1.5, space_y=1.5, space_z=1.5, a_min=-175.0,
                                  a_max=250.0, b_min=0.0, b_max=1.0, cache_dir=tmp if cache else None,
                                  cache_dataset=False, cache_rate=0.5, workers=0, seed=0, RandFlipd_prob=0.2,
                                  RandRotate90d_prob=0.2, RandShiftIntensityd_prob=0.1)
        ds = build_labelled(args, items, skip_bad=False)
        if cache:
            for i in range(len(items)):
                ds.base[i]
        t0 = time.perf_counter()
        for step in range(1, n + 1):
            ds[step]
        return n / (time.perf_counter() - t0)


def main(device=None, steps=None, reps=None, items=None, labelled=None):
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = device_name(device)
    records = []
    reps = reps or (200 if device.type == "cuda" else 20)
    fast = time_loss(v2_losses, device, reps, **LOSS_SHAPE)
    loop = time_loss(v2_losses_loop, device, max(2, reps // 10), **LOSS_SHAPE)
    conf = {**LOSS_SHAPE, "forward_backward": True}
    records += [record("v2_loss_vectorised_ms", 1e3 * fast, "ms", dev, conf),
                record("v2_loss_loop_ms", 1e3 * loop, "ms", dev, conf),
                record("v2_loss_speedup", loop / fast, "x", dev, conf)]
    print(f"v2 loss fwd+bwd: vectorised {1e3 * fast:.2f} ms, loop {1e3 * loop:.2f} ms ({loop / fast:.1f}x)", flush=True)
    name = "original" if device.type == "cuda" else "tiny"
    steps = steps or (20 if device.type == "cuda" else 1)
    for dtype in ("float16", "bfloat16") if device.type == "cuda" else ("float16",):
        dt, peak = time_step(CONFIGS[name], device, steps, getattr(torch, dtype))
        conf = {**CONFIGS[name], "config": name, "amp": dtype if device.type == "cuda" else "off",
                "use_checkpoint": True, "steps": steps}
        records += [record("v2_pretrain_steps_per_s", 1 / dt, "steps/s", dev, conf),
                    record("v2_peak_memory_gib", peak, "GiB", dev, conf)]
        print(f"v2 {name} step ({conf['amp']}): {1 / dt:.3f} steps/s, peak {peak:.2f} GiB", flush=True)
    for cache in (False, True) if items else ():
        vps = time_data(items, 2 * len(items), cache)
        records.append(record("v2_data_volumes_per_s", vps, "volumes/s", device_name("cpu"),
                              {"window": "crop", "persistent_cache": cache, "workers": 0, "grid": 3, "roi": 64}))
        print(f"v2 data path (cache={cache}): {vps:.2f} volumes/s (one worker)", flush=True)
    for cache in (False, True) if labelled else ():
        sps = time_labelled(labelled, 2 * len(labelled), cache)
        records.append(record("omni_labelled_steps_per_s", sps, "steps/s", device_name("cpu"),
                              {"persistent_cache": cache, "workers": 0, "patches": 4, "roi": 64, "spacing": 1.5}))
        print(f"omni labelled path (cache={cache}): {sps:.2f} steps/s of 4 patches (one worker)", flush=True)
    return records


if __name__ == "__main__":
    np.seterr(all="ignore")
    from voco.data import load_datalist
    from voco.demo import sample_btcv
    root = sample_btcv("data/sample")
    main(items=load_datalist(root / "btcv.json"),
         labelled=load_datalist(root / "dataset_0.json", keys=("image", "label")))
