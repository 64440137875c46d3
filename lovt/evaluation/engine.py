"""One downstream run: train a head (frozen backbone, or fine-tuning after a frozen warm-up),
validate every epoch, keep the best epoch by the task's monitored metric, test with it.

The run folder gets config.json, metrics.csv + TensorBoard (shared.runlog), checkpoints/best.pt
(the best epoch's weights, tensors only, written atomically; the head alone for frozen tasks, whose
backbone is the evaluated file unchanged) and results.json ({'best_epoch', 'val', 'test', ...}).
"""

import json
import math
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from shared.checkpoint import save_atomic
from shared.distributed import seed_everything
from shared.guards import LossWatch, inject_nan
from shared.runlog import RunLogger
from shared.timing import StepTimer

from .backbone import build_backbone
from .data import build_split, collate
from .heads import HEADS, dice_loss
from .metrics import FROC, DetectionMAP, SegmentationMetrics
from .tasks import class_names


def build_model(task, backbone_weights, input_size, num_targets):
    backbone = build_backbone(backbone_weights)
    if task.head == "yolov3":
        return HEADS["yolov3"](backbone, num_classes=1, img_size=input_size)
    return HEADS[task.head](backbone, num_targets=num_targets)


class Evaluator:
    """Loss, predictions and the split-level metrics of one task."""

    def __init__(self, task, model, target_names):
        self.task, self.model = task, model
        self.detection = task.head == "yolov3"
        self.dice = None if self.detection else dice_loss()
        self.target_names = target_names
        self.reset()

    def reset(self):
        if self.detection:  # pos_*: mAP over the images with at least one box only (as the original)
            self.metrics = [DetectionMAP(class_names(self.task)), DetectionMAP(class_names(self.task))] + (
                [FROC()] if "froc" in (self.task.monitor, *self.task.metrics) else [])
        else:
            self.metrics = [SegmentationMetrics(self.target_names)]

    def loss(self, batch, frozen, device, update_metrics=False):
        x = batch["scan"].to(device, non_blocking=True)
        out = self.model(x, frozen_backbone=frozen)
        if self.detection:
            targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
            loss, parts = self.model.loss(out, targets)
            if update_metrics:
                preds = self.model.predict(out)
                self.metrics[0].update(preds, targets)
                pos = [i for i, t in enumerate(targets) if len(t["boxes"])]
                self.metrics[1].update([preds[i] for i in pos], [targets[i] for i in pos])
                for m in self.metrics[2:]:
                    m.update(preds, targets)
            return loss, parts
        masks = batch["masks"].to(device)
        loss = self.dice(out.float(), masks)
        if update_metrics:
            self.metrics[0].update(torch.sigmoid(out.float()), masks)
        return loss, {}

    def compute(self):
        out = {}
        for i, m in enumerate(self.metrics):
            if isinstance(m, FROC):
                out["froc"] = m.compute() if m.gt else 0.0
            else:
                prefix = "pos_" if self.detection and i == 1 else ""
                out.update({prefix + k: v for k, v in m.compute().items()})
        return out


def _loader(ds, batch_size, train, num_workers, seed, persistent_workers=False):
    # drop_last as the original, unless the split is smaller than one batch (tiny/sample data)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train and len(ds) >= batch_size,
                      num_workers=num_workers, collate_fn=collate, generator=g if train else None,
                      persistent_workers=persistent_workers and num_workers > 0,
                      pin_memory=torch.cuda.is_available())


def _set_frozen(model, frozen):
    model.train()
    if frozen:
        model.backbone.eval()  # BatchNorm statistics of the backbone stay as loaded


@torch.no_grad()
def evaluate(evaluator, loader, device, amp):
    evaluator.model.eval()
    evaluator.reset()
    total, n = 0.0, 0
    for batch in loader:
        with torch.autocast(device.type, enabled=amp):
            loss, _ = evaluator.loss(batch, True, device, update_metrics=True)
        total += float(loss) * len(batch["id"])
        n += len(batch["id"])
    return {"loss": total / max(n, 1), **evaluator.compute()}


def run_downstream(task, backbone_weights, out_dir, *, learning_rate=None, seed=12345, input_size=224,
                   where=None, device=None, max_epochs=None, max_steps=None, num_workers=0, amp=None,
                   reset_lr_every_step=True, progress=True, persistent_workers=False):
    """Train/validate/test one run of `task`; returns the results dict (also written to results.json).

    where: where the datasets are ({'datasets_root': ..} or {'sample_root': ..} or {'folders': {...}}).
    reset_lr_every_step: fine-tuning sets every group's lr to the task lr at each batch after the warm-up
        (the original; it overrides ReduceLROnPlateau). False lets the plateau schedule act.
    max_steps: stop after this many training batches in total (tiny runs); max_epochs overrides the task's.
    persistent_workers: keep the loader workers between epochs (PyTorch's; the original: off).
    """
    out_dir = Path(out_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda" if amp is None else amp
    lr = task.learning_rate if learning_rate is None else learning_rate
    max_epochs = max_epochs or task.max_epochs
    seed_everything(seed)
    where = where or {}
    splits = {s: build_split(task.dataset, s, input_size, **where) for s in ("train", "validation", "test")}
    for name, ds in splits.items():  # an empty split has no best epoch or no score: say so before training
        if len(ds) == 0:
            raise ValueError(f"{ds.folder / (name + '.csv')}: the {name} split of {task.dataset} is empty "
                             "(prepare the dataset again, or check its folder)")
    targets = splits["train"].target_names
    model = build_model(task, backbone_weights, input_size, len(targets)).to(device)
    evaluator = Evaluator(task, model, targets)
    params = model.head_parameters() if task.frozen else list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=lr if task.frozen else task.warmup_lr, weight_decay=task.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=task.lr_patience,
                                                           factor=task.lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    loaders = {s: _loader(ds, task.batch_size, s == "train", num_workers, seed, persistent_workers)
               for s, ds in splits.items()}
    config = {"task": task.name, "backbone_weights": str(backbone_weights), "learning_rate": lr, "seed": seed,
              "input_size": input_size, "max_epochs": max_epochs, "max_steps": max_steps, "device": str(device),
              "amp": amp, "reset_lr_every_step": reset_lr_every_step, "task_config": task.__dict__,
              "num_samples": {s: len(ds) for s, ds in splits.items()}}
    log = RunLogger(out_dir, config=config)
    best, best_epoch, bad_epochs, step, t0 = -math.inf, -1, 0, 0, time.perf_counter()
    watch = LossWatch(device, scaler, parameters=model.parameters())  # fp16: non-finite steps are the scaler's
    best_path = out_dir / "checkpoints" / "best.pt"
    for epoch in range(max_epochs):
        bar = tqdm(loaders["train"], desc=f"{task.name} epoch {epoch}", disable=not progress, leave=False)
        timer = StepTimer(device)
        for batch in timer.wrap(bar):
            warm = not task.frozen and step < task.frozen_warmup_steps
            frozen = task.frozen or warm
            _set_frozen(model, frozen)
            if not task.frozen and not warm and (reset_lr_every_step or step == task.frozen_warmup_steps):
                for g in optimizer.param_groups:
                    g["lr"] = lr
            with torch.autocast(device.type, enabled=amp):
                loss, parts = evaluator.loss(batch, frozen, device)
            loss = inject_nan(loss, step)  # tests only (SSL_MED_FAULT_NAN_STEP); inert otherwise
            watch.observe(loss, step, f"{task.name}, epoch {epoch}")
            watch.check()  # every step: this loop logs (reads) the loss every step anyway
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            log.log(step, **{"train/loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                             **{f"train/{k}": float(v) for k, v in parts.items()}, **timer.lap()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
            step += 1
            if max_steps and step >= max_steps:
                break
        val = evaluate(evaluator, loaders["validation"], device, amp)
        log.log(step, epoch=epoch, **{f"val/{k}": v for k, v in val.items()})
        scheduler.step(val["loss"])
        if val[task.monitor] > best + task.min_delta or best_epoch < 0:
            best, best_epoch, bad_epochs, best_val = val[task.monitor], epoch, 0, val
            # a frozen backbone never changes: the best epoch is its head (kept in memory, written at the end)
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                          if not (task.frozen and k.startswith("backbone."))}
        else:
            bad_epochs += 1
        if bad_epochs >= task.patience or (max_steps and step >= max_steps):  # Lightning EarlyStopping
            break
    model.load_state_dict(best_state, strict=not task.frozen)
    save_atomic({"model": best_state, "epoch": best_epoch, "val": best_val, "backbone_included": not task.frozen},
                best_path)
    test = evaluate(evaluator, loaders["test"], device, amp)
    log.log(step, **{f"test/{k}": v for k, v in test.items()})
    log.close()
    skipped = sorted({f for ds in splits.values() for f in ds.skipped})
    results = {"task": task.name, "learning_rate": lr, "seed": seed, "best_epoch": best_epoch, "steps": step,
               "val": best_val, "test": test, "wall_time_s": time.perf_counter() - t0, "skipped_samples": skipped}
    if skipped:
        print(f"{task.name}: skipped {len(skipped)} unreadable sample(s): {', '.join(skipped[:20])}")
    write_json_atomic(out_dir / "results.json", results)  # its presence marks a finished run
    return results


def write_json_atomic(path, obj):
    """A killed run never leaves a half-written results.json (which the protocol would take as finished)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
