"""BTCV fine-tuning of SwinUNETR v2 from VoCo weights (Finetune/BTCV/main.py's flags and defaults).

    python voco/finetune.py --data_dir data/BTCV --pretrained_checkpoint VoCo_10k.pt --logdir runs/btcv
    python voco/finetune.py ... --use_ssl_pretrained False          # random initialisation
    python voco/finetune.py ... --eval_only True --checkpoint runs/btcv/model.pt   # val.py

Data: `<data_dir>/imagesTr`, `<data_dir>/labelsTr` and a decathlon json (`dataset_0.json`, looked up
in --data_dir unless the path given exists) with "training" and "validation" lists. Validation:
sliding-window inference (overlap 0.75) on the whole 1.5 mm foreground-cropped volume, MONAI's
DiceMetric without background, mean over (case, organ) pairs present, as the original, plus per organ.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time
import warnings

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.optimizers import WarmupCosineSchedule
from tqdm import tqdm

from shared.checkpoint import load_checkpoint, load_state, save_atomic
from shared.distributed import barrier, cleanup, init_distributed, seed_everything
from shared.guards import LossWatch, inject_nan
from shared.plan import add_plan_args, run_plan
from shared.runfolder import check_checkpoint_run, claim_run_folder, run_file
from shared.runlog import RunLogger
from shared.timing import StepTimer
from voco.data import SafeDataset, btcv_transforms, count_skipped, load_datalist
from voco.export import load_voco_encoder
from voco.models import swinunetr
from voco.utils import amp_settings, check_patch, str2bool

RUN_NAME = "voco_finetune"  # this stage's files in --logdir (pre-training's are voco_pretrain.*)
BTCV_ORGANS = ["spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach",
               "aorta", "IVC", "portal/splenic veins", "pancreas", "right adrenal", "left adrenal"]


def get_parser():
    p = argparse.ArgumentParser(description="VoCo BTCV fine-tuning (SwinUNETR v2)")
    p.add_argument("--checkpoint", default=None, type=str, help="resume a fine-tuning checkpoint")
    p.add_argument("--logdir", default="logs", type=str)
    p.add_argument("--pretrained_dir", default="./pretrained_models/", type=str)
    p.add_argument("--data_dir", default="./data/BTCV/", type=str)
    p.add_argument("--cache_dir", default="./data/cache/BTCV/", type=str, help="PersistentDataset cache")
    p.add_argument("--json_list", default="dataset_0.json", type=str)
    p.add_argument("--pretrained_checkpoint", default="VoCo_10k.pt", type=str)
    p.add_argument("--pretrained_model_name", default="model_bestVal.pt", type=str)
    p.add_argument("--save_checkpoint", default=True, type=str2bool)
    p.add_argument("--max_epochs", default=3000, type=int)
    p.add_argument("--batch_size", default=1, type=int, help="volumes per step")
    p.add_argument("--sw_batch_size", default=16, type=int, help="patches per volume and sliding-window batch")
    p.add_argument("--optim_lr", default=3e-4, type=float)
    p.add_argument("--optim_name", default="adamw", choices=["adamw", "adam", "sgd"])
    p.add_argument("--reg_weight", default=1e-5, type=float, help="weight decay")
    p.add_argument("--momentum", default=0.99, type=float)
    p.add_argument("--noamp", default=True, type=str2bool,
                   help="FP32 (the original's effective default); --noamp False enables AMP on CUDA")
    p.add_argument("--val_every", default=50, type=int)
    p.add_argument("--distributed", default=False, type=str2bool, help="ignored: use torchrun")
    p.add_argument("--world_size", default=1, type=int, help="ignored: torchrun sets it")
    p.add_argument("--rank", default=0, type=int, help="ignored: torchrun sets it")
    p.add_argument("--dist-url", default="tcp://127.0.0.1:23456", type=str, help="ignored")
    p.add_argument("--dist-backend", default="nccl", type=str, help="ignored")
    p.add_argument("--norm_name", default="instance", type=str)
    p.add_argument("--workers", default=8, type=int)
    p.add_argument("--persistent_workers", default=False, type=str2bool,
        help="keep the loader workers alive between epochs (persistent_workers; off as the original)")
    p.add_argument("--feature_size", default=48, type=int)
    p.add_argument("--in_channels", default=1, type=int)
    p.add_argument("--out_channels", default=14, type=int)
    p.add_argument("--use_normal_dataset", default=True, type=str2bool,
                   help="True: PersistentDataset in --cache_dir (as the original); False: CacheDataset")
    p.add_argument("--a_min", default=-175.0, type=float)
    p.add_argument("--a_max", default=250.0, type=float)
    p.add_argument("--b_min", default=0.0, type=float)
    p.add_argument("--b_max", default=1.0, type=float)
    p.add_argument("--space_x", default=1.5, type=float)
    p.add_argument("--space_y", default=1.5, type=float)
    p.add_argument("--space_z", default=1.5, type=float)
    p.add_argument("--roi_x", default=96, type=int)
    p.add_argument("--roi_y", default=96, type=int)
    p.add_argument("--roi_z", default=96, type=int)
    p.add_argument("--dropout_rate", default=0.0, type=float, help="unused, as in the original")
    p.add_argument("--dropout_path_rate", default=0.0, type=float)
    p.add_argument("--RandFlipd_prob", default=0.2, type=float)
    p.add_argument("--RandRotate90d_prob", default=0.2, type=float)
    p.add_argument("--RandScaleIntensityd_prob", default=0.1, type=float)
    p.add_argument("--RandShiftIntensityd_prob", default=0.5, type=float)
    p.add_argument("--infer_overlap", default=0.75, type=float)
    p.add_argument("--lrschedule", default="warmup_cosine", choices=["warmup_cosine", "cosine_anneal", "none"])
    p.add_argument("--warmup_epochs", default=100, type=int)
    p.add_argument("--resume_ckpt", default=False, type=str2bool)
    p.add_argument("--smooth_dr", default=1e-6, type=float)
    p.add_argument("--smooth_nr", default=0.0, type=float)
    p.add_argument("--use_checkpoint", default=True, type=str2bool)
    p.add_argument("--use_ssl_pretrained", default=True, type=str2bool)
    p.add_argument("--spatial_dims", default=3, type=int)
    p.add_argument("--squared_dice", default=False, type=str2bool)
    # --- additions
    p.add_argument("--lr_per_iteration", default=False, type=str2bool,
                   help="step the schedule every iteration like the original (periodic LR)")
    p.add_argument("--pretrained_branch", default="teacher", choices=["teacher", "student"])
    p.add_argument("--window_size", default=7, type=int)
    p.add_argument("--use_flash_attention", default=False, type=str2bool,
                   help="MONAI's SDPA window attention at inference (same numbers, faster)")
    p.add_argument("--eval_only", default=False, type=str2bool, help="validate --checkpoint (val.py)")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--device", default=None, type=str)
    p.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--skip_bad", default=True, type=str2bool)
    p.add_argument("--wandb", default=None, type=str)
    add_plan_args(p, "training cases (volumes) per epoch (default: BTCV's 24)")
    return p


def json_path(args):
    given = Path(args.json_list)
    return given if given.is_file() else Path(args.data_dir) / args.json_list


def build_loaders(args, info):
    jp = json_path(args)
    train_items = load_datalist(jp, args.data_dir, "training", keys=("image", "label"))
    val_items = load_datalist(jp, args.data_dir, "validation", keys=("image", "label"))

    def dataset(items, transform, tag):
        if args.use_normal_dataset:
            # MONAI keys the cache by file name only: keep different spacings/windows apart
            cache = Path(args.cache_dir) / (f"{tag}_{args.space_x:g}x{args.space_y:g}x{args.space_z:g}mm"
                                            f"_hu{args.a_min:g}_{args.a_max:g}")
            cache.mkdir(parents=True, exist_ok=True)
            return PersistentDataset(items, transform, cache_dir=str(cache))
        if args.cache_dir is None:
            return Dataset(items, transform)
        return CacheDataset(items, transform, cache_rate=1.0, num_workers=args.workers or None)

    skip_log = run_file(args.logdir, RUN_NAME, "skipped.txt")
    train_ds = SafeDataset(dataset(train_items, btcv_transforms(args, True), "train"), train_items,
                           args.skip_bad, skip_log=skip_log)
    # validation never substitutes a case: an unreadable one is skipped and reported (or stops the run)
    val_ds = SafeDataset(dataset(val_items, btcv_transforms(args, False), "val"), val_items,
                         args.skip_bad, substitute=False, skip_log=skip_log)
    sampler = (torch.utils.data.distributed.DistributedSampler(train_ds, shuffle=True, seed=args.seed)
               if info.distributed else None)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=sampler is None,
                              sampler=sampler, num_workers=args.workers,
                              pin_memory=info.device.type == "cuda",
                              persistent_workers=args.persistent_workers and args.workers > 0)
    val_loader = DataLoader(val_ds, batch_size=1, shuffle=False, num_workers=args.workers)
    return train_loader, val_loader, sampler


def build_model(args, device):
    model = swinunetr(args.in_channels, args.out_channels, args.feature_size, args.use_checkpoint,
                      args.dropout_path_rate, args.spatial_dims, args.use_flash_attention,
                      window_size=args.window_size)
    if args.resume_ckpt:
        path = Path(args.pretrained_dir) / args.pretrained_model_name
        model.load_state_dict(load_checkpoint(path)["state_dict"])
        print(f"loaded fine-tuned weights {path}")
    if args.use_ssl_pretrained:
        report = load_voco_encoder(model, args.pretrained_checkpoint, args.pretrained_branch, verbose=False)
        print(f"VoCo pre-trained encoder: {len(report.matched)} tensors from {args.pretrained_checkpoint}")
    return model.to(device)


def build_scheduler(args, optimizer):
    if args.lrschedule == "warmup_cosine":
        if not args.lr_per_iteration and args.warmup_epochs >= args.max_epochs:
            # MONAI clamps the warm-up to the run: the whole run ramps up from LR 0 and never decays
            # (a 1-epoch run trains at LR 0 and learns nothing), silently
            warnings.warn(f"--warmup_epochs {args.warmup_epochs} >= --max_epochs {args.max_epochs}: the whole run is "
                          f"the linear warm-up from LR 0 (epoch 0 at LR 0, the last at "
                          f"{args.optim_lr * (args.max_epochs - 1) / args.max_epochs:.2g}, no cosine); "
                          "use a shorter warm-up for a short run", stacklevel=2)
        # per epoch by default; per iteration (--lr_per_iteration) reproduces the original, whose
        # cosine keeps oscillating between 0 and the base LR after max_epochs iterations
        return WarmupCosineSchedule(optimizer, warmup_steps=args.warmup_epochs, t_total=args.max_epochs)
    if args.lrschedule == "cosine_anneal":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.max_epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)


@torch.no_grad()
def validate(args, model, loader, device, amp, amp_dtype, logdir=None, picture=None):
    """Per-case Dice of the 13 organs (NaN where an organ is absent from the ground truth).
    Returns (mean over present (case, organ) pairs -- the original's number, per-organ means, per case)."""
    model.eval()
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    n_cls = args.out_channels
    per_case, names, skipped = [], [], []
    for batch in tqdm(loader, desc="validate", leave=False, dynamic_ncols=True):
        if "skipped" in batch:  # unreadable: reported, never replaced by another case
            skipped.append(batch["error"][0])
            continue
        names.append(str(_source_name(batch)))
        image, label = batch["image"].to(device), batch["label"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            logits = sliding_window_inference(image, (args.roi_x, args.roi_y, args.roi_z),
                                              args.sw_batch_size, model, overlap=args.infer_overlap)
        pred = logits.argmax(1, keepdim=True)
        onehot = lambda x: torch.nn.functional.one_hot(x[:, 0].long(), n_cls).permute(0, 4, 1, 2, 3)  # noqa: E731
        per_case.append(metric(onehot(pred).float(), onehot(label).float()).cpu()[0])
        if picture is not None and len(per_case) == 1:  # the first case read
            prediction_figure(image[0, 0].cpu(), label[0, 0].cpu(), pred[0, 0].cpu(), picture)
    if skipped:
        print(f"validation: skipped {len(skipped)} of {len(skipped) + len(per_case)} case(s):\n  "
              + "\n  ".join(skipped))
    if not per_case:
        raise RuntimeError(f"validation: none of the {len(skipped)} cases could be read:\n  " + "\n  ".join(skipped))
    dice = torch.stack(per_case).numpy()  # cases x organs
    mean = float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")
    with np.errstate(all="ignore"):
        organs = np.nanmean(np.where(np.isfinite(dice), dice, np.nan), axis=0)
    return mean, organs.tolist(), dice.tolist(), {"cases": names, "skipped": skipped}


def _source_name(batch):
    meta = getattr(batch["image"], "meta", {}) or {}
    name = meta.get("filename_or_obj", "")
    return name[0] if isinstance(name, (list, tuple)) else name


def write_results(logdir, title, mean, organs, names, per_case, cases, extra=None):
    """results.md (the organ table, the cases scored and skipped) and results.json next to it."""
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    skipped = cases["skipped"]
    note = (f"\n{len(cases['cases'])} case(s) scored; skipped {len(skipped)} unreadable:\n\n"
            + "".join(f"- {s}\n" for s in skipped)) if skipped else f"\n{len(cases['cases'])} case(s) scored.\n"
    (logdir / "results.md").write_text(f"# {title}\n\n" + results_table(mean, organs, names) + note)
    (logdir / "results.json").write_text(json.dumps({**(extra or {}), "mean_dice": mean, "organ_dice": organs,
                                                      "per_case": per_case, "cases": cases["cases"],
                                                      "skipped": skipped, "organs": names}, indent=2))


def prediction_figure(image, label, pred, png_path, n_slices=3):
    """PNG: a few axial slices (where organs are) with the true and predicted labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    zs = torch.nonzero(label.flatten(0, 1).sum(0) > 0).flatten()
    zs = zs[torch.linspace(0, len(zs) - 1, n_slices).long()] if len(zs) else [label.shape[-1] // 2] * n_slices
    fig, axes = plt.subplots(n_slices, 3, figsize=(7.5, 2.6 * n_slices), squeeze=False)
    for r, z in enumerate(zs):
        z = int(z)
        for c, (arr, title) in enumerate([(image, "image"), (label, "truth"), (pred, "prediction")]):
            ax = axes[r, c]
            ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
            if c:
                seg = np.ma.masked_equal(arr[:, :, z].numpy().T, 0)
                ax.imshow(seg, cmap="tab20", vmin=0, vmax=19, alpha=0.6, origin="lower",
                          interpolation="nearest")
            ax.set_title(f"{title} z={z}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def results_table(mean, organs, names):
    rows = ["| organ | Dice |", "|---|---|"] + [f"| {n} | {d:.4f} |" for n, d in zip(names, organs)]
    return "\n".join(rows + [f"| **mean** | **{mean:.4f}** |"]) + "\n"


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    check_patch(parser, (args.roi_x, args.roi_y, args.roi_z))
    if args.plan:
        from voco.plan import finetune_plan
        return run_plan(finetune_plan(args), args)
    info = init_distributed(device=args.device)
    seed_everything(args.seed, info.rank)
    logdir = Path(args.logdir)
    amp, amp_dtype = amp_settings(info.device, args.noamp, args.amp_dtype)
    model = build_model(args, info.device)
    names = (BTCV_ORGANS if args.out_channels == 14 else [f"class {c}" for c in range(1, args.out_channels)])

    if args.squared_dice:
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=args.smooth_nr,
                             smooth_dr=args.smooth_dr)
    else:
        loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    params = model.parameters()
    if args.optim_name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=args.optim_lr, weight_decay=args.reg_weight)
    elif args.optim_name == "adam":
        optimizer = torch.optim.Adam(params, lr=args.optim_lr, weight_decay=args.reg_weight)
    else:
        optimizer = torch.optim.SGD(params, lr=args.optim_lr, momentum=args.momentum, nesterov=True,
                                    weight_decay=args.reg_weight)
    scheduler = build_scheduler(args, optimizer)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp and amp_dtype == torch.float16)
    start_epoch, best_acc = 0, 0.0
    identity = finetune_identity(args)
    if args.checkpoint:  # exact resume: weights, optimizer, schedule, best (the original lost the last two)
        ckpt = load_checkpoint(args.checkpoint, map_location=info.device)
        if "state_dict" not in ckpt:
            raise ValueError(f"{args.checkpoint}: not a fine-tuning checkpoint (no 'state_dict'; keys "
                             f"{sorted(ckpt)[:8]}); --checkpoint takes model.pt / model_final.pt of a fine-tuning run")
        if not args.eval_only:
            check_checkpoint_run(ckpt, identity, args.checkpoint)
        load_state(model, {k.replace("backbone.", ""): v for k, v in ckpt["state_dict"].items()}, args.checkpoint)
        for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
            if key in ckpt:
                load_state(obj, ckpt[key], args.checkpoint, f"{key} state")
        start_epoch, best_acc = int(ckpt.get("epoch", 0)), float(ckpt.get("best_acc", 0.0))

    train_loader, val_loader, sampler = build_loaders(args, info)
    if args.eval_only:
        mean, organs, per_case, cases = validate(args, model, val_loader, info.device, amp, amp_dtype,
                                                 picture=run_file(logdir, RUN_NAME, "predictions.png"))
        print(results_table(mean, organs, names))
        if info.is_main:  # as the README says: results.md / results.json in --logdir
            write_results(logdir, f"BTCV validation of {args.checkpoint or 'the initial weights'}", mean, organs,
                          names, per_case, cases, {"checkpoint": args.checkpoint})
        return {"mean_dice": mean, "organ_dice": organs, "skipped": cases["skipped"]}
    ddp = (torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
        if info.distributed else model)
    claim_run_folder(logdir, RUN_NAME, identity, resume=bool(args.checkpoint), enabled=info.is_main,
                     flag="--logdir")
    logger = RunLogger(logdir, wandb=args.wandb, config=vars(args), enabled=info.is_main, name=RUN_NAME)
    logger.truncate(start_epoch)  # resuming at an epoch: rows logged after it come again
    result = {"mean_dice": None, "organ_dice": None, "best_acc": best_acc}
    step = start_epoch * len(train_loader)  # optimiser steps so far (for the non-finite-loss message)
    watch = LossWatch(info.device, scaler, parameters=model.parameters())  # fp16: NaN steps are the scaler's
    for epoch in range(start_epoch, args.max_epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        ddp.train()
        t0, loss_sum, timer = time.time(), torch.zeros((), device=info.device), StepTimer(info.device)
        for batch in timer.wrap(tqdm(train_loader, desc=f"epoch {epoch}", disable=not info.is_main,
                                     leave=False, dynamic_ncols=True)):
            image, label = batch["image"].to(info.device), batch["label"].to(info.device)
            for p in model.parameters():
                p.grad = None
            with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp):
                loss = loss_fn(ddp(image), label)
            step += 1
            loss = inject_nan(loss, step)
            watch.observe(loss, step, f"epoch {epoch + 1}")  # CPU: stops before NaN reaches the weights
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if args.lr_per_iteration:
                scheduler.step()
            loss_sum += loss.detach()  # summed on the device: no host sync per step
        watch.check()  # once per epoch (the logging interval), before this epoch's checkpoints
        timing = timer.lap()
        if not args.lr_per_iteration:
            scheduler.step()
        logger.log(epoch + 1, train_loss=float(loss_sum) / max(1, len(train_loader)),
                   lr=optimizer.param_groups[0]["lr"], epoch_time_s=time.time() - t0, **timing)
        if (epoch + 1) % args.val_every == 0 or epoch + 1 == args.max_epochs:
            if info.is_main:
                mean, organs, per_case, cases = validate(args, model, val_loader, info.device, amp, amp_dtype,
                                                         picture=run_file(logdir, RUN_NAME, "predictions.png"))
                logger.log(epoch + 1, val_acc=mean, **{f"dice_{c}": d for c, d in enumerate(organs, 1)})
                state = {"epoch": epoch + 1, "best_acc": max(best_acc, mean), "run": identity,
                         "state_dict": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict()}
                if args.save_checkpoint:
                    save_atomic(state, logdir / "model_final.pt")
                if mean > best_acc or result["mean_dice"] is None:
                    best_acc = max(best_acc, mean)
                    if args.save_checkpoint:
                        save_atomic(state, logdir / "model.pt")
                result = {"mean_dice": mean, "organ_dice": organs, "best_acc": best_acc, "epoch": epoch + 1,
                          "skipped": cases["skipped"]}
                write_results(logdir, f"BTCV validation, epoch {epoch + 1}", mean, organs, names, per_case,
                              cases, {"best_acc": best_acc, "epoch": epoch + 1})
                print(f"epoch {epoch + 1}: mean Dice {mean:.4f} (best {best_acc:.4f})")
            barrier()
    logger.close()
    if info.is_main:
        skip_log = run_file(logdir, RUN_NAME, "skipped.txt")
        n_skipped, skipped = count_skipped(skip_log)
        if n_skipped:
            print(f"skipped {n_skipped} unreadable file(s) in this run (listed in {skip_log})")
    cleanup()
    return result


def finetune_identity(args):
    """The settings a resumed fine-tuning must share with the first part (--checkpoint into --logdir)."""
    keys = ("json_list", "out_channels", "feature_size", "window_size", "roi_x", "roi_y", "roi_z", "space_x",
            "space_y", "space_z", "optim_name", "optim_lr", "batch_size", "sw_batch_size", "seed",
            "use_ssl_pretrained", "pretrained_checkpoint", "pretrained_branch")
    return {"method": "voco_finetune", **{k: getattr(args, k) for k in keys}}


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
