"""End to end on the sample data: weights loading, one detection and one segmentation task through
`lovt/evaluate.py` for a backbone_weights.pt and random init, the results csv/table, the demo helper."""

import csv
import json

import pytest
import torch
import torchvision

from lovt.evaluate import main
from lovt.evaluation.backbone import build_backbone, load_resnet50
from lovt.evaluation.data import RSNA
from lovt.evaluation.demo import run_demo_tasks
from lovt.evaluation.prepare import prepare_rsna
from shared.weights import WeightLoadError


@pytest.fixture(scope="module")
def rsna(sample_data, tmp_path_factory):
    return prepare_rsna(sample_data / "rsna-pneumonia", out=tmp_path_factory.mktemp("rsna"), seed=0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("w") / "backbone_weights.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)  # torchvision layout, with fc
    return path


def test_backbone_weights_load_with_every_tensor_matched(weights, tmp_path):
    saved = torch.load(weights, weights_only=True)
    resnet = load_resnet50(weights)
    assert torch.equal(resnet.state_dict()["layer4.2.bn3.running_var"], saved["layer4.2.bn3.running_var"])
    extractor = build_backbone(weights)
    assert torch.equal(extractor.backbone_layers.conv1.weight, saved["conv1.weight"])
    # a LoVT Lightning state dict (ResNet under model.model_a.encoder.feature_extractor.backbone_layers.)
    prefix = "model.model_a.encoder.feature_extractor.backbone_layers."
    lovt_ckpt = tmp_path / "lovt.ckpt"
    torch.save({"state_dict": {prefix + k: v for k, v in saved.items() if not k.startswith("fc.")}}, lovt_ckpt)
    assert torch.equal(load_resnet50(lovt_ckpt).state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in saved.items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(WeightLoadError):
        load_resnet50(partial)
    with pytest.raises(FileNotFoundError):
        load_resnet50(tmp_path / "missing.pt")


def _rows(path):
    with open(path) as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_evaluate_cli_detection_and_segmentation(rsna, weights, tmp_path):
    common = ["--no_lr_tuning", "--input_size", "32", "--batch_size", "8", "--max_steps", "2",
              "--max_epochs", "1", "--num_workers", "0", "--dataset_folder", f"{RSNA}={rsna}",
              "--work_dir", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--quiet"]
    main(["evaluate_downstream", str(weights), "--tasks", "rsna_frozen_100,rsna_seg_linear_100", "--runs", "2"]
         + common)
    main(["evaluate_baseline_downstream", "random", "--tasks", "9", "--runs", "2"] + common + ["--max_steps", "1"])
    det = _rows(tmp_path / "results" / "downstream_rsna_frozen_100.csv")
    seg = _rows(tmp_path / "results" / "downstream_rsna_seg_linear_100.csv")
    assert set(det) == {"backbone_weights"} and set(seg) == {"backbone_weights", "random"}
    assert 0 <= float(det["backbone_weights"]["mAP_mean"]) <= 1 and det["backbone_weights"]["mAP_num_runs"] == "2"
    assert len(seg["random"]["opacity_dice_run_results"].split(";")) == 2
    table = (tmp_path / "results" / "results_table.md").read_text().splitlines()
    assert table[0] == "| method | 6 | 9 |" and table[3].startswith("| random | - | ")
    run = tmp_path / "runs" / "random" / "rsna_seg_linear_100" / "run_1"
    results = json.loads((run / "results.json").read_text())
    assert results["seed"] == 12346 and results["steps"] == 1 and "opacity_dice" in results["test"]
    assert (run / "metrics.csv").is_file() and (run / "config.json").is_file()
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert set(best["model"]) == {"classifier.weight", "classifier.bias"}  # frozen task: the head only
    with pytest.raises(FileNotFoundError, match="--weights"):
        main(["evaluate_baseline_downstream", "ImageNet", "--models_base_path", str(tmp_path)] + common)


def test_demo_tasks_pretrained_vs_random(sample_data, weights, tmp_path):
    rows = run_demo_tasks(sample_data, weights, tmp_path, input_size=32, max_steps=1, max_epochs=1,
                          tasks=("rsna_seg_linear_100",))  # the default adds rsna_frozen_100 (YOLOv3, mAP)
    assert list(rows) == ["rsna_seg_linear_100"] and rows["rsna_seg_linear_100"]["metric"] == "opacity_dice"
    assert all(0 <= r[k] <= 1 for r in rows.values() for k in ("pretrained", "random"))
    assert json.loads((tmp_path / "demo_tasks.json").read_text()) == rows


def test_finetune_warmup_then_task_lr(rsna, tmp_path):
    import pandas as pd

    from lovt.evaluation.engine import run_downstream
    from lovt.evaluation.tasks import get_task

    task = get_task("rsna_finetune_100", batch_size=8, frozen_warmup_steps=1)
    res = run_downstream(task, "random", tmp_path, learning_rate=3e-4, input_size=32, where={"folders": {RSNA: rsna}},
                         max_epochs=1, max_steps=2, progress=False)
    lrs = pd.read_csv(tmp_path / "metrics.csv")["lr"].dropna().tolist()
    assert lrs == [1e-3, 3e-4]  # warm-up lr with the backbone frozen, then the task lr for everything
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["backbone_included"] and any(k.startswith("backbone.") for k in best["model"])
    assert {"mAP", "pos_mAP", "mAP@0.5"} <= set(res["test"])


def test_a_run_is_reproducible_from_its_seed(rsna, tmp_path):
    from lovt.evaluation.engine import run_downstream
    from lovt.evaluation.tasks import get_task

    task = get_task("rsna_seg_linear_100", batch_size=4)
    kw = dict(input_size=32, where={"folders": {RSNA: rsna}}, max_epochs=1, max_steps=3, progress=False)
    a = run_downstream(task, "random", tmp_path / "a", seed=7, **kw)
    b = run_downstream(task, "random", tmp_path / "b", seed=7, **kw)
    c = run_downstream(task, "random", tmp_path / "c", seed=8, **kw)
    assert a["test"] == b["test"] and a["val"] == b["val"]
    wa, wc = (torch.load(p / "checkpoints" / "best.pt", weights_only=True)["model"]["classifier.weight"]
              for p in (tmp_path / "a", tmp_path / "c"))
    assert c["seed"] == 8 and not torch.equal(wa, wc)  # another seed, another head init and batch order
