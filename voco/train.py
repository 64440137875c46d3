"""VoCo pre-training CLI (the original voco_train.py's flags and defaults; boolean flags typed).

    python voco/train.py --logdir runs/logs_10k --json_list jsons/btcv.json --data_dir data/BTCV \
        --cache_dir cache/voco
    torchrun --nproc_per_node=4 voco/train.py ...          # or: make pretrain-voco GPUS=4 DATA=...

Several --json_list / --data_dir pairs make one training set (the original's 10k = 7 lists).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse

import torch

from shared.checkpoint import load_checkpoint, load_state, set_rng_state
from shared.distributed import cleanup, init_distributed, seed_everything
from shared.plan import add_plan_args, run_plan
from shared.runfolder import check_checkpoint_run, claim_run_folder, run_file
from shared.runlog import RunLogger
from shared.startup import check_shared_memory
from voco import engine
from voco.data import build_pretrain_dataset, count_skipped, crops_figure, load_datalist
from voco.device_crops import CROPS_ON, VolumesWithParameters, resolve_crops_on
from voco.models import VoCo
from voco.probe import add_probe_args, online_probe
from voco.utils import amp_settings, check_roi, str2bool
from voco.v2 import recipe as v2  # --recipe v2 / omni: the few places below that branch on args.recipe

RUN_NAME = "voco_pretrain"  # this stage's files in --logdir (fine-tuning's are voco_finetune.*)


def get_parser():
    p = argparse.ArgumentParser(description="VoCo pre-training (SwinUNETR-v2 student/teacher)")
    # --- the original's flags, same names and defaults
    p.add_argument("--logdir", default="logs", type=str, help="run folder (checkpoints, metrics, PNGs)")
    p.add_argument("--epochs", default=100, type=int, help="only used by the poly schedule")
    p.add_argument("--num_steps", default=250000, type=int, help="optimiser steps")
    p.add_argument("--eval_num", default=100, type=int, help="save model_current_epoch.pt every N steps")
    p.add_argument("--warmup_steps", default=5000, type=int)
    p.add_argument("--in_channels", default=1, type=int)
    p.add_argument("--feature_size", default=48, type=int)
    p.add_argument("--dropout_path_rate", default=0.0, type=float)
    p.add_argument("--use_checkpoint", default=True, type=str2bool, help="activation checkpointing")
    p.add_argument("--spatial_dims", default=3, type=int)
    p.add_argument("--a_min", default=-175.0, type=float)
    p.add_argument("--a_max", default=250.0, type=float)
    p.add_argument("--b_min", default=0.0, type=float)
    p.add_argument("--b_max", default=1.0, type=float)
    p.add_argument("--space_x", default=1.5, type=float, help="unused, as in the original")
    p.add_argument("--space_y", default=1.5, type=float, help="unused, as in the original")
    p.add_argument("--space_z", default=1.5, type=float, help="unused, as in the original")
    p.add_argument("--roi_x", default=64, type=int, help="side every crop is resized to")
    p.add_argument("--roi_y", default=64, type=int, help="unused, as in the original")
    p.add_argument("--roi_z", default=64, type=int, help="unused, as in the original")
    p.add_argument("--batch_size", default=2, type=int, help="volumes per step (per process)")
    p.add_argument("--sw_batch_size", default=2, type=int, help="random crops per volume")
    p.add_argument("--lr", default=1e-4, type=float)
    p.add_argument("--decay", default=0.1, type=float, help="weight decay of adam/sgd (adamw: 0.01)")
    p.add_argument("--momentum", default=0.9, type=float, help="sgd only")
    p.add_argument("--lrdecay", default=True, type=str2bool, help="use the LR schedule")
    p.add_argument("--max_grad_norm", default=1.0, type=float)
    p.add_argument("--loss_type", default="SSL", type=str, help="unused, as in the original")
    p.add_argument("--opt", default="adamw", type=str, choices=["adamw", "adam", "sgd"])
    p.add_argument("--lr_schedule", default="warmup_cosine", type=str, choices=["warmup_cosine", "poly"])
    p.add_argument("--resume", default=None, type=str, help="checkpoint to continue exactly")
    p.add_argument("--local_rank", "--local-rank", default=0, type=int,
                   help="ignored: the device comes from torchrun's LOCAL_RANK")
    p.add_argument("--grad_clip", default=False, type=str2bool, help="clip to --max_grad_norm (also with AMP)")
    p.add_argument("--noamp", default=False, type=str2bool,
                   help="disable AMP (original: ignored, AMP always on); AMP is CUDA-only")
    p.add_argument("--dist-url", default="env://", type=str, help="unused: torchrun's env:// is read")
    p.add_argument("--smartcache_dataset", default=False, type=str2bool,
                   help="accepted for compatibility; treated as --cache_dataset")
    p.add_argument("--cache_dataset", default=False, type=str2bool, help="CacheDataset in RAM")
    # --- data (hard-coded in the original)
    p.add_argument("--json_list", nargs="+", default=["jsons/btcv.json"], help="decathlon json list(s)")
    p.add_argument("--data_dir", nargs="+", default=None,
                   help="root(s) the json paths are relative to (default: each json's folder)")
    p.add_argument("--cache_dir", default=None, type=str,
                   help="PersistentDataset cache (original: /data/linshan/cache/10k, ~56.6 MB/volume)")
    p.add_argument("--cache_rate", default=0.5, type=float, help="fraction cached by --cache_dataset")
    p.add_argument("--workers", default=16, type=int, help="data-loader workers per process")
    p.add_argument("--base_roi", default=96, type=int, help="side of base/random crops in the volume")
    p.add_argument("--num_crops", default=4, type=int, help="base crops per in-plane axis")
    p.add_argument("--crops_on", default="auto", choices=CROPS_ON,
                   help="where crops, resize, augmentation and labels are made: the training device "
                        "(batched) or the loader workers (per crop, MONAI); auto: device on CUDA")
    # --- model / method options (original values by default)
    p.add_argument("--hidden_dim", default=2048, type=int, help="projection head hidden width")
    p.add_argument("--out_dim", default=2048, type=int, help="projection head output width")
    p.add_argument("--ema_momentum", default=0.9, type=float)
    p.add_argument("--teacher_init", default="random", choices=["random", "student"])
    p.add_argument("--single_network", default=False, type=str2bool,
                   help="the CVPR paper's version: one network, no EMA teacher")
    p.add_argument("--double_input", default=False, type=str2bool,
                   help="the 2024-03..05 variant: each crop concatenated with itself along X")
    p.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--use_flash_attention", default=False, type=str2bool,
                   help="MONAI's SDPA window attention; used where autograd is off (the teacher forward)")
    p.add_argument("--window_size", default=7, type=int, help="Swin window (7; small for CPU tests)")
    p.add_argument("--sync_bn", default=True, type=str2bool,
                   help="head BN statistics over all GPUs under DDP (the original converts to SyncBN)")
    # --- run bookkeeping
    p.add_argument("--log_every", default=1, type=int,
                   help="log (and read the loss on the host) every N steps; 1 = the original's every step")
    p.add_argument("--save_every", default=1000, type=int, help="model_step<N>.pt every N steps (0: off)")
    p.add_argument("--finish_pass", default=False, type=str2bool,
                   help="finish the pass in which num_steps is reached (the original's overrun)")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--device", default=None, type=str, help="force cpu / cuda")
    p.add_argument("--wandb", default=None, type=str, help="wandb project (off by default)")
    p.add_argument("--skip_bad", default=True, type=str2bool, help="skip unreadable volumes with a warning")
    add_probe_args(p)
    v2.add_recipe_args(p)
    add_plan_args(p, "volumes in one pass over the data (default: the 10k set's 9,863)")
    return p


def build_model(args):
    return VoCo(args.in_channels, args.feature_size, args.hidden_dim, args.out_dim, args.use_checkpoint,
                args.dropout_path_rate, args.spatial_dims, args.ema_momentum, args.teacher_init, args.single_network,
                args.double_input, args.use_flash_attention, args.window_size)


def build_optimizer(args, params):
    if args.opt == "adamw":  # the original passes no weight decay: torch's default 0.01
        return torch.optim.AdamW(params, lr=args.lr, amsgrad=True)
    if args.opt == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.decay)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.decay)


def build_scheduler(args, optimizer):
    from monai.optimizers import WarmupCosineSchedule
    if not args.lrdecay:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    if args.lr_schedule == "warmup_cosine":
        return WarmupCosineSchedule(optimizer, warmup_steps=args.warmup_steps, t_total=args.num_steps)
    # poly over --epochs, clamped at 0 (the original goes complex after --epochs steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: max(0.0, 1 - s / args.epochs) ** 0.9)


def build_datalist(json_list, data_dirs=None, keys=("image",), flag="--data_dir"):
    """The entries of every json list (each relative to its data dir: `flag`, one per json, or its folder)."""
    data_dirs = data_dirs or [None] * len(json_list)
    if len(data_dirs) != len(json_list):
        raise SystemExit(f"{flag} needs one folder per json list (or none)")
    items = []
    for json_path, data_dir in zip(json_list, data_dirs):
        items += load_datalist(json_path, data_dir, keys=keys)
    return items


def batch_bytes(args, dataset, crops_on):
    """Bytes of one loader batch: whole volumes (crops made on the device) or the float32 crops and views."""
    if crops_on == "device":
        volume = dataset.load_readable(0)[1]
        return args.batch_size * int(getattr(volume, "nbytes", 0) or volume.numel() * volume.element_size())
    side = args.roi_x * (2 if args.double_input else 1)
    return args.batch_size * (args.sw_batch_size + args.num_crops ** 2) * args.in_channels * side ** 3 * 4


def main(argv=None):
    parser = get_parser()
    parser.set_defaults(**v2.recipe_defaults(sys.argv[1:] if argv is None else argv))  # v1: none
    args = parser.parse_args(argv)
    check_roi(parser, "--roi_x", args.roi_x, args.double_input)
    args.cache_dataset = args.cache_dataset or args.smartcache_dataset
    if args.plan:
        from voco.plan import pretrain_plan
        return run_plan(pretrain_plan(args), args)
    info = init_distributed(device=args.device)
    seed_everything(args.seed)  # same on every rank: student and teacher start identical everywhere
    torch.backends.cudnn.benchmark = True
    if args.log_every < 1:
        raise SystemExit(f"--log_every must be at least 1, got {args.log_every}")

    if args.recipe != "v1":
        model, student = v2.build_model(args, info)
    else:
        model = build_model(args).to(info.device)
        student = model.student
        if info.distributed:  # only the student is wrapped: the teacher has no gradients to reduce
            if args.sync_bn and info.device.type == "cuda":
                model.student = student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.student)
                if not args.single_network:
                    model.teacher = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.teacher)
            student = torch.nn.parallel.DistributedDataParallel(
                model.student, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    optimizer = build_optimizer(args, [p for p in model.parameters() if p.requires_grad])
    scheduler = build_scheduler(args, optimizer)
    amp, amp_dtype = amp_settings(info.device, args.noamp, args.amp_dtype)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp and amp_dtype == torch.float16)

    state = {"global_step": 0, "epoch": 0, "batch_in_pass": 0}
    identity = {**engine.run_identity(args), **v2.identity(args)}
    resumed_original = None
    if args.resume:
        ckpt = load_checkpoint(args.resume, map_location=info.device)
        if args.recipe != "v1" and "optimizer" not in ckpt:  # Large-Scale-Medical's own checkpoint
            resumed_original = state = v2.resume_original(ckpt, args.resume, model, scheduler)
    if args.resume and resumed_original is None:
        missing = [k for k in ("state_dict", "optimizer", "scheduler", "scaler", "rng", *state) if k not in ckpt]
        if missing:
            raise ValueError(f"{args.resume}: not a VoCo pre-training checkpoint (missing {missing}); --resume "
                             "takes model_current_epoch.pt / model_step<N>.pt of an earlier run")
        check_checkpoint_run(ckpt, identity, args.resume)
        load_state(model, ckpt["state_dict"], args.resume)
        load_state(optimizer, ckpt["optimizer"], args.resume, "optimizer state")
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state = {k: int(ckpt[k]) for k in state}
        set_rng_state(ckpt["rng"])
    else:
        seed_everything(args.seed + 1, info.rank)  # per-rank streams from here on

    skip_log = run_file(args.logdir, RUN_NAME, "skipped.txt")
    labelled_batches = v2.labelled(args, info, build_datalist, skip_log)  # omni's labelled patches; else None
    # pre-training and fine-tuning both default to --logdir logs: this stage's files are voco_pretrain.*;
    # refuse a --logdir holding a pre-training of another configuration, never mix its logs
    claim_run_folder(args.logdir, RUN_NAME, identity, resume=bool(args.resume) and resumed_original is None,
                     enabled=info.is_main, flag="--logdir")
    build_dataset = build_pretrain_dataset if args.recipe == "v1" else v2.dataset
    dataset = build_dataset(args, build_datalist(args.json_list, args.data_dir), skip_bad=args.skip_bad,
                            skip_log=skip_log)
    crops_on = resolve_crops_on(args.crops_on, info.device)
    make_crops = None  # --crops_on workers: the loader's batches hold the crops already
    if crops_on == "device":  # workers only read volumes and draw parameters; each step cuts the crops
        dataset = VolumesWithParameters(dataset)
        make_crops = dataset.device_crops
    logger = RunLogger(args.logdir, wandb=args.wandb, config=vars(args), enabled=info.is_main, name=RUN_NAME)
    if args.resume:
        logger.truncate(state["global_step"])  # rows logged after the checkpoint come again
    if info.is_main:
        print(f"VoCo: {len(dataset)} volumes, {sum(p.numel() for p in model.parameters()):,} parameters,"
              f" device {info.device}, world {info.world_size}, amp {amp} ({args.amp_dtype}), crops on {crops_on}")
        if state["global_step"] == 0:
            crops_figure(dataset.load_readable(0)[1], dataset.crops,
                         run_file(args.logdir, RUN_NAME, "crops.png"), args.seed)
    if args.workers > 0:
        check_shared_memory(args.workers, batch_bytes(args, dataset, crops_on), "--workers")
    probe = online_probe(args, model if args.recipe == "v1" else v2.probe_model(model), logger, info.device,
                         info.is_main)
    step_fn = engine.train_step
    if args.recipe != "v1":  # omni's step keeps its frozen teacher in <logdir>/voco_pretrain.omni_teacher.pt
        step_fn = v2.step_fn(args, info, run_file(args.logdir, RUN_NAME, v2.TEACHER_FILE))
    state = engine.train(args, model, student, optimizer, scheduler, scaler, dataset, info, logger,
                         state, amp, amp_dtype, probe=probe, step_fn=step_fn, make_crops=make_crops,
                         labelled_batches=labelled_batches)
    logger.close()
    if info.is_main:
        n_skipped, names = count_skipped(skip_log)
        if n_skipped:
            print(f"skipped {n_skipped} unreadable volume(s) (listed in {skip_log}): {', '.join(names[:5])}"
                  + (" ..." if n_skipped > 5 else ""))
        from shared.probe import PROBE_COLUMNS
        from shared.runlog import plot_metrics
        plot_metrics(logger.csv_path, run_file(args.logdir, RUN_NAME, "loss.png"),
                     columns=[*(["loss", "pos", "neg", "reg"] if args.recipe == "v1" else v2.columns(args)),
                              *PROBE_COLUMNS])
    cleanup()
    return state


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
