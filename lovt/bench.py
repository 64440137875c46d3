"""`make bench-lovt`: image-report pairs/s, step time and peak memory of LoVT training steps (fp32 and mixed
precision), the data loader's pairs/s on the prepared sample dataset, the original-style vs the cached input path
(loader samples/s per core and the speed-up; on CUDA the train images/s and data-wait share each feeds:
lovt/bench_loader.py), and the downstream heads' training images/s (YOLOv3, U-Net, linear; frozen vs fine-tuned
backbone). Writes runs/bench/lovt.json.

    python lovt/bench.py [--size 224] [--batch 32] [--full_bert] [--steps 10] [--workers 4] [--no-heads]
                         [--no-input_paths] [--jpeg_size 2544x3056] [--cache_size 256]

Defaults: on CUDA the paper's geometry (224 px, batch 32, a BERT-base-sized random text encoder); on CPU a small
one (128 px, batch 4, tiny BERT). Inputs are synthetic, so the model numbers do not depend on the disk.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import resource
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir


def build(bert_dir, size, batch, device):
    import lovt.train as train
    from lovt.models import BiModalModel, model_config
    from lovt.synthetic import tiny_overrides

    overrides = ["+experiment=LoVT_100"] + tiny_overrides(bert_dir, size=size, batch_size=batch, d=512)
    overrides += ["pretrain_model.d_hidden=2048", "pretrain_model.encoder_b.max_length=512"]
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=overrides)
    return BiModalModel(model_config(cfg.pretrain_model)).to(device)


def synthetic_batch(tokenizer, batch, size, device):
    from lovt.data import collate_image_text
    from lovt.models import ReportTokenizer
    from lovt.synthetic import SyntheticImageTextDataset

    ds = SyntheticImageTextDataset(batch, size=size)
    b = collate_image_text([ds[i] for i in range(batch)])
    b["report"] = ReportTokenizer(tokenizer)([s * 5 for s in b["sentences"]])  # ~15 sentences, ~100 tokens
    return {"scan": b["scan"].to(device), "report": {k: v.to(device) for k, v in b["report"].items()}}


def time_steps(model, batch, steps, precision, device):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-6)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 2):  # two warm-up steps
        sync()
        t = time.perf_counter()
        with ctx():
            loss = model(batch)[0]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t)
    step = sorted(times)[len(times) // 2]
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
    return step, peak


def loader_pairs_per_s(sample, tokenizer, size, batch, workers, runs):
    """Decode + augment + tokenise throughput of the real input pipeline on the prepared sample data."""
    from torch.utils.data import DataLoader, RandomSampler

    from lovt.data import ImageTextDataset, ReportAugmentationConfig, ReportTransform, ScanTransform
    from lovt.datamodule import PretrainCollator

    target = Path(runs) / "bench" / "lovt_data" / "mimic-cxr_ap-pa_dataset"
    if not (target / "dataset_statistics.json").is_file():
        if not (Path(sample) / "mimic-cxr-jpg").is_dir():
            return None
        from lovt.data.mimic_cxr import create_dataset

        create_dataset(Path(sample) / "mimic-cxr-jpg", target_path=target, num_workers=1, overwrite=True)
    ds = ImageTextDataset(target, "train", ScanTransform(image_size=(size, size)),
                          ReportTransform(ReportAugmentationConfig(sentence_shuffling="random_swaps",
                                                                   sentence_sampling=None)))
    sampler = RandomSampler(ds, replacement=True, num_samples=batch * 21)  # the sample split is small
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                        collate_fn=PretrainCollator(tokenizer))
    n, t = 0, None
    for i, b in enumerate(loader):
        if i == 0:
            t = time.perf_counter()  # start after the first batch (worker start-up)
            continue
        n += b["scan"].shape[0]
    return n / (time.perf_counter() - t) if n else None


def main(argv=None):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224 if cuda else 128)
    p.add_argument("--batch", type=int, default=32 if cuda else 4)
    p.add_argument("--steps", type=int, default=10 if cuda else 3)
    p.add_argument("--full_bert", action=argparse.BooleanOptionalAction, default=cuda,
                   help="BERT-base geometry (12 layers, 768 wide) with random weights")
    p.add_argument("--workers", type=int, default=8 if cuda else 0)
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=cuda)
    p.add_argument("--heads", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the downstream heads (frozen vs fine-tuned backbone)")
    p.add_argument("--head_size", type=int, default=224 if cuda else 64, help="downstream input size")
    p.add_argument("--head_batch", type=int, default=32 if cuda else 2, help="downstream batch size")
    p.add_argument("--input_paths", action=argparse.BooleanOptionalAction, default=True,
                   help="files vs cached input path: loader samples/s per core (and on CUDA the fed train rate)")
    p.add_argument("--jpeg_size", default="2544x3056", help="JPEG size for the input-path comparison (0: 256 px)")
    p.add_argument("--cache_size", type=int, default=256)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--runs", default="runs")
    args = p.parse_args(argv)

    from lovt.models import load_tokenizer
    from lovt.models.report_encoder import build_tiny_bert
    from lovt.synthetic import CORPUS
    from shared.bench import device_name, record, write_records

    device = torch.device("cuda" if cuda else "cpu")
    dev = device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        geometry = dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072) if args.full_bert \
            else {}
        bert = build_tiny_bert(Path(tmp) / "bert", CORPUS, **geometry)
        tokenizer = load_tokenizer(str(bert))
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        model = build(bert, args.size, args.batch, device)
        if args.channels_last:
            model.model_a.encoder.use_channels_last()
        batch = synthetic_batch(tokenizer, args.batch, args.size, device)
        config = {"size": args.size, "batch": args.batch, "bert": "base" if args.full_bert else "tiny",
                  "channels_last": args.channels_last, "tf32": cuda,
                  "model": "LoVT_100 (ResNet-50, all four local losses)"}
        records = []
        if cuda:  # the original's settings for comparison: NCHW, exact fp32 matmuls, no cuDNN autotuning, fp32/fp16
            torch.backends.cudnn.benchmark = False
            torch.set_float32_matmul_precision("highest")
            model.model_a.encoder.use_channels_last(False)
            for precision in ("fp32", "fp16"):
                step, _ = time_steps(model, batch, args.steps, precision, device)
                cfg = {**config, "precision": precision, "channels_last": False, "tf32": False}
                records.append(record(f"train_pairs_per_s_{precision}_original_settings", args.batch / step,
                                      "pairs/s", dev, cfg))
                print(f"{precision}, original settings: {args.batch / step:.1f} pairs/s")
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
            model.model_a.encoder.use_channels_last(args.channels_last)
        precisions = ["fp32"] + (["fp16", "bf16"] if cuda else [])
        for precision in precisions:
            step, peak = time_steps(model, batch, args.steps, precision, device)
            cfg = {**config, "precision": precision}
            records += [record(f"train_pairs_per_s_{precision}", args.batch / step, "pairs/s", dev, cfg),
                        record(f"train_step_time_{precision}", step * 1000, "ms", dev, cfg),
                        record(f"peak_memory_{precision}", peak, "GiB", dev, cfg)]
            print(f"{precision}: {args.batch / step:.1f} pairs/s, {step * 1000:.0f} ms/step, peak {peak:.2f} GiB")
        rate = loader_pairs_per_s(args.sample, tokenizer, args.size, args.batch, args.workers, args.runs)
        if rate is not None:
            records.append(record("loader_pairs_per_s", rate, "pairs/s", dev,
                                  {"size": args.size, "batch": args.batch, "workers": args.workers,
                                   "data": "prepared sample MIMIC-CXR-JPG, train augmentations"}))
            print(f"data loader: {rate:.1f} pairs/s with {args.workers} workers")
        if args.input_paths:  # original-style loader vs the cached one (lovt/bench_loader.py)
            from lovt import bench_loader

            jpeg = bench_loader.parse_size(args.jpeg_size)
            path = bench_loader.prepare(args.sample, args.runs, jpeg, tokenizer, args.cache_size)
            label = "sample studies, JPEGs " + (f"upscaled to {args.jpeg_size}" if jpeg else "256 px")
            with bench_loader.one_core():
                cpu = device_name(torch.device("cpu"))
            records += bench_loader.loader_records(path, tokenizer, 224, 32, args.cache_size, cpu, label)
            if cuda:  # train images/s and data-wait share, each input path feeding the GPU (bf16, channels-last)
                records += bench_loader.feed_records(model, path, tokenizer, args.size, args.batch, args.cache_size,
                                                     max(args.workers, 1), 4 * args.steps, device, dev, label)
        if args.heads:
            from lovt.evaluation.bench import head_records

            del model, batch
            heads = head_records(device=device, input_size=args.head_size, batch_size=args.head_batch,
                                 repeats=3 if cuda else 1)
            for r in heads:
                print(f"{r['name']}: {r['value']:.1f} images/s")
            records += heads
    print(f"wrote {write_records('lovt', records, runs=args.runs)}")


if __name__ == "__main__":
    main()
