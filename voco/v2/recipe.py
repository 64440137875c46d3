"""What `voco/train.py --recipe v2|omni --size B|L|H` changes in the v1 pre-training CLI: flag defaults,
model, dataset, training step, and resuming from Large-Scale-Medical's own checkpoints. The one place that
decides what each recipe builds (train.py asks here, with args.recipe).

The per-size commands of the original (`Self-supervised/dist_{B,L,H}.sh`: 8 processes, 2 volumes each):

    torchrun --nproc_per_node=8 voco/train.py --recipe v2 --size B --batch_size 2 --logdir runs/logs_swin_B
    (L: --size L, H: --size H; feature_size 48 / 96 / 192)

and of `Omni-supervised/dist_{B,L,H}.sh` (8 processes; volumes x random crops per process 4x4 / 2x4 / 2x2):

    torchrun --nproc_per_node=8 voco/train.py --recipe omni --size B --batch_size 4 --sw_batch_size 4 \
        --omni_json_list jsons/VoComni.json --omni_data_dir data/VoComni --logdir runs/logs_swin_B
"""

import argparse
import warnings
from pathlib import Path

import torch

from voco.v2.checkpoint import is_ssl_head, load_ssl_head, ssl_head_state
from voco.v2.data import WINDOWS, build_v2_dataset
from voco.v2.engine import LOSS_COLUMNS, train_step
from voco.v2.model import SIZES, VoCoV2
from voco.v2.omni import LOSS_COLUMNS as OMNI_COLUMNS
from voco.v2.omni import TEACHER_FILE as TEACHER_FILE  # re-exported: train.py names the run file with it
from voco.v2.omni import OmniStep, SelfTraining, VoCoOmni
from voco.v2.omni_data import build_labelled, labelled_batches

RECIPES = ("v1", "v2", "omni")
OMNI_SIZES = {"B": (4, 4), "L": (2, 4), "H": (2, 2)}  # Omni-supervised/dist_*.sh: batch_size, sw_batch_size


def add_recipe_args(parser):
    parser.add_argument("--recipe", default="v1", choices=RECIPES,
                        help="v1: VoCo CVPR 2024 (Luffy03/VoCo); v2: Large-Scale-Medical's shared backbone, "
                             "EMA heads, intra+inter-volume loss, 3x3 crops of 64^3; omni: v2 + DiceCE on "
                             "labelled patches + self-training from the switch step")
    parser.add_argument("--size", default="B", choices=sorted(SIZES),
                        help="v2 model size: feature_size 48 / 96 / 192 (an explicit --feature_size wins)")
    parser.add_argument("--window", default="crop", choices=WINDOWS,
                        help="v2: random 192x192x64 window of the 1.5 mm volume (crop) or the whole "
                             "foreground box resized to it (resize)")
    parser.add_argument("--feature_dropout", default=0.2, type=float, help="v2: Dropout1d on the student's input")
    omni = parser.add_argument_group("--recipe omni (Omni-supervised/voco_train.py's flags and defaults)")
    omni.add_argument("--omni_json_list", nargs="+", default=None,
                      help="decathlon json(s) of labelled volumes ('image' and 'label'; original: VoComni.json)")
    omni.add_argument("--omni_data_dir", nargs="+", default=None,
                      help="root(s) the labelled json paths are relative to (default: each json's folder)")
    omni.add_argument("--out_channels", default=21, type=int, help="segmentation classes with background")
    omni.add_argument("--self_train_step", default=None, type=int,
                      help="completed steps at which the frozen teacher is taken (default num_steps // 2)")
    omni.add_argument("--RandFlipd_prob", default=0.2, type=float, help="labelled patches: flip per axis")
    omni.add_argument("--RandRotate90d_prob", default=0.2, type=float, help="labelled patches: rot90")
    omni.add_argument("--RandScaleIntensityd_prob", default=0.1, type=float, help="unused, as in the original")
    omni.add_argument("--RandShiftIntensityd_prob", default=0.1, type=float, help="labelled patches: shift")


def recipe_defaults(argv):
    """The flag defaults of the recipe and size named in argv (nothing for v1: it stays as it was)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default="v1")
    pre.add_argument("--size", default="B")
    known, _ = pre.parse_known_args(argv)
    if known.recipe == "v1":
        return {}
    v2 = dict(  # Large-Scale-Medical's voco_train.py / voco_head.py / voco_trans.py / dist_*.sh
        feature_size=SIZES.get(known.size, 48), hidden_dim=1024, out_dim=1024, num_steps=2_000_000,
        eval_num=20_000, save_every=20_000, base_roi=64, num_crops=3, roi_x=64, batch_size=2)
    if known.recipe != "omni":
        return v2
    batch_size, sw_batch_size = OMNI_SIZES.get(known.size, OMNI_SIZES["B"])
    # Omni-supervised/voco_train.py saves model_current_epoch.pt and model_step<N>.pt every 1000 steps
    return {**v2, "eval_num": 1000, "save_every": 1000, "batch_size": batch_size, "sw_batch_size": sw_batch_size}


def identity(args):
    """Settings a resumed v2 run must share (added to engine.run_identity; nothing for v1)."""
    if args.recipe == "v1":
        return {}
    same = {"recipe": args.recipe, "window": args.window, "feature_dropout": args.feature_dropout,
            "space": [args.space_x, args.space_y, args.space_z]}
    if args.recipe == "omni":
        same.update({k: getattr(args, k) for k in ("omni_json_list", "out_channels", "RandFlipd_prob",
                                                   "RandRotate90d_prob", "RandShiftIntensityd_prob")},
                    self_train_step=switch_step(args))
    return same


def switch_step(args):
    return args.num_steps // 2 if args.self_train_step is None else args.self_train_step


def build_model(args, info):
    """(VoCoV2, the module the step calls: it, or its DDP wrapper; the teacher head has no grads)."""
    v1_only = [flag for flag, on in (("--single_network", args.single_network), ("--double_input", args.double_input))
               if on]
    if v1_only:
        raise SystemExit(f"{' and '.join(v1_only)}: v1 only (the CVPR code's variants); v2 has neither")
    net_class, extra = (VoCoOmni, {"out_channels": args.out_channels}) if args.recipe == "omni" else (VoCoV2, {})
    model = net_class(args.in_channels, args.feature_size, args.hidden_dim, args.out_dim, args.use_checkpoint,
                      args.dropout_path_rate, args.spatial_dims, args.ema_momentum, args.feature_dropout,
                      args.teacher_init, args.use_flash_attention, args.window_size, **extra).to(info.device)
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


def step_fn(args, info, teacher_file):
    """The optimiser step of the recipe (omni: with its self-training switch, the frozen teacher kept in
    `teacher_file`, looked for next to --resume's checkpoint too)."""
    if args.recipe != "omni":
        return train_step
    resume_dir = Path(args.resume).parent if args.resume else None
    return OmniStep(SelfTraining(switch_step(args), teacher_file, write=info.is_main, resume_dir=resume_dir))


def labelled(args, info, datalist, skip_log):
    """omni: function (completed steps -> iterator of the labelled patches of the next steps); else None."""
    if args.recipe != "omni":
        return None
    if not args.omni_json_list:
        raise SystemExit("--recipe omni needs --omni_json_list: the labelled volumes ('image' and 'label')")
    items = datalist(args.omni_json_list, args.omni_data_dir, keys=("image", "label"), flag="--omni_data_dir")
    dataset = build_labelled(args, items,
                             info.rank, info.world_size, skip_bad=args.skip_bad, skip_log=skip_log)
    return labelled_batches(dataset, args.workers, pin_memory=info.device.type == "cuda")


def columns(args):
    return OMNI_COLUMNS if args.recipe == "omni" else LOSS_COLUMNS
