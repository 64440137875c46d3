"""`voco/train.py --plan` and `voco/finetune.py --plan`: print the plan; memory estimate vs a measured CPU peak
(the comparisons run a SwinUNETR for real and are marked slow; Semantic Genesis, DiRA and LoVT compare in the
default suite)."""

import pytest

from shared.plan import estimate, measured_cpu_peak
from voco import finetune, train
from voco.plan import finetune_plan, pretrain_plan

TINY_PRETRAIN = ["--feature_size", "12", "--hidden_dim", "32", "--out_dim", "32", "--window_size", "2",
                 "--roi_x", "32", "--double_input", "True", "--num_crops", "1", "--sw_batch_size", "1",
                 "--batch_size", "1", "--noamp", "True"]
TINY_FINETUNE = ["--feature_size", "12", "--window_size", "2", "--roi_x", "64", "--roi_y", "32", "--roi_z", "32",
                 "--sw_batch_size", "1", "--out_channels", "3"]


def _within_25_percent(plan):
    estimated, measured = estimate(plan, block=0).raw_peak, measured_cpu_peak(plan)
    assert 0.75 <= estimated / measured <= 1.25, (estimated, measured)


def test_pretrain_plan_prints(capsys):
    summary = train.main(TINY_PRETRAIN + ["--plan", "--num_steps", "1000"])
    out = capsys.readouterr().out
    assert "Plan for voco on H100" in out and "student + EMA teacher" in out and "1,000 steps x 1 volumes" in out
    assert summary["trainable"] * 2 == summary["parameters"]  # the teacher has no gradients


def test_finetune_plan_prints(capsys):
    finetune.main(TINY_FINETUNE + ["--plan", "--plan_gpu", "L40S"])
    out = capsys.readouterr().out
    assert "Plan for voco fine-tuning (BTCV) on L40S" in out and "1 patches of 64x32x32" in out
    assert "--sw_batch_size" in out  # the flag named for the largest batch that fits


@pytest.mark.slow
def test_pretrain_estimate_matches_a_measured_peak():
    """Student + EMA teacher with activation checkpointing (recomputation in the measured run too)."""
    _within_25_percent(pretrain_plan(train.get_parser().parse_args(TINY_PRETRAIN)))


@pytest.mark.slow
def test_finetune_estimate_matches_a_measured_peak():
    _within_25_percent(finetune_plan(finetune.get_parser().parse_args(TINY_FINETUNE)))


def test_finetune_defaults_are_the_originals():
    plan = finetune_plan(finetune.get_parser().parse_args(["--plan"]))
    assert (plan.precision, plan.checkpointing, plan.samples_per_step) == ("fp32", True, 16)
    assert plan.total_samples == 3000 * 24 * 16


@pytest.mark.slow  # ~25 s of CPU: two tiny SwinUNETR steps on fake tensors
def test_v2_and_omni_plans_print(capsys):
    tiny = ["--feature_size", "12", "--hidden_dim", "32", "--out_dim", "32", "--window_size", "2", "--num_crops", "2",
            "--sw_batch_size", "1", "--batch_size", "1", "--plan", "--num_steps", "1000", "--plan_gpus", "8"]
    v2 = train.main(["--recipe", "v2", *tiny])
    out = capsys.readouterr().out
    assert "Plan for voco v2-F=12" in out and "1,000 steps x 1 volumes x 8 GPU(s) = 8,000 volumes" in out
    omni = train.main(["--recipe", "omni", "--out_channels", "3", *tiny])
    assert "Plan for voco omni-F=12" in capsys.readouterr().out
    assert omni["flops_per_sample"] > v2["flops_per_sample"]  # the decoders, the labelled patches, the teacher
    frozen_v2, frozen_omni = (s["parameters"] - s["trainable"] for s in (v2, omni))
    assert frozen_omni > frozen_v2  # the EMA head, and for omni the frozen SwinUNETR too
