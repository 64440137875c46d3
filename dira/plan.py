"""`--plan` of DiRA pre-training (train.py) as a shared.plan.Plan."""

import copy

import torch

from dira import engine, losses
from dira.models import Discriminator, build_generator
from shared.plan import Plan

CHESTXRAY14_TRAIN_IMAGES = 75312  # dataset/Xray14_train_official.txt


def pretrain_plan(args):
    from dira.train import build_optimizer

    per_gpu = max(1, args.batch_size // args.plan_gpus)  # --batch-size is the total of one node
    precision = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}[args.amp]
    images = args.plan_samples or CHESTXRAY14_TRAIN_IMAGES
    s = args.img_size
    plain = copy.copy(args)
    plain.encoder_weights = None  # no download and no file in a plan: same shapes

    def make_modules():
        return {"generator": build_generator(plain), "discriminator": Discriminator(channels=args.out_channels)}

    def make_step(modules):
        model, disc = modules["generator"], modules["discriminator"]
        opt_g = build_optimizer(model, args, per_gpu * args.plan_gpus)
        opt_d = torch.optim.Adam(disc.parameters(), args.disc_learning_rate, betas=(0.5, 0.999))
        cpu = torch.device("cpu")

        def step():  # engine.train_one_epoch: the generator steps, then (dira) the discriminator
            batch = [torch.rand(per_gpu, 3, s, s), torch.rand(per_gpu, 3, s, s),
                     torch.rand(per_gpu, args.out_channels, s, s)]
            with engine.autocast(cpu, args.amp):
                total, _, restored = engine.generator_losses(model, disc, batch, args)
            opt_g.zero_grad(set_to_none=True)
            total.backward()
            opt_g.step()
            if args.mode == "dira":
                opt_d.zero_grad(set_to_none=True)
                with engine.autocast(cpu, args.amp):
                    d_loss = losses.discriminator_loss(disc(batch[2]), disc(restored.detach()))
                d_loss.backward()
                opt_d.step()

        optimizers = [opt_g, opt_d] if args.mode == "dira" else [opt_g]
        return optimizers, step

    branch = {"moco": f"MoCo v2 (queue {args.moco_k:,})", "barlowtwins": "Barlow Twins",
              "simsiam": "SimSiam"}[args.method]
    net = f"{args.arch} U-Net" if args.mode != "di" else args.arch
    return Plan(
        method=f"dira --mode {args.mode}", precision=precision, checkpointing=False, sample="image",
        config=f"{net} + {branch}" + (" + patch discriminator" if args.mode == "dira" else "")
               + f"; {per_gpu} pairs of {s}x{s} views per GPU per step"
               + (f" (--batch-size {args.batch_size} over {args.plan_gpus} GPUs)" if args.plan_gpus > 1 else ""),
        samples_per_step=per_gpu, total_samples=args.epochs * images, pass_samples=images,
        schedule=f"{args.epochs:,} epochs x {images:,} images"
                 + (" (ChestX-ray14 official train list)" if not args.plan_samples else "")
                 + "; validation not counted",
        make_modules=make_modules, make_step=make_step, batch_flag="--batch-size", batch_per_flag=1,
        notes=["fp16's GradScaler is left out of the planned step (no memory of its own)."]
        if precision == "fp16" else [])
