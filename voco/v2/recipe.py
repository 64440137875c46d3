"""What `voco/train.py --recipe v2 --size B|L|H` changes in the v1 pre-training CLI: flag defaults,
model, dataset, training step, and resuming from Large-Scale-Medical's own checkpoints.

The per-size commands of the original (`Self-supervised/dist_{B,L,H}.sh`: 8 processes, 2 volumes each):

    torchrun --nproc_per_node=8 voco/train.py --recipe v2 --size B --batch_size 2 --logdir runs/logs_swin_B
    (L: --size L, H: --size H; feature_size 48 / 96 / 192)
"""

import argparse
import warnings

import torch

from voco.v2.checkpoint import is_ssl_head, load_ssl_head, ssl_head_state
from voco.v2.data import WINDOWS, build_v2_dataset
from voco.v2.engine import LOSS_COLUMNS, train_step
from voco.v2.model import SIZES, VoCoV2

RECIPES = ("v1", "v2")


def add_recipe_args(parser):
    parser.add_argument("--recipe", default="v1", choices=RECIPES,
                        help="v1: VoCo CVPR 2024 (Luffy03/VoCo); v2: Large-Scale-Medical's shared backbone, "
                             "EMA heads, intra+inter-volume loss, 3x3 crops of 64^3")
    parser.add_argument("--size", default="B", choices=sorted(SIZES),
                        help="v2 model size: feature_size 48 / 96 / 192 (an explicit --feature_size wins)")
    parser.add_argument("--window", default="crop", choices=WINDOWS,
                        help="v2: random 192x192x64 window of the 1.5 mm volume (crop) or the whole "
                             "foreground box resized to it (resize)")
    parser.add_argument("--feature_dropout", default=0.2, type=float, help="v2: Dropout1d on the student's input")


def recipe_defaults(argv):
    """The flag defaults of the recipe and size named in argv (nothing for v1: it stays as it was)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default="v1")
    pre.add_argument("--size", default="B")
    known, _ = pre.parse_known_args(argv)
    if known.recipe == "v1":
        return {}
    return dict(  # Large-Scale-Medical's voco_train.py / voco_head.py / voco_trans.py / dist_*.sh
        feature_size=SIZES.get(known.size, 48), hidden_dim=1024, out_dim=1024, num_steps=2_000_000,
        eval_num=20_000, save_every=20_000, base_roi=64, num_crops=3, roi_x=64, batch_size=2)


def identity(args):
    """Settings a resumed v2 run must share (added to engine.run_identity; nothing for v1)."""
    if args.recipe == "v1":
        return {}
    return {"recipe": args.recipe, "window": args.window, "feature_dropout": args.feature_dropout,
            "space": [args.space_x, args.space_y, args.space_z]}


def build_model(args, info):
    """(VoCoV2, the module the step calls: it, or its DDP wrapper; the teacher head has no grads)."""
    v1_only = [flag for flag, on in (("--single_network", args.single_network), ("--double_input", args.double_input))
               if on]
    if v1_only:
        raise SystemExit(f"{' and '.join(v1_only)}: v1 only (the CVPR code's variants); v2 has neither")
    model = VoCoV2(args.in_channels, args.feature_size, args.hidden_dim, args.out_dim, args.use_checkpoint,
                   args.dropout_path_rate, args.spatial_dims, args.ema_momentum, args.feature_dropout,
                   args.teacher_init, args.use_flash_attention, args.window_size).to(info.device)
    model.seed = args.seed * 1000 + info.rank  # per-rank feature-dropout draws, fixed by the step number
    net = model
    if info.distributed:
        if args.sync_bn and info.device.type == "cuda":  # the heads' BN statistics over all GPUs
            model.student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.student)
            model.teacher = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.teacher)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    return model, net


def resume_original(ckpt, path, model, scheduler):
    """Continue from a checkpoint of Large-Scale-Medical's voco_train.py (or a released SSL_head file):
    weights and global_step, as its own --resume does. Its optimizer state is not in the file, so AdamW
    starts afresh; the LR schedule is moved to global_step (the original restarts it at 0).
    Returns the state dict for engine.train, or None when `ckpt` is not such a checkpoint."""
    if not is_ssl_head(ssl_head_state(ckpt)):
        return None
    step = load_ssl_head(model, ckpt, where=str(path))
    warnings.warn(f"{path}: Large-Scale-Medical layout (weights and global_step {step} only): the optimizer "
                  "starts afresh", stacklevel=2)
    if step:  # the schedule's factor at global_step (LambdaLR computes it from last_epoch)
        scheduler.last_epoch = step - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            scheduler.step()
    return {"global_step": step, "epoch": 0, "batch_in_pass": 0}


def dataset(args, items, skip_bad, skip_log):
    return build_v2_dataset(args, items, skip_bad=skip_bad, skip_log=skip_log)


def probe_model(model):
    """What voco.probe.online_probe reads: `.teacher` (the branch it probes) -> the shared backbone."""
    return argparse.Namespace(teacher=model.backbone, student=model.backbone)


STEP = train_step
COLUMNS = LOSS_COLUMNS
