"""The VoCo v2 training step. The loop (passes, resume, checkpoints, logging) is voco.engine.train's,
which calls this through its `step_fn`."""

import torch

from shared.guards import inject_nan
from voco.data import flatten_batch

LOSS_COLUMNS = ("loss", "intra", "inter", "reg")


def train_step(model, net, batch, optimizer, scheduler, scaler, device, amp, amp_dtype,
               grad_clip=False, max_grad_norm=1.0, step=None, watch=None):
    """One optimiser step of VoCoV2 `model` (`net` is it, or its DDP wrapper): backbone + student head
    forward, EMA of the head, teacher forward, intra + inter + reg, (scaled) backward, step, schedule.
    Returns the loss parts as detached 0-dim tensors on the device, read at the logging interval; `watch`:
    the shared.guards.LossWatch the loss is reported to, as in voco.engine.train_step."""
    img, crops, labels = (t.to(device, non_blocking=True) for t in flatten_batch(batch))
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
        intra, inter, reg, _ = net(img, crops, labels, step=step)
        loss = intra + inter + reg  # float64: intra follows the float64 labels, as in the original
    loss = optimize(loss, model, optimizer, scheduler, scaler, grad_clip, max_grad_norm, step, watch)
    return {"loss": loss.detach(), "intra": intra.detach(), "inter": inter.detach(), "reg": reg.detach()}


def optimize(loss, model, optimizer, scheduler, scaler, grad_clip, max_grad_norm, step, watch):
    """The backward half of a v2 (and omni) step: NaN injection for the fault tests, the LossWatch report,
    (scaled) backward, optional clipping, optimiser and schedule steps. Returns the loss as reported (NaN
    where a fault test injected it)."""
    loss = inject_nan(loss, step)
    if watch is not None:  # on a CPU it stops here, before NaN reaches the weights (or the EMA teacher)
        watch.observe(loss, step)
    scaler.scale(loss).backward()
    if grad_clip:  # the original clips only without AMP (never, as shipped); here with both
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss
