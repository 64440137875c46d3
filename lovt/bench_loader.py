"""Input-path benchmark of `make bench-lovt`: the original-style loader (JPEG decode + per-sample ScanTransform +
tokenisation) next to the cached one (decode-once image cache + stored token ids + batched augmentation), in
samples/s per CPU core (one process, one thread), and on CUDA the training throughput each path feeds.

    python lovt/bench_loader.py [--jpeg_size 2544x3056] [--size 224] [--batch 32]   # also run by lovt/bench.py

The sample MIMIC-CXR-JPG images are 256 px; real MIMIC-CXR-JPG files are about 2544 x 3056 px, and decoding them
is most of the original loader's cost. `--jpeg_size WxH` (default 2544x3056) therefore prepares a copy of the sample
studies whose JPEGs are upscaled to that size (with a little noise so that they compress like radiographs);
`--jpeg_size 0` uses the sample JPEGs as they are. Prepared data lives under runs/bench/lovt_data/ and is reused.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import os
import time

import numpy as np
import torch

MIMIC_JPEG_SIZE = (2544, 3056)  # width x height of a typical MIMIC-CXR-JPG PA image


def _upscaled_raw_copy(sample: Path, out: Path, size: tuple) -> Path:
    """The raw sample layout with every JPEG resized to `size` (w, h) plus mild noise; csvs and reports linked."""
    from PIL import Image

    src = Path(sample) / "mimic-cxr-jpg"
    done = out / ".complete"
    if done.is_file():
        return out
    rng = np.random.default_rng(0)
    for file in sorted(src.rglob("*")):
        rel = file.relative_to(src)
        dst = out / rel
        if file.is_dir():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if file.suffix == ".jpg":
            with Image.open(file) as img:
                big = np.asarray(img.convert("L").resize(size, Image.BILINEAR), dtype=np.float32)
            big = np.clip(big + rng.normal(0, 3, big.shape), 0, 255).astype(np.uint8)
            Image.fromarray(big).save(dst, quality=95)
        elif not dst.exists():
            os.symlink(file.resolve(), dst)
    done.touch()
    return out


def bench_dataset(sample, runs, jpeg_size: tuple | None) -> Path:
    """Prepared LoVT dataset of the sample studies (JPEGs upscaled to jpeg_size = (w, h), or as they are)."""
    from lovt.data.mimic_cxr import create_dataset

    name = "sample" if not jpeg_size else f"{jpeg_size[0]}x{jpeg_size[1]}"
    root = Path(runs) / "bench" / "lovt_data"
    target = root / f"mimic-cxr_ap-pa_{name}_dataset"
    if not (target / "dataset_statistics.json").is_file():
        raw = Path(sample) / "mimic-cxr-jpg"
        if jpeg_size:
            raw = _upscaled_raw_copy(Path(sample), root / f"raw_{name}", tuple(jpeg_size))
        create_dataset(raw, "mimic-cxr_ap-pa", target_path=target, num_workers=1, overwrite=True)
    return target


@contextlib.contextmanager
def one_core():
    """torch and OpenCV on one thread: a loader worker's share of the machine."""
    threads = torch.get_num_threads()
    try:
        import cv2
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        cv2 = None
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if cv2 is not None:
            cv2.setNumThreads(cv_threads)


def loaders(path, tokenizer, size: int, batch: int, cache_size: int, max_length: int = 512) -> dict:
    """{"files", "cache_workers_aug", "cache_device_aug"}: (dataset, collate_fn) of the three input paths, with
    LoVT_100's augmentations (the device variant returns the uint8 batch its device would augment)."""
    from lovt.data import ImageTextDataset, ReportAugmentationConfig, ReportTransform, ScanTransform
    from lovt.data.batch_augment import BatchScanTransform
    from lovt.data.cached import CachedImageTextDataset, CachedPretrainCollator
    from lovt.data.prepare_cache import open_image_cache
    from lovt.datamodule import PretrainCollator

    text = ReportAugmentationConfig(sentence_shuffling="random_swaps", sentence_sampling=None)
    files = ImageTextDataset(path, "train", ScanTransform(image_size=(size, size)), ReportTransform(text))
    stats = files.stats
    images = open_image_cache(path, cache_size)
    cached = CachedImageTextDataset(path, "train", tokenizer, max_length, images, ReportTransform(text))
    augment = BatchScanTransform(image_size=(size, size), dataset_stats=stats)
    return {"files": (files, PretrainCollator(tokenizer, max_length)),
            "cache_workers_aug": (cached, CachedPretrainCollator(tokenizer, max_length, augment)),
            "cache_device_aug": (cached, CachedPretrainCollator(tokenizer, max_length)),
            "augment": augment}


def samples_per_s(dataset, collate, batch: int, batches: int) -> float:
    """Samples/s of dataset + collate in this process (one thread), after one warm-up batch."""
    g = torch.Generator().manual_seed(0)
    order = torch.randint(len(dataset), (batch * (batches + 1),), generator=g).tolist()
    with one_core():
        collate([dataset[i] for i in order[:batch]])
        start = time.perf_counter()
        for k in range(1, batches + 1):
            collate([dataset[i] for i in order[k * batch:(k + 1) * batch]])
        return batch * batches / (time.perf_counter() - start)


def loader_records(path, tokenizer, size: int, batch: int, cache_size: int, device_label: str, data_label: str,
                   seconds: float = 6.0) -> list:
    """Side-by-side loader samples/s per core of the three paths and the speed-ups over the files path."""
    from shared.bench import record

    paths = loaders(path, tokenizer, size, batch, cache_size)
    paths.pop("augment")
    rates = {}
    for name, (dataset, collate) in paths.items():
        probe = samples_per_s(dataset, collate, batch, 1)  # size the run to about `seconds`
        batches = max(2, min(200, int(seconds * probe / batch)))
        rates[name] = samples_per_s(dataset, collate, batch, batches)
        print(f"loader {name}: {rates[name]:.1f} samples/s per core ({batches} batches of {batch})")
    config = {"size": size, "batch": batch, "cache_size": cache_size, "data": data_label, "threads": 1,
              "workers": 0, "what": "dataset + collate in one process, one thread (= one loader worker)"}
    out = [record(f"loader_samples_per_s_per_core_{name}", rate, "samples/s", device_label, config)
           for name, rate in rates.items()]
    for name in ("cache_workers_aug", "cache_device_aug"):
        ratio = rates[name] / rates["files"]
        out.append(record(f"loader_speedup_{name}_vs_files", ratio, "x", device_label,
                          {**config, "target": ">= 10x"}))
        print(f"speed-up {name} vs files: {ratio:.1f}x")
    return out


def train_feed(model, loader, steps: int, device, augment=None, precision: str = "bf16",
               warmup: int = 3) -> tuple[float, float]:
    """(images/s, data-wait share) of `steps` training steps fed by `loader` (after `warmup` steps).

    The wait is the time spent blocked on the loader (next batch not ready); the share is wait / wall time.
    augment: a BatchScanTransform applied on `device` to loaders that deliver uint8 batches.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    it = iter(loader)
    wait = images = 0.0
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            start, wait, images = time.perf_counter(), 0.0, 0
        t = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else
                 ({kk: vv.to(device, non_blocking=True) for kk, vv in v.items()} if isinstance(v, dict) else v)
                 for k, v in batch.items()}
        if "scan_uint8" in batch:
            batch["scan"] = augment(batch.pop("scan_uint8"), batch.pop("scan_sizes"))
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = model(batch)[0]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sync()
        images += batch["scan"].shape[0]
    total = time.perf_counter() - start
    return images / total, wait / total


def feed_records(model, path, tokenizer, size: int, batch: int, cache_size: int, workers: int, steps: int,
                 device, device_label: str, data_label: str, max_length: int = 512) -> list:
    """Training images/s and data-wait share with the files path and the cached path (augmentation on the device),
    bf16 autocast, channels-last ResNet. Meant for CUDA; runs anywhere."""
    from torch.utils.data import DataLoader, RandomSampler

    from shared.bench import record

    paths = loaders(path, tokenizer, size, batch, cache_size, max_length)
    augment = paths.pop("augment")
    model.model_a.encoder.use_channels_last(True)
    out = []
    for name in ("files", "cache_device_aug"):
        dataset, collate = paths[name]
        sampler = RandomSampler(dataset, replacement=True, num_samples=batch * (steps + 4))
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                            collate_fn=collate, pin_memory=device.type == "cuda",
                            persistent_workers=False, prefetch_factor=4 if workers else None)
        rate, wait = train_feed(model, loader, steps, device, augment if name != "files" else None)
        config = {"size": size, "batch": batch, "workers": workers, "precision": "bf16", "channels_last": True,
                  "data": data_label, "input": name}
        out += [record(f"train_images_per_s_{name}", rate, "images/s", device_label, config),
                record(f"data_wait_share_{name}", wait * 100, "%", device_label, {**config, "target": "< 10 %"})]
        print(f"train fed by {name}: {rate:.1f} images/s, waiting for data {wait * 100:.1f} % of the time")
    return out


def parse_size(text: str):
    if text in ("0", "", "none"):
        return None
    w, h = text.lower().split("x")
    return int(w), int(h)


def prepare(sample, runs, jpeg_size, tokenizer, cache_size: int, max_length: int = 512) -> Path:
    """The bench dataset with its image cache and stored tokens (reused when present)."""
    from lovt.data.prepare_cache import build_caches

    path = bench_dataset(sample, runs, jpeg_size)
    start = time.perf_counter()
    build_caches(path, cache_size, tokenizer, max_length)
    print(f"caches ready in {time.perf_counter() - start:.1f} s: {path}")
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jpeg_size", type=parse_size, default=MIMIC_JPEG_SIZE, help="WxH of the JPEGs, or 0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--cache_size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=6.0, help="about how long each loader is timed")
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--runs", default="runs")
    args = p.parse_args(argv)

    import tempfile

    from lovt.models import load_tokenizer
    from lovt.models.report_encoder import build_tiny_bert
    from lovt.synthetic import CORPUS
    from shared.bench import device_name, write_records

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(str(build_tiny_bert(Path(tmp) / "bert", CORPUS)))
        path = prepare(args.sample, args.runs, args.jpeg_size, tokenizer, args.cache_size)
        label = "sample studies, JPEGs " + ("as they are (256 px)" if not args.jpeg_size else
                                            f"upscaled to {args.jpeg_size[0]}x{args.jpeg_size[1]}")
        with one_core():
            device = device_name(torch.device("cpu"))
        records = loader_records(path, tokenizer, args.size, args.batch, args.cache_size, device, label,
                                 args.seconds)
    print(f"wrote {write_records('lovt_loader', records, runs=args.runs)}")


if __name__ == "__main__":
    main()
