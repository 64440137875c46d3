"""`make demo-semantic_genesis` wiring, shortened: self-discovery -> pre-training -> nodule segmentation from
the pre-trained weights and from random init, one row for the summary table."""

import json

from semantic_genesis import demo


def test_demo_writes_its_row_and_per_seed_scores(sample_data, tmp_path):
    demo.main(["--sample", str(sample_data), "--runs", str(tmp_path), "--pretrain_epochs", "1",
               "--finetune_epochs", "1", "--finetune_seeds", "1"])
    row = json.loads((tmp_path / "demo" / "semantic_genesis" / "row.json").read_text())
    mse, accuracy, probe, voxel_dice, cube_dice = row["metrics"]
    assert mse["kind"] == accuracy["kind"] == "pretext" and mse["lower_is_better"] and len(mse["trivial"]) == 1
    assert probe["kind"] == "probe" and "AUROC" in probe["name"] and probe["seeds"] == [0]
    assert probe["trivial"] == [0.5] and 0 <= probe["raw"][0] <= 1
    for finetune in (voxel_dice, cube_dice):
        assert finetune["kind"] == "fine-tune" and "nodule segmentation" in finetune["name"] and row["steps"] > 0
        assert "trivial" in finetune and "raw" in finetune
    assert voxel_dice["trivial"] == [0.0] and cube_dice["trivial"][0] > 0  # empty cubes score 1 when empty
    for m in row["metrics"]:
        assert all(0 <= v <= 1 for v in m["pretrained"] + m["random"])
    assert "pre-training cubes came from 12 of them" in row["seen"]
    seeds = json.loads((tmp_path / "demo" / "semantic_genesis" / "seeds.json").read_text())
    assert seeds["task"] == "segmentation" and len(seeds["pretrained"]) == len(seeds["random"]) == 1
    assert len(seeds["probe"]["knn_pretrained"]) == 1
    pretrain = tmp_path / "demo" / "semantic_genesis" / "pretrain" / "en_de"
    assert all((pretrain / f"semantic_genesis_chest_ct.{f}").is_file() for f in ("pt", "metrics.csv", "last.pt"))
