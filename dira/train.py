"""DiRA pre-training: the original `main_DiRA_moco.py` command line and set-up.

    python dira/train.py <images dir> --mode dir --mlp --moco-t 0.2 --cos
    python dira/train.py <images dir> --mode dira --mlp --moco-t 0.2 --cos --batch-size 16 --epochs 400 \
        --generator_pre_trained_weights checkpoint/DiRA_moco/dir/checkpoint.pth

Launch as the original (`--dist-url tcp://localhost:10001 --multiprocessing-distributed --world-size 1
--rank 0`), under torchrun, on one GPU or on the CPU without any launch flag.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import builtins
import os
import time
import warnings

import torch
import torch.backends.cudnn as cudnn
import torch.distributed as dist
import torch.multiprocessing as mp

from dira import cache_data, engine
from dira.data import ImageListDataset, TwoViewTransform
from dira.models import DiRAUNet, Discriminator, build_generator, unet_of
from dira.probe import add_probe_args, online_probe
from shared.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from shared.distributed import init_distributed, seed_everything
from shared.plan import add_plan_args, run_plan
from shared.runfolder import set_metrics_aside, setting_differences
from shared.runlog import RunLogger, drop_rows_after, save_image_grid
from shared.startup import check_shared_memory
from shared.weights import strip_prefix

METHOD_DEFAULTS = {  # (--lr, --wd) where they are not given: each method's own paper
    "moco": (0.03, 1e-4),          # DiRA / MoCo v2
    "simsiam": (0.05, 1e-4),       # SimSiam: base lr, scaled by batch/256
    "barlowtwins": (0.2, 1.5e-6),  # Barlow Twins: LARS lr of the weights, scaled by batch/256
}


def get_args_parser():
    p = argparse.ArgumentParser(description="DiRA pre-training on chest X-rays", allow_abbrev=False)
    p.add_argument("data", metavar="DIR", nargs="?", help="folder holding the images named in the lists")
    p.add_argument("-a", "--arch", metavar="ARCH", default="resnet50",
                   help="smp encoder of the U-Net (dir/dira) or torchvision model (di) (default: resnet50)")
    p.add_argument("-j", "--workers", default=16, type=int, metavar="N", help="data loading workers per node")
    p.add_argument("--epochs", default=1200, type=int, metavar="N")
    p.add_argument("--start-epoch", default=0, type=int, metavar="N", help="epoch to start counting from")
    p.add_argument("-batch-size", "--batch-size", default=256, type=int, metavar="N",
                   help="total batch of all the GPUs of one node")
    p.add_argument("--lr", "--learning-rate", default=None, type=float, metavar="LR", dest="lr",
                   help="initial learning rate (moco 0.03; simsiam 0.05 and barlowtwins 0.2, x batch/256)")
    p.add_argument("--disc-learning-rate", default=0.0002, type=float, help="Adam lr of the discriminator")
    p.add_argument("--schedule", default=[120, 160], nargs="*", type=int, help="lr x0.1 milestones (no --cos)")
    p.add_argument("--momentum", default=0.9, type=float, metavar="M")
    p.add_argument("--wd", "--weight-decay", default=None, type=float, metavar="W", dest="weight_decay",
                   help="weight decay (moco/simsiam 1e-4, barlowtwins 1.5e-6)")
    p.add_argument("-p", "--print-freq", default=10, type=int, metavar="N")
    p.add_argument("--resume", default="", type=str, metavar="PATH",
                   help="checkpoint.pth to continue from (the original parsed but ignored it)")
    p.add_argument("--world-size", default=-1, type=int, help="number of nodes")
    p.add_argument("--rank", default=-1, type=int, help="node rank")
    p.add_argument("--dist-url", default="tcp://224.66.41.62:23456", type=str)
    p.add_argument("--dist-backend", default="nccl", type=str, help="nccl; gloo is used on the CPU")
    p.add_argument("--seed", default=None, type=int)
    p.add_argument("--gpu", default=None, type=int, help="GPU id to use")
    p.add_argument("--multiprocessing-distributed", action="store_true",
                   help="one process per GPU of this node (on a CPU-only machine: one CPU process)")
    p.add_argument("--moco-dim", default=128, type=int)
    p.add_argument("--moco-k", default=65536, type=int, help="queue size")
    p.add_argument("--moco-m", default=0.999, type=float, help="key encoder momentum")
    p.add_argument("--moco-t", default=0.2, type=float, help="softmax temperature")
    p.add_argument("--mlp", action="store_true", help="MoCo v2 MLP head")
    p.add_argument("--cos", action="store_true", help="cosine lr schedule")
    p.add_argument("--checkpoint-dir", default="./checkpoint/", type=str)
    p.add_argument("--train_list", default="dataset/Xray14_train_official.txt", type=str)
    p.add_argument("--val_list", default="dataset/Xray14_val_official.txt", type=str)
    p.add_argument("--mode", default="dira", type=str.lower, choices=["di", "dir", "dira"])
    p.add_argument("--encoder_weights", default=None, type=str, help="smp encoder weights: a name or a file")
    p.add_argument("--activate", default="sigmoid", type=str, help="activation of the segmentation head")
    p.add_argument("--contrastive_weight", default=1.0, type=float)
    p.add_argument("--mse_weight", default=10.0, type=float)
    p.add_argument("--adv_weight", default=0.001, type=float)
    p.add_argument("--exp_name", default=None, type=str, help="default DiRA_<method> (DiRA_moco)")
    p.add_argument("--out_channels", default=1, type=int, help="discriminator input channels")
    p.add_argument("--generator_pre_trained_weights", default=None, type=str,
                   help="stage-1 checkpoint.pth loaded (strictly) into the generator")
    g = p.add_argument_group("beyond the original")
    g.add_argument("--method", default="moco", choices=["moco", "barlowtwins", "simsiam"],
                   help="discriminative branch")
    g.add_argument("--img_size", default=224, type=int, help="crop size (multiple of 32; 224 in the original)")
    g.add_argument("--flip_target", action="store_true",
                   help="flip the restoration target with view 1 (the original does not)")
    g.add_argument("--frozen_validation", action="store_true",
                   help="validation leaves key encoder and queue unchanged (the original updates both)")
    g.add_argument("--strict_swap_overlap", action="store_true",
                   help="redraw overlapping swap blocks (the original's test is always true)")
    g.add_argument("--skip_key_decoder", action="store_true",
                   help="do not run the key U-Net's decoder, whose output the original discards")
    g.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="mixed precision")
    g.add_argument("--channels_last", action="store_true")
    g.add_argument("--compile", action="store_true", help="torch.compile the U-Nets")
    g.add_argument("--max_steps_per_epoch", default=0, type=int, help="cap on steps per epoch (0: all)")
    g.add_argument("--preview_images", default=4, type=int, help="images in the per-epoch PNG grid")
    g.add_argument("--wandb", default=None, type=str, help="wandb project (off by default)")
    g.add_argument("--data_path", default="files", choices=["files", "cache"],
                   help="files: decode each image per step (the original); cache: read the decode-once cache")
    g.add_argument("--augment_on", default="auto", choices=["auto", "device", "workers"],
                   help="with --data_path cache: batched augmentation on the device or in the loader workers "
                        "(auto: device on CUDA, workers on the CPU)")
    g.add_argument("--persistent_workers", action="store_true",
        help="keep the loader workers alive between epochs (persistent_workers; off as the original)")
    g.add_argument("--cache_dir", default="cache", type=str, help="root of the image caches (--data_path cache)")
    g.add_argument("--cache_size", default=512, type=int, help="shorter side of the cached images in px")
    g.add_argument("--bt_projector", default="8192-8192-8192", type=str)
    g.add_argument("--bt_lambda", default=0.0051, type=float)
    g.add_argument("--bt_lr_biases", default=0.0048, type=float)
    g.add_argument("--bt_warmup_epochs", default=10, type=int)
    g.add_argument("--simsiam_dim", default=2048, type=int)
    g.add_argument("--simsiam_pred_dim", default=512, type=int)
    g.add_argument("--no_fix_pred_lr", dest="fix_pred_lr", action="store_false",
                   help="schedule the SimSiam predictor's lr too (fixed by default, as SimSiam's best)")
    add_probe_args(g)
    add_plan_args(p, "training images per epoch (default: the ChestX-ray14 official train list's 75,312)")
    return p


def parse_args(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.data is None and not args.plan:
        parser.error("the following arguments are required: DIR")
    lr, wd = METHOD_DEFAULTS[args.method]
    args.lr = lr if args.lr is None else args.lr
    args.weight_decay = wd if args.weight_decay is None else args.weight_decay
    args.exp_name = args.exp_name or f"DiRA_{args.method}"
    if args.img_size % 32:
        raise SystemExit(f"--img_size must be a multiple of 32, got {args.img_size}")
    return args


def build_optimizer(model, args, batch_size):
    """SGD for moco (the original); SimSiam's SGD with a fixed-lr predictor; Barlow Twins' LARS."""
    params = [p for p in model.parameters() if p.requires_grad]
    if args.method == "moco" or args.mode == "di":
        groups = [{"params": params, "base_lr": args.lr}]
        return torch.optim.SGD(groups, args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.method == "simsiam":
        lr = args.lr * batch_size / 256
        pred = [p for p in model.predictor.parameters()]
        pred_ids = {id(p) for p in pred}
        groups = [{"params": [p for p in params if id(p) not in pred_ids], "base_lr": lr},
                  {"params": pred, "base_lr": lr, "fix_lr": args.fix_pred_lr}]
        return torch.optim.SGD(groups, lr, momentum=args.momentum, weight_decay=args.weight_decay)
    from timm.optim import Lars  # no weight decay nor LARS adaptation for biases and BN, as Barlow Twins
    scale = batch_size / 256
    weights = [p for p in params if p.ndim > 1]
    others = [p for p in params if p.ndim <= 1]
    groups = [{"params": weights, "base_lr": args.lr * scale, "weight_decay": args.weight_decay},
              {"params": others, "base_lr": args.bt_lr_biases * scale, "weight_decay": 0.0}]
    return Lars(groups, lr=args.lr * scale, momentum=args.momentum)


def load_generator_weights(model, path):
    """Stage 2: the stage-1 checkpoint.pth's full state dict, strictly (queue and key encoder too)."""
    print(f"Loading pre-trained weights for generator from {path}")
    ckpt = load_checkpoint(path)
    state = strip_prefix(ckpt.get("state_dict", ckpt))
    advice = ("stage 2 needs the stage-1 checkpoint.pth made with the same --arch, --mlp, --moco-k, --moco-dim "
              "and --method (best_checkpoint.pth holds only the U-Net)")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensors of other shapes
        detail = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise RuntimeError(f"{path} does not fit this generator ({detail}); {advice}") from None
    if missing or unexpected:
        raise RuntimeError(
            f"{path} does not fit this generator ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {(missing + unexpected)[:4]}); {advice}")
    print(f"=> loaded pre-trained model '{path}'\nmissing keys: {missing}")


# flags that may change when a run is resumed (length, launch, paths, logging); every other flag must match
RESUME_MAY_CHANGE = {"epochs", "resume", "start_epoch", "workers", "print_freq", "world_size", "rank", "dist_url",
                     "dist_backend", "gpu", "multiprocessing_distributed", "checkpoint_dir", "exp_name", "data",
                     "train_list", "val_list", "generator_pre_trained_weights", "preview_images", "wandb",
                     "compile", "channels_last", "persistent_workers"}


def as_flag(dest):
    """An argparse destination as most of train.py's flags are spelt (--moco-k for moco_k)."""
    return "--" + dest.replace("_", "-")


def check_resume_matches(args, ckpt, run_dir):
    """Refuse to continue a run of another configuration: the checkpoint's flags, and those of the run
    folder (config.json) that the resumed run would log into, must be the ones given now."""
    import json

    now = {k: plain(v) for k, v in vars(args).items()}
    sources = [(args.resume, ckpt.get("args") if isinstance(ckpt.get("args"), dict) else None)]
    config_file = Path(run_dir) / "config.json"
    if config_file.is_file():
        sources.append((config_file, json.loads(config_file.read_text())))
    for where, saved in sources:
        diffs = setting_differences(saved, now, RESUME_MAY_CHANGE, name=as_flag) if saved is not None else []
        if diffs:
            shown = "; ".join(diffs[:6])
            raise SystemExit(f"--resume refused: {where} belongs to another configuration ({shown}). Resume with "
                             "the same flags, or start a new run with another --checkpoint-dir or --exp_name.")


def plain(value):
    """args values as plain Python for the checkpoint (weights_only loading)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def setup_process(gpu, ngpus_per_node, args):
    """Initialise this process's place in the run: returns (rank, world_size, device, procs per node)."""
    if "LOCAL_RANK" in os.environ and not args.multiprocessing_distributed:  # torchrun
        backend = args.dist_backend if torch.cuda.is_available() else "gloo"
        info = init_distributed(backend=backend)
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        return info.rank, info.world_size, info.device, per_node
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{gpu if gpu is not None else 0}" if cuda else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.multiprocessing_distributed or args.world_size > 1:
        rank = max(args.rank, 0) * ngpus_per_node + (gpu or 0) if args.multiprocessing_distributed else args.rank
        backend = args.dist_backend if cuda else "gloo"
        dist.init_process_group(backend=backend, init_method=args.dist_url, world_size=args.world_size, rank=rank)
        return rank, args.world_size, device, ngpus_per_node if args.multiprocessing_distributed else 1
    return 0, 1, device, 1


def main(argv=None):
    args = parse_args(argv)
    if args.plan:
        from dira.plan import pretrain_plan
        return run_plan(pretrain_plan(args), args)
    if args.dist_url == "env://" and args.world_size == -1:  # as the original: nodes (or processes) from env
        args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.dist_url == "env://" and args.rank == -1:
        args.rank = int(os.environ.get("RANK", "0"))
    ngpus = torch.cuda.device_count()
    if args.multiprocessing_distributed and ngpus > 0:
        args.world_size = ngpus * max(args.world_size, 1)
        mp.spawn(main_worker, nprocs=ngpus, args=(ngpus, args))
    else:
        if args.multiprocessing_distributed:
            warnings.warn("--multiprocessing-distributed without a GPU: one CPU process (gloo) per node", stacklevel=2)
            args.world_size = max(args.world_size, 1)
        return main_worker(args.gpu, 1, args)


def main_worker(gpu, ngpus_per_node, args):
    rank, world_size, device, per_node = setup_process(gpu, ngpus_per_node, args)
    try:
        return train_process(rank, world_size, device, per_node, args)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def train_process(rank, world_size, device, per_node, args):
    """Build everything for this process and run the epochs; returns the run folder."""
    main_process = rank == 0
    if not main_process:  # as the original: only the first process prints
        builtins.print = lambda *a, **k: None
    batch_size = args.batch_size // per_node
    workers = (args.workers + per_node - 1) // per_node
    if args.seed is not None:
        seed_everything(args.seed)
        cudnn.deterministic = True
    cudnn.benchmark = args.seed is None
    print(f"rank {rank}/{world_size} on {device}; per-process batch {batch_size}, workers {workers}")

    model = build_generator(args)
    discriminator = Discriminator(channels=args.out_channels)
    if args.generator_pre_trained_weights and not args.resume:
        load_generator_weights(model, args.generator_pre_trained_weights)
    model.to(device)
    discriminator.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    if args.compile:
        for enc in (model.encoder_q, getattr(model, "encoder_k", None)):
            if enc is not None:
                enc.compile()
    model_without_ddp, disc_without_ddp = model, discriminator
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        if args.method != "moco" and device.type == "cuda":  # Barlow Twins and SimSiam use SyncBN
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model_without_ddp = model
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        discriminator = torch.nn.parallel.DistributedDataParallel(discriminator, device_ids=ids)

    opt_g = build_optimizer(model_without_ddp, args, batch_size * world_size)
    opt_d = torch.optim.Adam(disc_without_ddp.parameters(), args.disc_learning_rate, betas=(0.5, 0.999))
    scaler_g = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    scaler_d = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    if args.data_path == "cache":  # decode-once cache, batched augmentation (dira/cache_data.py)
        train_set, val_set = (cache_data.open_list_cache(lst, args.cache_dir, args.cache_size)
                              for lst in (args.train_list, args.val_list))
    else:
        transform = TwoViewTransform(args.mode, args.img_size, args.flip_target, args.strict_swap_overlap)
        train_set = ImageListDataset(args.data, args.train_list, transform)
        val_set = ImageListDataset(args.data, args.val_list, transform)
    samplers = [torch.utils.data.DistributedSampler(s, world_size, rank, shuffle=True, seed=0)
                for s in (train_set, val_set)]
    if args.data_path == "cache":
        loaders = [cache_data.make_loader(s, smp_, batch_size, workers, device, cache_data.cache_augment(args),
                                          args.augment_on, args.persistent_workers)
                   for s, smp_ in zip((train_set, val_set), samplers)]
    else:
        loaders = [torch.utils.data.DataLoader(s, batch_size=batch_size, sampler=smp_, num_workers=workers,
                                               pin_memory=device.type == "cuda", drop_last=True,
                                               persistent_workers=args.persistent_workers and workers > 0)
                   for s, smp_ in zip((train_set, val_set), samplers)]
    train_loader, val_loader = loaders
    views = 2 if args.mode == "di" else 3  # two views (and the restoration target), RGB float32
    check_shared_memory(workers, batch_size * views * 3 * args.img_size ** 2 * 4, "--workers (-j)")
    for name, loader, ds in (("train", train_loader, train_set), ("validation", val_loader, val_set)):
        if len(loader) == 0:
            raise ValueError(f"the {name} list has {len(ds)} images, fewer than one batch per process "
                             f"({batch_size} x {world_size} processes)")

    run_dir = Path(args.checkpoint_dir) / args.exp_name / args.mode
    steps = len(train_loader) if not args.max_steps_per_epoch else min(len(train_loader), args.max_steps_per_epoch)
    ckpt = None
    if args.resume:  # read and checked before anything is written into the run folder
        ckpt = load_checkpoint(args.resume)
        check_resume_matches(args, ckpt, run_dir)
        if main_process:  # rows a killed run logged after its last checkpoint are logged again below
            dropped = drop_rows_after(run_dir / "metrics.csv", int(ckpt["epoch"]) * steps - 1)
            if dropped:
                print(f"=> dropped {dropped} metrics row(s) logged after the checkpoint (they are repeated)")
    if main_process and not args.resume:  # a fresh run: keep the old log aside
        set_metrics_aside(run_dir)
    logger = RunLogger(run_dir, wandb=args.wandb, config={k: plain(v) for k, v in vars(args).items()},
                       enabled=main_process)
    probe = online_probe(args, model_without_ddp, logger, device, main_process)
    preview = None
    if main_process and args.mode != "di" and args.preview_images > 0 and args.data_path == "cache":
        preview = cache_data.preview_batch(val_set, args.preview_images, args)
    elif main_process and args.mode != "di" and args.preview_images > 0:
        preview_tf = TwoViewTransform(args.mode, args.img_size, args.flip_target, args.strict_swap_overlap,
                                      with_clean_view=True)
        preview_set = ImageListDataset(args.data, args.val_list, preview_tf)
        samples = [preview_set[i] for i in range(min(args.preview_images, len(preview_set)))]
        preview = [torch.stack(parts) for parts in zip(*samples)]

    best_loss = 1e10
    start_epoch = args.start_epoch
    if ckpt is not None:
        try:
            model_without_ddp.load_state_dict(strip_prefix(ckpt["state_dict"]))
            opt_g.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise SystemExit(f"--resume refused: {args.resume} does not fit this model (-a {args.arch}, --mode "
                             f"{args.mode}, --method {args.method}, --mlp, --moco-k/--moco-dim): "
                             f"{str(e).splitlines()[0]}") from None
        start_epoch, best_loss = ckpt["epoch"], float(ckpt["best_loss"])
        if "scaler" in ckpt:
            scaler_g.load_state_dict(ckpt["scaler"])
        if args.mode == "dira":
            d_path = Path(args.resume).with_name("D_checkpoint.pth")
            if d_path.is_file():
                d_ckpt = load_checkpoint(d_path)
                disc_without_ddp.load_state_dict(strip_prefix(d_ckpt["state_dict"]))
                opt_d.load_state_dict(d_ckpt["optimizer"])
                if "scaler" in d_ckpt:
                    scaler_d.load_state_dict(d_ckpt["scaler"])
            else:
                warnings.warn(f"{d_path} not found: the discriminator starts afresh", stacklevel=2)
        states = ckpt.get("rng") or []
        if len(states) == world_size:
            set_rng_state(states[rank])
        elif states:
            warnings.warn(f"checkpoint holds RNG states of {len(states)} processes, this run has {world_size}",
                          stacklevel=2)
        print(f"=> resumed from '{args.resume}' at epoch {start_epoch} (best loss {best_loss:.5f})")

    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        samplers[0].set_epoch(epoch)
        lr = engine.adjust_learning_rate(opt_g, epoch, args)
        train_stats = engine.train_one_epoch(model, discriminator, train_loader, opt_g, opt_d, scaler_g, scaler_d,
                                             epoch, args, device, logger, main_process)
        valid_loss = engine.validate(model, discriminator, val_loader, args, device)
        skipped = sorted({str(p) for ds in (train_set, val_set) for p in ds.skipped_files()})
        logger.log((epoch + 1) * steps - 1, epoch=epoch, val_loss=valid_loss, skipped_images=len(skipped),
                   **{f"train_{k}": v for k, v in train_stats.items()})
        probe(epoch + 1, log_step=(epoch + 1) * steps - 1)
        print(f"epoch {epoch}: lr {lr:.5g} train {train_stats} validation loss {valid_loss:.5f} "
              f"({time.time() - t0:.1f}s)")
        if skipped:  # counted over the whole run so far, by every worker process of this rank
            print(f"skipped {len(skipped)} unreadable image(s) so far: {', '.join(skipped[:20])}"
                  + (f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""))
        if preview is not None:
            rows = engine.preview_rows(model_without_ddp.encoder_q, preview, device, args.amp)
            save_image_grid(rows, run_dir / f"restoration_epoch{epoch:04d}.png",
                            titles=["view", "distorted input", "restoration", "target"], vmin=0, vmax=1)
        states = [rng_state()]
        if world_size > 1:
            gathered = [None] * world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if main_process:
            if valid_loss < best_loss:
                print(f"Epoch {epoch:04d}: val_loss improved from {best_loss:.5f} to {valid_loss:.5f}")
                best_loss = valid_loss
                save_atomic(unet_of(model_without_ddp).state_dict(), run_dir / "best_checkpoint.pth")
            save_checkpoints(run_dir, epoch, args, model_without_ddp, disc_without_ddp, opt_g, opt_d,
                             scaler_g, scaler_d, best_loss, states)
        else:
            best_loss = min(best_loss, valid_loss)
    if main_process and start_epoch < args.epochs:
        final = "unet.pth" if isinstance(model_without_ddp.encoder_q, DiRAUNet) else f"{args.arch}.pth"
        save_atomic(unet_of(model_without_ddp).state_dict(), run_dir / final)
    logger.close()
    return run_dir


def save_checkpoints(run_dir, epoch, args, model, discriminator, opt_g, opt_d, scaler_g, scaler_d, best_loss,
                     rng_states):
    """checkpoint.pth (and D_checkpoint.pth in dira) with the original keys, plus what exact resume needs."""
    ckpt = {"epoch": epoch + 1, "arch": args.arch,
            "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
            "optimizer": opt_g.state_dict(), "best_loss": torch.tensor(best_loss),
            # beyond the original:
            "mode": args.mode, "method": args.method, "scaler": scaler_g.state_dict(), "rng": rng_states,
            "args": {k: plain(v) for k, v in vars(args).items()}}
    save_atomic(ckpt, run_dir / "checkpoint.pth")
    if args.mode == "dira":
        save_atomic({"epoch": epoch + 1, "arch": args.arch,
                     "state_dict": {"module." + k: v for k, v in discriminator.state_dict().items()},
                     "optimizer": opt_d.state_dict(), "scaler": scaler_d.state_dict()},
                    run_dir / "D_checkpoint.pth")


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one line per warning, no source line
    main()
