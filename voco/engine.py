"""VoCo pre-training loop: passes over the data until `num_steps` optimiser steps, with exact resume."""

from pathlib import Path

import torch
from tqdm import tqdm

from shared.checkpoint import fault_kill_at_step, rng_state, save_atomic
from shared.guards import LossWatch, inject_nan
from shared.timing import StepTimer
from voco.data import flatten_batch


def pass_indices(n, seed, epoch, rank=0, world_size=1):
    """This rank's shuffled indices for one pass; padded to a multiple of world_size like MONAI's
    DistributedSampler(even_divisible=True), seeded by (seed, epoch) so a resume can skip ahead."""
    g = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    order = torch.randperm(n, generator=g).tolist()
    total = -(-n // world_size) * world_size
    order += order[:total - n]
    return order[rank:total:world_size]


def train_step(model, student, batch, optimizer, scheduler, scaler, device, amp, amp_dtype,
               grad_clip=False, max_grad_norm=1.0, step=None, watch=None):
    """One optimiser step: student forward, EMA, teacher forward (inside model.forward), loss,
    (scaled) backward, optional clipping, step, schedule. Returns the loss parts as detached 0-dim tensors
    on the device (read them at the logging interval: each read waits for the GPU). `watch`: a
    shared.guards.LossWatch the loss is reported to (it stops the run on NaN/inf)."""
    img, crops, labels = (t.to(device, non_blocking=True) for t in flatten_batch(batch))
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
        pos, neg, reg, _ = model(img, crops, labels, student=student)
        loss = pos + neg + reg  # float64 like the original: the labels are float64
    loss = inject_nan(loss, step)
    if watch is not None:  # on a CPU it stops here, before NaN reaches the weights (or the EMA teacher)
        watch.observe(loss, step)
    scaler.scale(loss).backward()
    if grad_clip:  # the original clips only without AMP, i.e. never; here it works with both
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.student.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss.detach(), "pos": pos.detach(), "neg": neg.detach(), "reg": reg.detach()}


def mean_over_ranks(parts, world_size):
    """The loss parts as floats, averaged over the ranks (rank 0 alone holds only its share of the batch)."""
    values = torch.stack([v.double() for v in parts.values()])
    if world_size > 1:
        torch.distributed.all_reduce(values)
    return dict(zip(parts, (values / world_size).tolist()))


IDENTITY_KEYS = ("roi_x", "base_roi", "num_crops", "sw_batch_size", "batch_size", "in_channels", "feature_size",
                 "hidden_dim", "out_dim", "window_size", "single_network", "double_input", "teacher_init",
                 "ema_momentum", "opt", "lr", "lr_schedule", "warmup_steps", "seed", "a_min", "a_max", "b_min",
                 "b_max", "json_list")


def run_identity(args):
    """The method and the settings a resumed pre-training must share with the first part."""
    return {"method": "voco", **{k: getattr(args, k, None) for k in IDENTITY_KEYS}}


def checkpoint(model, optimizer, scheduler, scaler, args, state):
    """Everything --resume needs, as tensors and plain Python values."""
    return {"global_step": state["global_step"], "epoch": state["epoch"], "run": run_identity(args),
            "batch_in_pass": state["batch_in_pass"], "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), "args": vars(args)}


def train(args, model, student, optimizer, scheduler, scaler, dataset, info, logger, state,
          amp=False, amp_dtype=torch.float16, probe=None, step_fn=train_step, make_crops=None,
          labelled_batches=None):
    """Run until state['global_step'] == args.num_steps (or the end of that pass with
    --finish_pass, as the original). `student` is model.student, DDP-wrapped when distributed.
    `step_fn`: the optimiser step (this module's `train_step`; voco.v2 recipe's step for v2 / omni).
    Where the crops come from: the loader's batches hold them (`make_crops` None, --crops_on workers), or
    `make_crops(batch, device)` cuts them on the device from the volumes and parameters the loader gives
    (--crops_on device: voco.device_crops.VolumesWithParameters.device_crops).
    `labelled_batches` (--recipe omni): completed steps -> an iterator of the labelled patches of the next
    steps, one item per step, put into the batch as "labelled"."""
    logdir = Path(args.logdir)
    device = info.device
    bar = tqdm(total=args.num_steps, initial=state["global_step"], disable=not info.is_main,
               desc="voco pre-train", dynamic_ncols=True)
    # with fp16 a non-finite loss is the GradScaler's to skip; read on the host at each log and before saves
    watch = LossWatch(device, scaler, parameters=model.parameters())
    labelled = labelled_batches(state["global_step"]) if labelled_batches is not None else None
    while state["global_step"] < args.num_steps:
        dataset.set_epoch(state["epoch"])
        indices = pass_indices(len(dataset), args.seed, state["epoch"], info.rank, info.world_size)
        indices = indices[state["batch_in_pass"] * args.batch_size:]
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=args.batch_size, sampler=indices, drop_last=True,
            num_workers=args.workers, pin_memory=device.type == "cuda",
            persistent_workers=False)
        model.train()
        timer = StepTimer(device)
        for batch in timer.wrap(loader):
            fault_kill_at_step(state["global_step"] + 1)  # test-only hook, inert unless set
            if make_crops is not None:
                batch = make_crops(batch, device)
            if labelled is not None:
                batch = {**batch, "labelled": next(labelled)}
            parts = step_fn(model, student, batch, optimizer, scheduler, scaler, device, amp,
                            amp_dtype, args.grad_clip, args.max_grad_norm, state["global_step"] + 1, watch)
            state["global_step"] += 1
            state["batch_in_pass"] += 1
            step = state["global_step"]
            lr = optimizer.param_groups[0]["lr"]
            log_now = step % args.log_every == 0 or step == args.num_steps
            save_now = step % args.eval_num == 0 or step == args.num_steps or (
                args.save_every and step % args.save_every == 0)
            if log_now or save_now:
                watch.check()  # the host reads the loss here only
            if log_now:
                parts = mean_over_ranks(parts, info.world_size)
            if info.is_main:
                bar.update(1)
                if log_now:
                    logger.log(step, **parts, lr=lr, **timer.lap())  # data_wait_s, step_s
                    bar.set_postfix(**{k: f"{v:.3f}" for k, v in parts.items()}, lr=f"{lr:.2e}")
                if step % args.eval_num == 0 or step == args.num_steps:
                    save_atomic(checkpoint(model, optimizer, scheduler, scaler, args, state),
                                logdir / "model_current_epoch.pt")
                if args.save_every and step % args.save_every == 0:
                    save_atomic(checkpoint(model, optimizer, scheduler, scaler, args, state),
                                logdir / f"model_step{step}.pt")
            if probe is not None:  # the frozen-feature probe (shared.probe.OnlineProbe), rank 0
                probe(step)
            if step >= args.num_steps and not args.finish_pass:
                break
        else:
            state["epoch"] += 1
            state["batch_in_pass"] = 0
            continue
        break
    bar.close()
    watch.check()
    if info.is_main:
        save_atomic(model.state_dict(), logdir / "final_model.pth")
        save_atomic(checkpoint(model, optimizer, scheduler, scaler, args, state),
                    logdir / "model_final_epoch.pt")
    return state
