"""`lovt/train.py +experiment=... --plan`: prints the plan; memory estimate vs a measured CPU peak."""

import pytest
from hydra import compose, initialize_config_dir

from lovt.plan import main, plan_parser, pretrain_plan
from lovt.synthetic import build_tiny_language_model, tiny_overrides
from lovt.train import CONFIG_DIR
from shared.plan import measured_cpu_peak


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_language_model(tmp_path_factory.mktemp("bert") / "tiny_bert")


def test_plan_prints_and_matches_a_measured_peak(tiny_bert, capsys):
    overrides = ["+experiment=LoVT_100"] + tiny_overrides(tiny_bert, arch="resnet18")
    summary = main(overrides + ["--plan", "--plan_tokens", "40", "--plan_samples", "1000"])
    out = capsys.readouterr().out
    assert "Plan for lovt (LoVT_100)" in out and "reports of 40 tokens" in out and "100 epochs x 1,000 pairs" in out
    assert summary["trainable"] < summary["parameters"]  # BERT's embeddings and first 6 layers are frozen
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=overrides)
    plan = pretrain_plan(cfg, plan_parser().parse_args(["--plan", "--plan_tokens", "40"]))
    measured = measured_cpu_peak(plan)
    assert 0.75 <= summary["raw_peak_bytes"] / measured <= 1.25, (summary["raw_peak_bytes"], measured)
