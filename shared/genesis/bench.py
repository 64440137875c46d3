"""Benchmarks of Semantic Genesis / TransVW: restoration transforms and training steps.

Records (runs/bench/<method>.json, via shared.bench):
- transform_cubes_per_s: the batched pipeline (elastic + one of four) on this device, 64x64x32 cubes;
- transform_<name>_cubes_per_s: each stage alone;
- reference_transform_cubes_per_s: a per-cube NumPy/SciPy pipeline with the original's algorithm
  (scipy gaussian_filter + map_coordinates, a 100,000-point Bezier through np.interp), single thread,
  and transform_speedup = the ratio;
- train_step_s, train_cubes_per_s, peak_memory_gib: YNet3D steps (MSE + 0.01 CE, Adam) at the config
  (batch 64 on a GPU, with bf16 autocast on/off and channels_last_3d on/off; a small batch on a CPU);
- transform_at_train_batch_cubes_per_s and transform_share_of_step: the transforms at the training batch
  on the training device (--transform_on device), and their share of transform + step;
  on a GPU also the share measured in one stream (transforms then step, as the trainer runs them).
"""

import argparse
import random
import resource
import time

import numpy as np
import torch

from shared.bench import device_name, record, throughput, write_records
from shared.genesis.pretrain import build_model, genesis_loss
from shared.genesis.restoration import (
    elastic_warp,
    image_in_painting,
    image_out_painting,
    local_pixel_shuffling,
    nonlinear_transform,
    restoration_pair,
)


def reference_pipeline(cube, r):
    """One cube the original's way (per-sample NumPy/SciPy), as a plain baseline for the speed-up."""
    from scipy import ndimage

    x, y, z = cube.shape
    state = np.random.RandomState(r.randrange(2**31))
    dx = ndimage.gaussian_filter(state.rand(x, y, z) * 2 - 1, 8, mode="constant", cval=0) * 991
    dy = ndimage.gaussian_filter(state.rand(x, y, z) * 2 - 1, 8, mode="constant", cval=0) * 991
    ii, jj, kk = np.meshgrid(np.arange(x), np.arange(y), np.arange(z), indexing="ij")
    out = ndimage.map_coordinates(cube, [ii + dy, jj + dx, kk], order=1, mode="reflect")
    choice = r.random()
    if choice <= 0.25:
        for _ in range(5):
            bx, by, bz = r.randint(1, x // 10), r.randint(1, y // 10), r.randint(1, z // 10)
            px, py, pz = r.randint(0, x - bx), r.randint(0, y - by), r.randint(0, z - bz)
            window = out[px:px + bx, py:py + by, pz:pz + bz].flatten()
            np.random.shuffle(window)
            out[px:px + bx, py:py + by, pz:pz + bz] = window.reshape(bx, by, bz)
    elif choice <= 0.5:
        t = np.linspace(0, 1, 100000)
        pts = [(0, 0), (r.random(), r.random()), (r.random(), r.random()), (1, 1)]
        w = [t**3, 3 * t**2 * (1 - t), 3 * t * (1 - t) ** 2, (1 - t) ** 3]
        xs, ys = sum(p[0] * b for p, b in zip(pts, w)), sum(p[1] * b for p, b in zip(pts, w))
        out = np.interp(out, np.sort(xs), ys if r.random() < 0.5 else np.sort(ys))
    else:
        keep = choice > 0.75
        sizes = [d - r.randint(3 * d // 7, 4 * d // 7) if keep else r.randint(d // 6, d // 3) for d in (x, y, z)]
        starts = [r.randint(3, d - s - 3) for d, s in zip((x, y, z), sizes)]
        box = tuple(slice(a, a + s) for a, s in zip(starts, sizes))
        if keep:
            inner = out[box].copy()
            out = np.random.rand(x, y, z)
            out[box] = inner
        else:
            out[box] = np.random.rand(*sizes)
    return out


def bench_transforms(device, batch, shape, repeats):
    x = torch.rand((batch, 1, *shape), device=device)
    rng = np.random.default_rng(0)
    dev = device_name(device)
    cfg = {"batch": batch, "cube": list(shape), "threads": torch.get_num_threads()}
    out = [record("transform_cubes_per_s", throughput(lambda: restoration_pair(x, rng), batch, 1, repeats, device),
                  "cubes/s", dev, cfg)]
    stages = {"elastic": elastic_warp, "local_shuffle": local_pixel_shuffling, "nonlinear": nonlinear_transform,
              "in_paint": image_in_painting, "out_paint": image_out_painting}
    for name, fn in stages.items():
        value = throughput(lambda fn=fn: fn(x, rng), batch, 1, repeats, device)
        out.append(record(f"transform_{name}_cubes_per_s", value, "cubes/s", dev, cfg))
    return out


def cpu_ms_per_item(fn, items, repeats=3):
    """Process CPU time per item in ms (single-threaded work): robust to other jobs sharing the cores."""
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) * 1000 / (items * repeats)


def bench_reference(shape, n_cubes):
    """(cubes/s wall, CPU ms per cube) of the per-cube NumPy/SciPy pipeline."""
    r = random.Random(0)
    cube = np.random.default_rng(0).random(shape)
    reference_pipeline(cube, r)
    start = time.perf_counter()
    for _ in range(n_cubes):
        reference_pipeline(cube, r)
    wall = n_cubes / (time.perf_counter() - start)
    return wall, cpu_ms_per_item(lambda: reference_pipeline(cube, r), 1, n_cubes)


def bench_training(device, batch, shape, width, steps, amp, channels_last=False):
    """Training steps on fixed cubes (no loader), and the restoration transforms at the same batch on the
    same device: cubes/s of each and the share of a step (transforms + update) the transforms take."""
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = build_model("en_de", 44, width).to(device).to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand((batch, 1, *shape), device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, 44, (batch,), device=device)

    def step(inputs=x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(inputs)
        loss = genesis_loss(out, x, labels)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rate = throughput(step, batch, 1, steps, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process peak RSS)
    rng = np.random.default_rng(0)
    tf_rate = throughput(lambda: restoration_pair(x, rng), batch, 1, max(3, steps), device)
    dev = device_name(device)
    cfg = {"batch": batch, "cube": list(shape), "width": width, "amp_bf16": amp, "channels_last": channels_last,
           "threads": torch.get_num_threads()}
    out = [record("train_step_s", batch / rate, "s", dev, cfg), record("train_cubes_per_s", rate, "cubes/s", dev, cfg),
           record("peak_memory_gib", peak, "GiB", dev, cfg),
           record("transform_at_train_batch_cubes_per_s", tf_rate, "cubes/s", dev, cfg),
           record("transform_share_of_step", (1 / tf_rate) / (1 / tf_rate + 1 / rate), "fraction", dev,
                  {**cfg, "what": "transform time / (transform + training step), timed apart"})]
    if device.type == "cuda":  # the real step: transforms on the device, then the update, one stream
        def full_step():
            step(restoration_pair(torch.rand((batch, 1, *shape), device=device), rng)[0].contiguous(memory_format=fmt))

        full = throughput(full_step, batch, 1, steps, device)
        out.append(record("train_with_transforms_cubes_per_s", full, "cubes/s", dev, cfg))
        out.append(record("transform_share_of_step_in_stream", 1 - full / rate, "fraction", dev, cfg))
        try:
            out.append(record("gpu_utilization_percent", torch.cuda.utilization(device), "%", dev, cfg))
        except Exception as err:  # needs pynvml / NVML
            print(f"note: no GPU utilisation reading ({type(err).__name__})")
    return out


def main(method, argv=None):
    p = argparse.ArgumentParser(description=f"{method} benchmarks: transforms and training steps")
    p.add_argument("--device", default=None)
    p.add_argument("--cube", type=int, nargs=3, default=(64, 64, 32))
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--transform_batch", type=int, default=32)
    p.add_argument("--train_batch", type=int, default=None, help="default: 64 on GPU, 2 on CPU")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default: 10 GPU, 2 CPU)")
    p.add_argument("--reference_cubes", type=int, default=8)
    p.add_argument("--runs", default="runs")
    p.add_argument("--skip_training", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    shape = tuple(args.cube)
    records = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core CPU throughput, as the original's per-sample loaders ran
    cpu = bench_transforms(torch.device("cpu"), args.transform_batch, shape, 3)
    x = torch.rand((args.transform_batch, 1, *shape))
    rng = np.random.default_rng(1)
    ours_ms = cpu_ms_per_item(lambda: restoration_pair(x, rng), args.transform_batch)
    ref, ref_ms = bench_reference(shape, args.reference_cubes)
    torch.set_num_threads(threads)
    records += cpu
    cpu_name = device_name("cpu").split(" (")[0] + " (1 thread)"
    cfg = {"cube": list(shape), "what": "per-cube NumPy/SciPy, the original's algorithm"}
    records += [record("reference_transform_cubes_per_s", ref, "cubes/s", cpu_name, cfg),
                record("transform_cpu_ms_per_cube", ours_ms, "ms", cpu_name, {"cube": list(shape)}),
                record("reference_cpu_ms_per_cube", ref_ms, "ms", cpu_name, cfg),
                record("transform_speedup_vs_reference_cpu_time", ref_ms / ours_ms, "x", cpu_name, cfg),
                record("transform_speedup_vs_reference_wall", cpu[0]["value"] / ref, "x", cpu_name, cfg)]
    if gpu:
        records += bench_transforms(device, 256, shape, 5)
    if not args.skip_training:
        batch = args.train_batch or (64 if gpu else 2)
        steps = args.steps or (10 if gpu else 2)
        variants = [(True, False), (True, True), (False, False), (False, True)] if gpu else [(False, False)]
        for amp, channels_last in variants:  # bf16 autocast x channels_last_3d on a GPU
            records += bench_training(device, batch, shape, args.width, steps, amp, channels_last)
            if gpu:
                torch.cuda.empty_cache()
    path = write_records(method, records, runs=args.runs)
    for r in records:
        print(f"{r['name']:45s} {r['value']:12.4g} {r['unit']:8s} {r['device']}")
    print(f"-> {path}")
    return records
