import warnings

import pytest
import torch

from voco import finetune, train


def _opt(lr):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_pretrain_warmup_cosine_matches_the_original_numbers():
    args = train.get_parser().parse_args([])
    opt = _opt(args.lr)
    sched = train.build_scheduler(args, opt)
    lr = lambda s: args.lr * sched.lr_lambda(s)  # noqa: E731
    assert lr(0) == 0.0 and lr(2500) == pytest.approx(5e-5) and lr(5000) == pytest.approx(1e-4)
    assert lr(127_500) == pytest.approx(5e-5) and lr(250_000) == pytest.approx(0.0, abs=1e-12)
    opt2 = train.build_optimizer(args, [torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(opt2, torch.optim.AdamW)
    group = opt2.param_groups[0]
    assert group["amsgrad"] and group["weight_decay"] == 0.01 and group["lr"] == 1e-4


def test_finetune_schedule_per_epoch_and_the_original_per_iteration_oscillation():
    args = finetune.get_parser().parse_args([])
    sched = finetune.build_scheduler(args, _opt(args.optim_lr))
    lr = lambda e: args.optim_lr * sched.lr_lambda(e)  # noqa: E731
    # per epoch (default): warm-up over 100 epochs, cosine to 0 at epoch 3000
    assert lr(50) == pytest.approx(1.5e-4) and lr(3000) == pytest.approx(0.0, abs=1e-12)
    assert lr(1550) == pytest.approx(1.5e-4)
    # the same function stepped per iteration (--lr_per_iteration) keeps oscillating, as the original:
    # 0 at iteration 3000 and 8800, back to 3e-4 at 5900 (period 5800)
    assert lr(8800) == pytest.approx(0.0, abs=1e-12) and lr(5900) == pytest.approx(3e-4)
    assert finetune.get_parser().parse_args(["--noamp", "False"]).noamp is False
    assert args.noamp is True and args.sw_batch_size == 16 and args.infer_overlap == 0.75


def test_finetune_warns_when_the_run_never_leaves_the_warmup():
    short = finetune.get_parser().parse_args(["--max_epochs", "10"])  # default 100-epoch warm-up
    with pytest.warns(UserWarning, match="the last at 0.00027, no cosine"):
        sched = finetune.build_scheduler(short, _opt(short.optim_lr))
    assert sched.lr_lambda(0) == 0.0 and short.optim_lr * sched.lr_lambda(9) == pytest.approx(2.7e-4)
    with pytest.warns(UserWarning, match="epoch 0 at LR 0"):  # the 1-epoch trap: LR 0 throughout
        finetune.build_scheduler(finetune.get_parser().parse_args(["--max_epochs", "1", "--warmup_epochs", "1"]),
                                 _opt(short.optim_lr))
    for argv in ([], ["--max_epochs", "10", "--warmup_epochs", "0"],
                 ["--max_epochs", "10", "--lr_per_iteration", "True"]):  # per iteration: epochs are iterations
        args = finetune.get_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            finetune.build_scheduler(args, _opt(args.optim_lr))
