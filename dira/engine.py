"""One epoch of DiRA training and validation (the original `train_dir`/`train_dira`/`validate_*`)."""

import math
from contextlib import nullcontext

import torch
import torch.distributed as dist
from tqdm import tqdm

from dira import losses
from dira.models import dist_world_size
from shared.checkpoint import fault_kill_at_step
from shared.guards import LossWatch, inject_nan
from shared.timing import StepTimer


def autocast(device, amp):
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def adjust_learning_rate(optimizer, epoch, args, iters_per_epoch=1, it=0):
    """Set each param group's lr for this point of training (epoch counted from 0).

    moco (the original): per epoch, cosine lr*0.5*(1+cos(pi*e/E)) with --cos, else x0.1 at each
    --schedule milestone. simsiam: per-epoch cosine, the predictor at a fixed lr with --fix_pred_lr.
    barlowtwins: per step, linear warm-up for --bt_warmup_epochs then cosine down to 0.001x.
    Each group carries `base_lr`; groups with `fix_lr` keep it.
    """
    if args.method == "barlowtwins":
        step, total = epoch * iters_per_epoch + it, args.epochs * iters_per_epoch
        warmup = args.bt_warmup_epochs * iters_per_epoch
        if step < warmup:
            factor = step / warmup
        else:
            q = 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            factor = q + 0.001 * (1 - q)
    elif args.cos or args.method == "simsiam":
        factor = 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs))
    else:
        factor = 0.1 ** sum(epoch >= milestone for milestone in args.schedule)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] if group.get("fix_lr") else group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]


def generator_losses(model, discriminator, batch, args, update=True):
    """Forward the generator on one batch; returns (weighted total, dict of the parts, restoration).

    total = w_dis * L_dis + w_res * L_res (dir/dira) + w_adv * L_adv (dira).
    """
    y1, y2 = batch[0], batch[1]
    if args.method == "moco" or args.mode == "di":
        logits, labels, restored = model(y1, y2, update=update)
        dis = losses.info_nce(logits, labels)
    elif args.method == "barlowtwins":
        z1, z2, restored = model(y1, y2)
        dis = losses.barlow_twins_loss(z1, z2, args.bt_lambda)
    else:
        p1, p2, z1, z2, restored = model(y1, y2)
        dis = losses.simsiam_loss(p1, p2, z1, z2)
    parts = {"dis_loss": dis}
    total = args.contrastive_weight * dis
    if args.mode != "di":
        parts["res_loss"] = losses.restoration_loss(restored, batch[2])
        total = total + args.mse_weight * parts["res_loss"]
    if args.mode == "dira":
        parts["adv_loss"] = losses.generator_adversarial_loss(discriminator(restored))
        total = total + args.adv_weight * parts["adv_loss"]
    return total, parts, restored


def _to_device(batch, device, channels_last):
    out = []
    for t in batch:
        t = t.to(device, non_blocking=True)
        out.append(t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t)
    return out


def train_one_epoch(model, discriminator, loader, opt_g, opt_d, scaler_g, scaler_d, epoch, args, device,
                    logger=None, main=True):
    """One pass over `loader`. Step order as the original: the generator steps first, then the
    discriminator on the restorations made before that step. Returns the epoch's mean losses."""
    model.train()
    discriminator.train()
    sums, count = {}, 0
    steps = len(loader) if not args.max_steps_per_epoch else min(len(loader), args.max_steps_per_epoch)
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch}", disable=not main, leave=False, dynamic_ncols=True)
    timer = StepTimer(device)
    # non-finite losses are read on the host at the print interval and at the end of the epoch (before its
    # checkpoints); on a CPU at once. With --amp fp16 the GradScaler skips such steps (see shared/guards.py).
    watch_g = LossWatch(device, scaler_g, parameters=model.parameters())
    watch_d = LossWatch(device, scaler_d, parameters=discriminator.parameters(), name="discriminator loss")
    for it, batch in enumerate(timer.wrap(bar)):
        if it >= steps:
            break
        if args.method == "barlowtwins":
            adjust_learning_rate(opt_g, epoch, args, steps, it)
        batch = _to_device(batch, device, args.channels_last)
        global_step = epoch * steps + it
        fault_kill_at_step(global_step)  # tests only (SSL_MED_FAULT_KILL_STEP: kill -9 here); inert otherwise
        with autocast(device, args.amp):
            total, parts, restored = generator_losses(model, discriminator, batch, args)
        total = inject_nan(total, global_step)  # tests only (SSL_MED_FAULT_NAN_STEP); inert otherwise
        watch_g.observe(total, global_step, f"epoch {epoch}, batch {it}, generator")
        opt_g.zero_grad(set_to_none=True)
        scaler_g.scale(total).backward()
        scaler_g.step(opt_g)
        scaler_g.update()
        parts["loss"] = total
        if args.mode == "dira":
            # D also got gradients from the generator's adversarial term: zero them first.
            opt_d.zero_grad(set_to_none=True)
            with autocast(device, args.amp):
                d_loss = losses.discriminator_loss(discriminator(batch[2]), discriminator(restored.detach()))
            watch_d.observe(d_loss, global_step, f"epoch {epoch}, batch {it}, discriminator")
            scaler_d.scale(d_loss).backward()
            scaler_d.step(opt_d)
            scaler_d.update()
            parts["d_loss"] = d_loss
        for k, v in parts.items():  # summed on the device: no host sync per step
            sums[k] = sums.get(k, 0.0) + v.detach().float()
        count += 1
        if it % args.print_freq == 0 or it == steps - 1:  # the host reads the losses only here
            watch_g.check(), watch_d.check()
        if main and (it % args.print_freq == 0 or it == steps - 1):
            scalars = {k: float(v.detach()) for k, v in parts.items()}
            bar.set_postfix({k: f"{v:.4f}" for k, v in scalars.items()})
            if logger is not None:
                logger.log(global_step, epoch=epoch, lr=opt_g.param_groups[0]["lr"], **scalars, **timer.lap())
    watch_g.check(), watch_d.check()  # before this epoch's checkpoints
    return {k: float(v) / max(count, 1) for k, v in sums.items()}


@torch.no_grad()
def validate(model, discriminator, loader, args, device):
    """Mean over batches (and ranks) of the generator's weighted loss, in eval mode.

    With --frozen_validation off (the original) every batch also momentum-updates the key encoder and
    enqueues its keys, so validation changes the model; on, validation has no side effects.
    """
    model.eval()
    acc = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of batch losses, batches]
    steps = len(loader) if not args.max_steps_per_epoch else min(len(loader), args.max_steps_per_epoch)
    for it, batch in enumerate(loader):
        if it >= steps:
            break
        batch = _to_device(batch, device, args.channels_last)
        with autocast(device, args.amp):
            total, _, _ = generator_losses(model, discriminator, batch, args, update=not args.frozen_validation)
        acc[0] += total.double()
        acc[1] += 1
    if dist_world_size() > 1:
        dist.all_reduce(acc)
    if acc[1] == 0:
        raise RuntimeError("the validation loader yielded no batch (fewer images than the per-process batch?)")
    return float(acc[0] / acc[1])


@torch.no_grad()
def preview_rows(encoder_q, preview_batch, device, amp="none"):
    """Rows [view, distorted input, restoration, target] as 2-D arrays, for the per-epoch PNG grid."""
    y1, _, target, clean = preview_batch
    was_training = encoder_q.training
    encoder_q.eval()
    with autocast(device, amp):
        _, restored = encoder_q(y1.to(device))
    encoder_q.train(was_training)
    rows = []
    for i in range(y1.shape[0]):
        rows.append([clean[i, 0].numpy(), y1[i, 0].numpy(), restored[i, 0].float().cpu().numpy(),
                     target[i, 0].numpy()])
    return rows
