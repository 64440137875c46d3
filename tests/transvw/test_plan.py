"""`transvw/train.py --plan` prints the plan under TransVW's name (the engine is Semantic Genesis's)."""

from transvw.train import main


def test_plan_prints_under_transvw_name(capsys):
    summary = main(["--plan", "--width", "4", "--batch_size", "2", "--input_rows", "32", "--input_cols", "32",
                    "--input_deps", "16", "--cls_classes", "4", "--exp", "en", "--plan_mfu", "0.5"])
    out = capsys.readouterr().out
    assert "Plan for TransVW" in out and "encoder + classification head" in out and "at 50% of" in out
    assert summary["flops_per_sample"] > 0 and summary["trainable"] == summary["parameters"]
