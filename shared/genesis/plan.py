"""`--plan` of Semantic Genesis and TransVW pre-training: their configuration as a shared.plan.Plan."""

import torch

from shared.genesis.pretrain import build_model, genesis_loss
from shared.plan import Plan


def training_cubes(args):
    """Cubes per epoch as load_patterns selects them: nb_instances per class, per resolution file."""
    return args.nb_instances * args.cls_classes * args.nb_multires_patch


def pretrain_plan(args):
    amp = args.amp != "off"  # auto: bf16 on a GPU
    shape = (args.input_rows, args.input_cols, args.input_deps)
    n = args.batch_size
    cubes = args.plan_samples or training_cubes(args)

    def make_modules():
        return {"model": build_model(args.exp, args.cls_classes, args.width, args.standard_bn)}

    def make_step(modules):
        model = modules["model"]
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

        def step():  # Trainer.train_epoch's order: forward, loss, zero_grad, backward, step
            inputs, targets = torch.rand(n, 1, *shape), torch.rand(n, 1, *shape)
            labels = torch.randint(0, args.cls_classes, (n,))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = model(inputs)
            loss = genesis_loss(out, targets, labels, args.lambda_rec, args.lambda_cls)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return [optimizer], step

    net = "YNet3D (restoration + classification)" if args.exp == "en_de" else "encoder + classification head"
    return Plan(
        method=args.exp_name, precision="bf16" if amp else "fp32", checkpointing=False, sample="cube",
        config=f"{net}, width {args.width}, {args.cls_classes} classes; batch {n} cubes of "
               f"{'x'.join(map(str, shape))}",
        samples_per_step=n, pass_samples=cubes, total_samples=cubes * args.nb_epoch,
        schedule=f"up to {args.nb_epoch:,} epochs of {cubes:,} cubes ({args.nb_instances} per class x "
                 f"{args.cls_classes} classes x {args.nb_multires_patch} resolutions), early stopping after "
                 f"{args.patience} epochs without improvement: count per epoch",
        make_modules=make_modules, make_step=make_step,
        notes=["The restoration transforms (run on the GPU by default) are not counted: elementwise work on the "
               "batch before the forward, small next to the network's."])
