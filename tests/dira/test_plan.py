"""`dira/train.py --plan` (no image folder needed): prints the plan; memory estimate vs a measured CPU peak."""

import pytest

from dira.plan import pretrain_plan
from dira.train import main, parse_args
from shared.plan import measured_cpu_peak

TINY = ["--plan", "--arch", "resnet18", "--img_size", "64", "--batch-size", "4", "--moco-k", "8", "--mlp",
        "--mode", "dira"]


def test_plan_prints_and_matches_a_measured_peak(capsys):
    """Generator (MoCo query + key U-Nets) then discriminator steps, as the training loop orders them."""
    summary = main(TINY)
    out = capsys.readouterr().out
    assert "Plan for dira --mode dira" in out and "patch discriminator" in out and "--batch-size" in out
    measured = measured_cpu_peak(pretrain_plan(parse_args(TINY)))
    assert 0.75 <= summary["raw_peak_bytes"] / measured <= 1.25, (summary["raw_peak_bytes"], measured)


def test_batch_per_node_is_split_over_plan_gpus():
    plan = pretrain_plan(parse_args(TINY + ["--plan_gpus", "2"]))
    assert plan.samples_per_step == 2 and "over 2 GPUs" in plan.config


def test_image_folder_is_still_required_to_train():
    with pytest.raises(SystemExit):
        parse_args(["--mode", "dir"])
