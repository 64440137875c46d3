"""`make demo-dira` in a small configuration: its row (per-seed probe and fine-tuning scores, pre-trained vs
random init) and the same numbers when the same command runs twice."""

import json

from dira import demo


def _row(xray_root, runs):
    demo.main(["--sample", str(xray_root), "--runs", str(runs), "--dir_epochs", "1", "--dira_epochs", "1",
               "--ft_epochs", "1", "--seeds", "2", "--img_size", "32", "--train_images", "16"])
    return json.loads((runs / "demo" / "dira" / "row.json").read_text())


def test_demo_row_is_the_same_when_run_twice(dira_sample, tmp_path):
    first, second = _row(dira_sample, tmp_path / "a"), _row(dira_sample, tmp_path / "b")
    probe, finetune = first["metrics"]
    assert probe["kind"] == "probe" and finetune["kind"] == "fine-tune" and probe["seeds"] == [0, 1]
    assert first["data"].endswith("16 training X-rays") and first["steps"] > 0
    for m in first["metrics"]:
        assert len(m["pretrained"]) == len(m["random"]) == 2
        assert all(0 <= v <= 1 for v in m["pretrained"] + m["random"])
    assert probe["random"][0] != probe["random"][1]  # the seed changes the random init and the split
    assert first["metrics"] == second["metrics"] and first["final_loss"] == second["final_loss"]
