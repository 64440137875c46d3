"""`make demo-semantic_genesis` wiring, shortened: self-discovery -> pre-training -> nodule segmentation from
the pre-trained weights and from random init, one row for the summary table."""

import json

from semantic_genesis import demo


def test_demo_writes_its_row_and_per_seed_scores(sample_data, tmp_path):
    demo.main(["--sample", str(sample_data), "--runs", str(tmp_path), "--pretrain_epochs", "1",
               "--finetune_epochs", "1", "--finetune_seeds", "1", "--probe_repeats", "2",
               "--threads", "1"])  # one thread: two test workers share two cores
    row = json.loads((tmp_path / "demo" / "semantic_genesis" / "row.json").read_text())
    mse, accuracy, probe, voxel_dice, cube_dice = row["metrics"]
    assert mse["kind"] == accuracy["kind"] == "pretext" and mse["lower_is_better"] and len(mse["trivial"]) == 1
    assert probe["kind"] == "probe" and "AUROC" in probe["name"] and probe["seeds"][:2] == ["r0f0", "r0f1"]
    assert probe["test_train_ratio"] > 0 and "16 scans" in probe["name"]  # patient-grouped K-fold, all scans
    assert set(probe["trivial"]) == {0.5} and all(0 <= v <= 1 for v in probe["raw"])
    for finetune in (voxel_dice, cube_dice):
        assert finetune["kind"] == "fine-tune" and "nodule segmentation" in finetune["name"] and row["steps"] > 0
        assert "trivial" in finetune and "raw" in finetune
    assert voxel_dice["trivial"] == [0.0] and cube_dice["trivial"][0] > 0  # empty cubes score 1 when empty
    for m in row["metrics"]:
        assert all(0 <= v <= 1 for v in m["pretrained"] + m["random"])
    assert "pre-training cubes came from 12 of them" in row["seen"] and "all 16 scans" in row["seen"]
    assert row["pretrain_seeds"].startswith("1 ") and "voxels predicted per empty cube" in voxel_dice["name"]
    seeds = json.loads((tmp_path / "demo" / "semantic_genesis" / "seeds.json").read_text())
    assert seeds["task"] == "segmentation" and len(seeds["pretrained"]) == len(seeds["random"]) == 1
    assert len(seeds["probe"]["all"]) == len(probe["seeds"]) and "probe_knn_auroc" in seeds["probe"]["all"][0]["random"]
    pretrain = tmp_path / "demo" / "semantic_genesis" / "pretrain" / "en_de"
    assert all((pretrain / f"semantic_genesis_chest_ct.{f}").is_file() for f in ("pt", "metrics.csv", "last.pt"))
