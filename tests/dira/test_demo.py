"""`make demo-dira` in a small configuration: its row (per-seed probe and fine-tuning scores, pre-trained vs
random init) and the same numbers when the same command runs twice."""

import json

from dira import demo


def _row(xray_root, runs):
    demo.main(["--sample", str(xray_root), "--runs", str(runs), "--dir_epochs", "1", "--dira_epochs", "1",
               "--ft_epochs", "1", "--ft_long_epochs", "2", "--seeds", "2", "--img_size", "32", "--train_images", "16"])
    return json.loads((runs / "demo" / "dira" / "row.json").read_text())


def test_demo_row_is_the_same_when_run_twice(dira_sample, tmp_path):
    first, second = _row(dira_sample, tmp_path / "a"), _row(dira_sample, tmp_path / "b")
    retrieval, restoration, probe, finetune, encoder_only = first["metrics"]
    assert retrieval["kind"] == restoration["kind"] == "pretext" and restoration["lower_is_better"]
    assert probe["kind"] == "probe" and finetune["kind"] == "fine-tune"
    assert probe["seeds"][:2] == ["r0f0", "r0f1"] and probe["test_train_ratio"] > 0  # grouped K-fold
    assert probe["trivial"][0] == 0.5 and len(probe["raw"]) == len(probe["seeds"])
    assert finetune["short"]["budget"] == "1 epochs" and "2 epochs" in finetune["name"]
    assert finetune["trivial"] == [0.0, 0.0] and len(finetune["raw"]) == 2
    assert first["data"].endswith("16 training X-rays") and first["steps"] > 0
    assert "6 of the 16 training masks (--anno_percent 40)" in finetune["name"]  # the label fraction, said
    assert "57 of 96 images positive" in probe["name"] and first["pretrain_seeds"].startswith("1 ")
    assert "0 of 27 trained on" in first["seen"]
    assert "encoder only" in encoder_only["name"] and encoder_only["random"] == finetune["short"]["random"]
    assert encoder_only["pretrained"] != finetune["short"]["pretrained"]  # the decoder's weights matter
    for m in (retrieval, restoration, finetune, encoder_only):
        assert len(m["pretrained"]) == len(m["random"]) == 2
    for m in first["metrics"]:
        assert all(0 <= v <= 1 for v in m["pretrained"] + m["random"])
    assert probe["random"][0] != probe["random"][5]  # each repetition of the folds draws its own random init
    assert first["metrics"] == second["metrics"] and first["final_loss"] == second["final_loss"]
