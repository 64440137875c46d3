"""`--plan` of VoCo pre-training (train.py) and BTCV fine-tuning (finetune.py) as shared.plan.Plans."""

import copy

import torch

from shared.plan import Plan

VOCO_10K_VOLUMES = 9863       # the original's pre-training set (7 public CT sets)
PRECT_160K_VOLUMES = 160_000  # Large-Scale-Medical's PreCT-160K (v2's pre-training set; "160K" as it is named)
BTCV_TRAINING_CASES = 24      # dataset_0.json's "training" list
SCALER_NOTE = ("fp16's GradScaler is left out of the planned step (it unscales in place: no memory of its own).")


def _dtype(precision):
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def pretrain_plan(args):
    """The plan of train.py's args: --recipe v1 (CVPR 2024), v2 or omni (Large-Scale-Medical)."""
    return v1_plan(args) if args.recipe == "v1" else v2_plan(args)


def v1_plan(args):
    from voco.train import build_model, build_optimizer

    precision = "fp32" if args.noamp else {"float16": "fp16", "bfloat16": "bf16"}[args.amp_dtype]
    b, s, k, r = args.batch_size, args.sw_batch_size, args.num_crops ** 2, args.roi_x
    volumes = args.plan_samples or VOCO_10K_VOLUMES

    def make_modules():
        return {"model": build_model(args)}

    def make_step(modules):
        model = modules["model"]
        optimizer = build_optimizer(args, [p for p in model.parameters() if p.requires_grad])

        def step():  # engine.train_step: student + EMA + teacher forward, loss, backward, step, zero_grad
            img, crops = torch.rand(b * s, 1, r, r, r), torch.rand(b * k, 1, r, r, r)
            labels = torch.rand(b, s, k, dtype=torch.float64)
            with torch.autocast("cpu", dtype=_dtype(precision) or torch.float32, enabled=precision != "fp32"):
                pos, neg, reg, _ = model(img, crops, labels)
                loss = pos + neg + reg
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return [optimizer], step

    side = f"{2 * r}x{r}x{r}" if args.double_input else f"{r}^3"
    return Plan(
        method="voco", precision=precision, checkpointing=args.use_checkpoint, sample="volume",
        config=f"SwinUNETR v2 F={args.feature_size} student"
               + ("" if args.single_network else " + EMA teacher")
               + f", head {args.hidden_dim}-{args.out_dim}; {b} volume(s) per step, each {s} random + {k} base "
                 f"crops resized to {side}",
        samples_per_step=b, total_samples=args.num_steps * b, pass_samples=volumes,
        schedule=f"{args.num_steps:,} steps x {b} volumes = {args.num_steps * b:,} volumes "
                 f"(a pass: {volumes:,} volumes{', the 10k set' if not args.plan_samples else ''})",
        make_modules=make_modules, make_step=make_step,
        notes=[SCALER_NOTE] if precision == "fp16" else [])


def finetune_plan(args):
    from monai.losses import DiceCELoss

    from voco.finetune import build_model

    precision = "fp32" if args.noamp else {"float16": "fp16", "bfloat16": "bf16"}[args.amp_dtype]
    patches = args.batch_size * args.sw_batch_size  # RandCropByPosNegLabeld: sw_batch_size patches per volume
    roi = (args.roi_x, args.roi_y, args.roi_z)
    cases = args.plan_samples or BTCV_TRAINING_CASES
    plain = copy.copy(args)  # nothing to read: no pre-trained or resumed weights in a plan
    plain.use_ssl_pretrained, plain.resume_ckpt = False, False

    def make_modules():
        return {"model": build_model(plain, torch.device("cpu"))}

    def make_step(modules):
        model = modules["model"]
        loss_fn = (DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=args.smooth_nr,
                              smooth_dr=args.smooth_dr) if args.squared_dice else
                   DiceCELoss(include_background=False, to_onehot_y=True, softmax=True))
        optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(args.optim_name)
        optimizer = (optimizer(model.parameters(), lr=args.optim_lr, weight_decay=args.reg_weight) if optimizer else
                     torch.optim.SGD(model.parameters(), lr=args.optim_lr, momentum=args.momentum, nesterov=True,
                                     weight_decay=args.reg_weight))

        def step():  # finetune.main's loop: grads to None, forward + loss, backward, step
            image = torch.rand(patches, args.in_channels, *roi)
            label = torch.randint(0, args.out_channels, (patches, 1, *roi)).float()
            for p in model.parameters():
                p.grad = None
            with torch.autocast("cpu", dtype=_dtype(precision) or torch.float32, enabled=precision != "fp32"):
                loss = loss_fn(model(image), label)
            loss.backward()
            optimizer.step()

        return [optimizer], step

    return Plan(
        method="voco fine-tuning (BTCV)", precision=precision, checkpointing=args.use_checkpoint, sample="patch",
        config=f"SwinUNETR v2 F={args.feature_size}, {args.out_channels} classes; {args.batch_size} volume(s) x "
               f"{args.sw_batch_size} patches of {'x'.join(map(str, roi))} per step",
        samples_per_step=patches, total_samples=args.max_epochs * cases * args.sw_batch_size,
        pass_samples=cases * args.sw_batch_size,
        schedule=f"{args.max_epochs:,} epochs x {cases} cases x {args.sw_batch_size} patches "
                 f"(sliding-window validation every {args.val_every} epochs not counted)",
        make_modules=make_modules, make_step=make_step, batch_flag="--sw_batch_size", batch_per_flag=args.batch_size,
        notes=[SCALER_NOTE] if precision == "fp16" else [])


def v2_plan(args):
    """--recipe v2 / omni: the shared backbone with student and EMA-teacher heads on B x (S + K) crops of
    roi^3; omni adds the segmentation of S labelled patches and, in its second half (planned here, the
    larger step), the frozen teacher's pseudo-labels of the random crops and their DiceCE."""
    import argparse

    from voco.train import build_optimizer
    from voco.v2 import recipe
    from voco.v2.omni import dice_ce

    precision = "fp32" if args.noamp else {"float16": "fp16", "bfloat16": "bf16"}[args.amp_dtype]
    b, s, k, r = args.batch_size, args.sw_batch_size, args.num_crops ** 2, args.roi_x
    omni = args.recipe == "omni"
    volumes = args.plan_samples or PRECT_160K_VOLUMES
    cpu = argparse.Namespace(device=torch.device("cpu"), distributed=False, rank=0, world_size=1)
    gpus = args.plan_gpus  # --batch_size is per process (GPU), as in the original's torchrun scripts

    def make_modules():
        model = recipe.build_model(args, cpu)[0]
        modules = {"model": model}
        if omni:  # the frozen copy of the whole SwinUNETR that labels the random crops
            modules["frozen_teacher"] = copy.deepcopy(model.backbone).eval().requires_grad_(False)
        return modules

    def make_step(modules):
        model = modules["model"]
        optimizer = build_optimizer(args, [p for p in model.parameters() if p.requires_grad])

        def step():  # voco.v2.engine.train_step / voco.v2.omni.OmniStep after the switch
            img, crops = torch.rand(b * s, 1, r, r, r), torch.rand(b * k, 1, r, r, r)
            labels = torch.rand(b, s, k, dtype=torch.float64)
            with torch.autocast("cpu", dtype=_dtype(precision) or torch.float32, enabled=precision != "fp32"):
                if omni:
                    seg_img = torch.rand(s, 1, r, r, r)
                    seg_label = torch.randint(0, args.out_channels, (s, 1, r, r, r)).float()
                    intra, inter, reg, seg, semi_logits = model(img, crops, labels, seg_img, seg_label,
                                                                self_train=True)
                    with torch.no_grad():
                        pseudo = modules["frozen_teacher"].segment(img).argmax(1, keepdim=True)
                    loss = intra + inter + reg + seg + dice_ce(semi_logits, pseudo)
                else:
                    intra, inter, reg, _ = model(img, crops, labels)
                    loss = intra + inter + reg
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return [optimizer], step

    size = {48: "B", 96: "L", 192: "H"}.get(args.feature_size, f"F={args.feature_size}")
    extra = f" + {s} labelled patches (DiceCE) + frozen-teacher pseudo-labels" if omni else ""
    return Plan(
        method=f"voco {args.recipe}-{size}", precision=precision, checkpointing=args.use_checkpoint, sample="volume",
        config=f"shared SwinUNETR v2 F={args.feature_size}{' with decoders' if omni else ''}, student + EMA "
               f"teacher heads {args.hidden_dim}-{args.out_dim}; {b} volume(s) per step, each {s} random + {k} "
               f"base crops of {r}^3{extra}",
        samples_per_step=b, total_samples=args.num_steps * b * gpus, pass_samples=volumes,
        schedule=f"{args.num_steps:,} steps x {b} volumes x {gpus} GPU(s) = {args.num_steps * b * gpus:,} volumes "
                 f"(a pass: {volumes:,} volumes{', PreCT-160K' if not args.plan_samples else ''})",
        make_modules=make_modules, make_step=make_step,
        notes=[SCALER_NOTE] if precision == "fp16" else [])
