"""Pre-training of Semantic Genesis and TransVW: self-classification + self-restoration.

The two originals' `pytorch/train.py` are one program with two names; each method folder's train.py
passes its name and defaults to `build_parser` and `main` here.

    loss = lambda_rec * MSE(restored, target) + lambda_cls * CE(logits, class)     (exp 'en_de', YNet3D)
    loss = CE(logits, class)                                                      (exp 'en', encoder only)

Adam(lr), StepLR(40, 0.5) stepped after each epoch, early stopping on the validation loss (patience 50).
Runs on CPU, one GPU, or N GPUs/nodes under torchrun (DDP; rank 0 logs and writes).
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from shared.checkpoint import (
    fault_kill_at_step,
    load_checkpoint,
    load_state,
    rng_state,
    save_atomic,
    set_rng_state,
)
from shared.distributed import barrier, cleanup, init_distributed, seed_everything
from shared.genesis.amp import amp_guard, use_amp
from shared.genesis.data import EpochBatches, RestorationBatches, batch_rng, load_patterns
from shared.genesis.probe import add_probe_args, online_probe
from shared.genesis.restoration import TRANSFORMS, central_slices, restoration_pair
from shared.guards import LossWatch, inject_nan
from shared.plan import add_plan_args
from shared.runfolder import check_checkpoint_run, claim_run_folder, run_file
from shared.runlog import RunLogger, save_image_grid
from shared.startup import check_shared_memory, cudnn_autotune
from shared.timing import StepTimer
from shared.unet3d import ClassificationNet3D, YNet3D
from shared.weights import load_pretrained

ORIGINAL_KEYS = ("epoch", "state_dict", "optimizer_state_dict", "num_epoch_no_improvement", "best_loss",
                 "best_acc")


def build_parser(description, exp_name, data_dir=None):
    """The original flags with their defaults, then this re-implementation's additions."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default=data_dir, help="folder of the pattern generator's .npy files")
    p.add_argument("--exp", default="en_de", choices=["en_de", "en"],
                   help="en_de: YNet3D (restoration + classification); en: encoder + head only")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the original ignored it)")
    p.add_argument("--cls_classes", type=int, default=44)
    p.add_argument("--nb_instances", type=int, default=200)
    p.add_argument("--nb_val_instances", type=int, default=30)
    p.add_argument("--nb_multires_patch", type=int, default=3)
    p.add_argument("--lambda_rec", type=float, default=1.0)
    p.add_argument("--lambda_cls", type=float, default=0.01)
    p.add_argument("--multi_gpu", action="store_true",
                   help="accepted for compatibility; use torchrun for several GPUs (DDP)")
    p.add_argument("--pre_path", default=None, help="warm start from this checkpoint (e.g. an 'en' run)")
    p.add_argument("--input_rows", type=int, default=64)
    p.add_argument("--input_cols", type=int, default=64)
    p.add_argument("--input_deps", type=int, default=32)
    p.add_argument("--verbose", type=int, default=1)
    p.add_argument("--notes", default=None)
    # additions
    p.add_argument("--output_dir", default="Checkpoints",
                   help="run folder root; checkpoints go to <output_dir>/<exp>/ as in the original")
    p.add_argument("--exp_name", default=exp_name,
                   help="checkpoint file stem; the run's other files in <output_dir>/<exp>/ are <exp_name>.*")
    p.add_argument("--nb_epoch", type=int, default=10000)
    p.add_argument("--patience", type=int, default=50)
    p.add_argument("--step_size", type=int, default=40, help="StepLR period (epochs)")
    p.add_argument("--gamma", type=float, default=0.5, help="StepLR factor")
    p.add_argument("--width", type=int, default=32, help="first conv's channels (32 = the original)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from a checkpoint ('auto': <output_dir>/<exp>/<exp_name>.last.pt)")
    p.add_argument("--warped_target", action="store_true",
                   help="restore the elastically warped cube (the original restores the undeformed one)")
    p.add_argument("--transform_on", default="auto", choices=["auto", "device", "workers", "cpu"],
                   help="where the restoration transforms run: the training device, batched after the copy of "
                        "the raw cubes, or the loader workers ('cpu' = 'workers'); auto: device on a GPU")
    p.add_argument("--amp", default="auto", choices=["auto", "on", "off"], help="bf16 autocast (auto: on GPU)")
    p.add_argument("--channels_last", default="off", choices=["on", "off"],
                   help="channels_last_3d memory format for the network and its inputs (cuDNN NDHWC kernels)")
    p.add_argument("--standard_bn", action="store_true",
                   help="BatchNorm with running statistics in eval mode (the original always uses batch stats)")
    p.add_argument("--keep_blank_resolutions", action="store_true",
                   help="train on all-zero resolution files too, as the original did")
    p.add_argument("--max_steps", type=int, default=None, help="stop after this many training steps")
    p.add_argument("--n_images", type=int, default=4, help="cubes in the per-epoch PNG grid")
    p.add_argument("--trusted", action="store_true", help="allow unpickling --pre_path with weights_only=False")
    p.add_argument("--wandb", default=None, help="wandb project (off by default)")
    p.add_argument("--device", default=None, help="force a device (cpu, cuda, cuda:1)")
    add_probe_args(p)
    add_plan_args(p, "training cubes per epoch (default: nb_instances x cls_classes x nb_multires_patch)")
    return p


def run_identity(args):
    """The method (its checkpoint name) and the settings a resumed run must share with the first part."""
    keys = ("exp", "cls_classes", "width", "standard_bn", "nb_multires_patch", "nb_instances",
            "nb_val_instances", "keep_blank_resolutions", "lambda_rec", "lambda_cls", "lr", "batch_size",
            "seed", "warped_target")
    return {"method": args.exp_name, **{k: getattr(args, k) for k in keys},
            "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None}


def build_model(exp, cls_classes, width=32, standard_bn=False):
    if exp == "en_de":
        return YNet3D(n_class=1, cls_classes=cls_classes, width=width, always_batch_stats=not standard_bn)
    return ClassificationNet3D(cls_classes=cls_classes, width=width, always_batch_stats=not standard_bn)


def genesis_loss(model_out, target, labels, lambda_rec=1.0, lambda_cls=0.01):
    """(total, mse, ce): lambda_rec * MSE + lambda_cls * CE for 'en_de'; CE alone for 'en' (logits only)."""
    if isinstance(model_out, tuple):
        restored, logits = model_out
        mse = F.mse_loss(restored.float(), target)
        ce = F.cross_entropy(logits.float(), labels)
        return lambda_rec * mse + lambda_cls * ce, mse, ce
    ce = F.cross_entropy(model_out.float(), labels)
    return ce, torch.zeros_like(ce), ce


def checkpoint_dict(model, optimizer, epoch, no_improvement, best_loss, best_acc):
    """The original's six keys, holding tensors and plain Python numbers only."""
    return {"epoch": int(epoch), "state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "num_epoch_no_improvement": int(no_improvement), "best_loss": float(best_loss),
            "best_acc": float(best_acc)}


class Trainer:
    """Holds the model, optimiser, schedule, loaders and early-stopping state of one run."""

    def __init__(self, args, info=None):
        self.args = args
        self.info = info or init_distributed(device=args.device)
        self.device = self.info.device
        seed_everything(args.seed, self.info.rank)
        self.run_dir = Path(args.output_dir) / args.exp
        self.ckpt_path = self.run_dir / f"{args.exp_name}.pt"
        self.last_path = run_file(self.run_dir, args.exp_name, "last.pt")
        self.on_device = args.transform_on == "device" or (args.transform_on == "auto" and self.device.type == "cuda")
        self.amp = use_amp(args.amp, self.device)
        cudnn_autotune(self.device)  # fixed-size cubes: cuDNN picks its fastest 3D convolutions once

        if args.data_dir is None:
            raise ValueError("--data_dir is required (the pattern generator's output folder)")
        self.train_cubes, self.val_cubes = load_patterns(
            args.data_dir, args.cls_classes, args.nb_instances, args.nb_val_instances, args.nb_multires_patch,
            skip_blank=not args.keep_blank_resolutions)
        self.model = build_model(args.exp, args.cls_classes, args.width, args.standard_bn).to(self.device)
        self.memory_format = torch.channels_last_3d if args.channels_last == "on" else torch.contiguous_format
        if args.channels_last == "on":
            self.model.to(memory_format=self.memory_format)
        if args.pre_path:
            print(f"--pre_path {args.pre_path}:")
            load_pretrained(self.model, args.pre_path, trusted=args.trusted, verbose=self.info.is_main)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=args.step_size, gamma=args.gamma)
        self.net = self.model
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if args.multi_gpu and not self.info.distributed:
            print("note: --multi_gpu (DataParallel) is replaced by DDP; launch with torchrun for several GPUs")

        self.start_epoch, self.step = 0, 0
        self.best_loss, self.best_acc, self.no_improvement = 100000.0, 0.0, 0
        # Semantic Genesis and TransVW both default to Checkpoints/en_de: each run's files carry its --exp_name
        self.identity = run_identity(args)
        claim_run_folder(self.run_dir, args.exp_name, self.identity, resume=bool(args.resume),
                         enabled=self.info.is_main)
        barrier()  # rank 0 may have renamed an earlier layout's files, which --resume reads
        self.logger = RunLogger(self.run_dir, wandb=args.wandb, enabled=self.info.is_main, name=args.exp_name,
                                config={k: v for k, v in vars(args).items()})
        self.probe = online_probe(args, self.model, self.logger, self.device, self.info.is_main)
        self.loss_watch = LossWatch(self.device, parameters=self.model.parameters())  # no scaler: bf16 or fp32
        if args.resume:
            self.resume(args.resume)
        cube_bytes = 4 * args.input_rows * args.input_cols * args.input_deps  # float32, one channel
        check_shared_memory(args.num_workers, args.batch_size * cube_bytes * (1 if self.on_device else 2),
                            "--num_workers")  # raw cubes, or transformed inputs and targets
        self.train_loader, self.train_batches = self._loader(self.train_cubes, "train", shuffle=True)
        self.val_loader, self.val_batches = self._loader(self.val_cubes, "val", shuffle=True)

    def _loader(self, cubes, split, shuffle):
        a = self.args
        batches = EpochBatches(len(cubes), a.batch_size, shuffle, a.seed, self.info.rank, self.info.world_size)
        data = RestorationBatches(cubes, split, a.seed, self.info.rank, transform=not self.on_device,
                                  warped_target=a.warped_target)
        loader = DataLoader(data, batch_size=None, sampler=batches, num_workers=a.num_workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=a.num_workers > 0)
        return loader, batches

    # ------------------------------------------------------------------------------------ state
    def state(self, epoch):
        """What --resume needs on top of the original six keys."""
        ckpt = checkpoint_dict(self.model, self.optimizer, epoch, self.no_improvement, self.best_loss,
                               self.best_acc)
        ckpt.update(scheduler_state_dict=self.scheduler.state_dict(), global_step=int(self.step),
                    rng_state=rng_state(), run=self.identity)
        return ckpt

    def resume(self, path):
        path = self.last_path if path == "auto" else Path(path)
        if not path.is_file():
            if self.args.resume == "auto":
                print(f"--resume: no {path} yet, starting from scratch")
                return
            raise FileNotFoundError(f"--resume {path}: no such checkpoint")
        ckpt = load_checkpoint(path, map_location=self.device)
        missing = [k for k in ("state_dict", "optimizer_state_dict", "epoch") if k not in ckpt]
        if missing:
            raise ValueError(f"{path}: not a pre-training checkpoint (missing {missing})")
        check_checkpoint_run(ckpt, self.identity, path)
        load_state(self.model, ckpt["state_dict"], path)
        load_state(self.optimizer, ckpt["optimizer_state_dict"], path, "optimizer state")
        if "scheduler_state_dict" in ckpt:
            self.scheduler.load_state_dict(ckpt["scheduler_state_dict"])
        self.start_epoch = int(ckpt["epoch"])
        self.best_loss, self.best_acc = float(ckpt["best_loss"]), float(ckpt.get("best_acc", 0.0))
        self.no_improvement = int(ckpt["num_epoch_no_improvement"])
        self.step = int(ckpt.get("global_step", 0))
        if "rng_state" in ckpt:
            set_rng_state(ckpt["rng_state"])
        dropped = self.logger.truncate(self.step)  # rows logged after the checkpoint come again
        print(f"resumed from {path} at epoch {self.start_epoch} (best loss {self.best_loss:.5f})"
              + (f"; dropped {dropped} metrics rows logged after it" if dropped else ""))

    # ------------------------------------------------------------------------------------- loop
    def _prepare(self, batch, split):
        if self.on_device:
            cubes = batch["cubes"].to(self.device, non_blocking=True)
            rng = batch_rng(self.args.seed, split, self.info.rank, batch["epoch"], batch["batch"])
            inputs, targets, choice = restoration_pair(cubes, rng, warped_target=self.args.warped_target)
        else:
            inputs = batch["inputs"].to(self.device, non_blocking=True)
            targets = batch["targets"].to(self.device, non_blocking=True)
            choice = batch["choice"]
        inputs = inputs.contiguous(memory_format=self.memory_format)
        return inputs, targets, batch["labels"].to(self.device, non_blocking=True), choice

    def _forward(self, inputs, targets, labels):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.net(inputs)
        return out, genesis_loss(out, targets, labels, self.args.lambda_rec, self.args.lambda_cls)

    def train_epoch(self, epoch):
        self.net.train()
        self.train_batches.set_epoch(epoch)
        sums = torch.zeros(4, device=self.device)  # loss, mse, ce, n
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1} train", disable=not self.info.is_main,
                   leave=False)
        timer = StepTimer(self.device)
        for batch in timer.wrap(bar):
            fault_kill_at_step(self.step + 1)  # test-only hook, inert unless SSL_MED_FAULT_KILL_STEP is set
            inputs, targets, labels, _ = self._prepare(batch, "train")
            _, (loss, mse, ce) = self._forward(inputs, targets, labels)
            loss = inject_nan(loss, self.step + 1)
            self.loss_watch.observe(loss, self.step + 1, f"epoch {epoch + 1}")  # CPU: stops before backward
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            n = inputs.shape[0]
            sums += torch.stack([loss.detach() * n, mse.detach() * n, ce.detach() * n,
                                 torch.tensor(float(n), device=self.device)])
            if self.step % 5 == 0 or self.step == 1:  # the host reads the loss only here
                self.loss_watch.check()
                bar.set_postfix(loss=f"{loss.item():.4f}")
                self.logger.log(self.step, train_loss=loss.item(), train_mse=mse.item(), train_ce=ce.item(),
                                **timer.lap())
            if self.args.max_steps and self.step >= self.args.max_steps:
                break
        self.loss_watch.check()  # before validation and the checkpoints of this epoch
        sums = _all_reduce(sums)
        return (sums[:3] / sums[3].clamp(min=1)).tolist()

    @torch.no_grad()
    def validate(self, epoch):
        self.net.eval()
        self.val_batches.set_epoch(0)  # the same batches every epoch, so losses compare across epochs
        sums = torch.zeros(5, device=self.device)  # loss, mse, ce, correct, n
        picture = None
        for batch in tqdm(self.val_loader, desc=f"epoch {epoch + 1} val", disable=not self.info.is_main,
                          leave=False):
            inputs, targets, labels, choice = self._prepare(batch, "val")
            out, (loss, mse, ce) = self._forward(inputs, targets, labels)
            logits = out[1] if isinstance(out, tuple) else out
            n = inputs.shape[0]
            sums += torch.stack([loss * n, mse * n, ce * n, (logits.argmax(1) == labels).sum().float(),
                                 torch.tensor(float(n), device=self.device)])
            if picture is None and isinstance(out, tuple):
                k = self.args.n_images
                picture = (targets[:k], inputs[:k], out[0][:k].float(), choice[:k])
        sums = _all_reduce(sums)
        n = sums[4].clamp(min=1)
        if picture is not None and self.info.is_main and self.args.n_images > 0:
            self.save_picture(epoch, *picture)
        return (sums[0] / n).item(), (sums[1] / n).item(), (sums[2] / n).item(), (sums[3] / n).item()

    def save_picture(self, epoch, original, transformed, restored, choice):
        rows = [list(r) for r in zip(central_slices(original), central_slices(transformed),
                                     central_slices(restored))]
        save_image_grid(rows, self.run_dir / "images" / self.args.exp_name / f"epoch_{epoch + 1:04d}.png",
                        titles=["original", "transformed", "restored"],
                        row_labels=[TRANSFORMS[int(c)] for c in choice], vmin=0, vmax=1)

    def fit(self):
        a = self.args
        if self.info.is_main:
            print(f"{len(self.train_cubes)} training / {len(self.val_cubes)} validation cubes of "
                  f"{self.train_cubes.cube_shape}; {sum(p.numel() for p in self.model.parameters()):,} "
                  f"parameters; transforms on {'the device' if self.on_device else 'the loader workers'}")
        for epoch in range(self.start_epoch, a.nb_epoch):
            t0 = time.time()
            train_loss, train_mse, train_ce = self.train_epoch(epoch)
            val_loss, val_mse, val_ce, val_acc = self.validate(epoch)
            lr = self.optimizer.param_groups[0]["lr"]
            self.logger.log(self.step, epoch=epoch + 1, train_loss_epoch=train_loss, val_loss=val_loss,
                            val_mse=val_mse, val_ce=val_ce, val_acc=val_acc, lr=lr)
            self.probe(epoch + 1, log_step=self.step)
            improved = val_loss < self.best_loss
            if improved:
                self.best_loss, self.best_acc, self.no_improvement = val_loss, val_acc, 0
                if self.info.is_main:
                    save_atomic(checkpoint_dict(self.model, self.optimizer, epoch + 1, 0, val_loss, val_acc),
                                self.ckpt_path)
            else:
                self.no_improvement += 1
            if self.info.is_main:
                print(f"epoch {epoch + 1}: train {train_loss:.5f} (mse {train_mse:.5f}, ce {train_ce:.4f}) "
                      f"val {val_loss:.5f} acc {val_acc:.3f} lr {lr:.2e} {time.time() - t0:.1f}s"
                      + (f" -> saved {self.ckpt_path}" if improved else
                         f" (no improvement for {self.no_improvement} epochs)"))
            stop = self.no_improvement >= a.patience or (a.max_steps and self.step >= a.max_steps)
            self.scheduler.step()
            if self.info.is_main:
                save_atomic(self.state(epoch + 1), self.last_path)
            barrier()
            if stop:
                if self.info.is_main and self.no_improvement >= a.patience:
                    print(f"early stopping: no improvement for {a.patience} epochs")
                break
        self.logger.close()
        return {"best_loss": self.best_loss, "best_acc": self.best_acc, "steps": self.step}


def _all_reduce(t):
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t


def main(args):
    """Run one pre-training from parsed arguments; returns the summary dict (--plan: the plan's)."""
    if args.plan:
        from shared.genesis.plan import pretrain_plan
        from shared.plan import run_plan
        return run_plan(pretrain_plan(args), args)
    info = init_distributed(device=args.device)
    try:
        with amp_guard(info.device, use_amp(args.amp, info.device)):  # CPU bf16: oneDNN off
            return Trainer(args, info).fit()
    finally:
        cleanup()

