"""Protocol: LR tuning on validation, runs with own seeds and folders, 95 % interval, tables."""

import csv
import json
import math

import pytest

import lovt.evaluation.engine as engine
from lovt.evaluation.protocol import aggregate, evaluate_task, results_table, write_task_csv
from lovt.evaluation.tasks import BASIC_TASKS, EXTENDED_TASKS, TASKS, get_task


def test_the_18_tasks():
    assert len(TASKS) == 18 and sorted(t.number for t in TASKS.values()) == list(range(1, 19))
    assert BASIC_TASKS == ("rsna_frozen_10",) and len(EXTENDED_TASKS) == 17
    t = get_task("13")
    assert t.name == "pneumothorax_unet_finetune_100" and t.head == "unet" and not t.frozen
    assert t.frozen_warmup_steps == 100 and t.lr_grid == (3e-5, 1e-5) and t.monitor == "pneumothorax_dice"
    assert get_task("covid_unet_finetune").frozen_warmup_steps == 20
    assert get_task("object_frozen_100").metrics == ("froc", "mAP")
    assert get_task("rsna_frozen_1", batch_size=4).batch_size == 4
    with pytest.raises(ValueError, match="18 tasks"):
        get_task("chexpert_linear")


def test_aggregate_95_interval():
    a = aggregate([0.1, 0.2, 0.3])
    assert a["mean"] == pytest.approx(0.2) and a["std"] == pytest.approx(0.1)  # ddof 1
    assert a["95_interval"] == pytest.approx(1.96 * 0.1 / math.sqrt(3)) and a["num_runs"] == 3
    assert a["run_results"] == "0.1;0.2;0.3"
    # the paper's example: LoVT_100 on RSNA fine-tune 100 %: std 0.0364 over 5 runs -> 0.0319
    assert 1.96 * 0.0364 / math.sqrt(5) == pytest.approx(0.0319, abs=1e-4)


def test_lr_tuning_then_seeded_runs_in_own_folders(tmp_path, monkeypatch):
    calls = []

    def fake_run(task, weights, out_dir, *, learning_rate, seed, **kw):
        calls.append((learning_rate, seed, str(out_dir)))
        val = {1e-3: 0.2, 3e-4: 0.5}[learning_rate]  # 3e-4 is better on validation
        res = {"val": {"mAP": val}, "test": {"mAP": seed / 1e5, "loss": 1.0}, "seed": seed,
               "learning_rate": learning_rate}
        out_dir.mkdir(parents=True)
        (out_dir / "results.json").write_text(json.dumps(res))
        return res

    monkeypatch.setattr(engine, "run_downstream", fake_run)
    task = get_task("rsna_frozen_100")
    summary = evaluate_task(task, "random", tmp_path / "rsna_frozen_100", runs=3, seed=100)
    assert summary["learning_rate"] == 3e-4 and summary["lr_tuning"] == {"0.0003": 0.5, "0.001": 0.2}
    runs = calls[2:]
    assert [c[0] for c in runs] == [3e-4] * 3 and [c[1] for c in runs] == [100, 101, 102]
    assert len({c[2] for c in calls}) == 5  # every run has its own folder
    assert summary["metrics"]["mAP"]["mean"] == pytest.approx(0.00101)
    # a finished evaluation is reused, not re-run; a run folder of another lr is redone
    calls.clear()
    evaluate_task(task, "random", tmp_path / "rsna_frozen_100", runs=3, seed=100)
    assert calls == []
    evaluate_task(task, "random", tmp_path / "rsna_frozen_100", runs=1, seed=100, learning_rate=1e-3)
    assert calls == [(1e-3, 100, str(tmp_path / "rsna_frozen_100" / "run_0"))]
    # identical results over runs are reported
    monkeypatch.setattr(engine, "run_downstream", lambda task, w, out_dir, **kw: {
        "val": {"mAP": 0.1}, "test": {"mAP": 0.25}, "seed": kw["seed"]})
    with pytest.warns(UserWarning, match="identical"):
        evaluate_task(task, "random", tmp_path / "dup", runs=2, tune_lr=False)


def test_results_csv_and_markdown_table(tmp_path):
    task = get_task("rsna_finetune_100")
    summary = {"learning_rate": 1e-4, "metrics": {"mAP": aggregate([0.1814 + d for d in (-0.01, 0.0, 0.01)])}}
    path = write_task_csv(tmp_path, task, "LoVT_100", summary)
    write_task_csv(tmp_path, task, "random", {"learning_rate": 3e-4, "metrics": {"mAP": aggregate([0.149, 0.149])}})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["LoVT_100", "random"]
    assert {"mAP_run_results", "mAP_mean", "mAP_std", "mAP_num_runs", "mAP_95_interval"} <= set(rows[0])
    table = results_table(tmp_path)
    lines = table.splitlines()
    assert lines[0] == "| method | 3 |" and lines[1] == "|---|---|"
    assert lines[2] == "| LoVT_100 | 18.1±1.1 |" and lines[3] == "| random | 14.9±0.0 |"
    assert "3 rsna_finetune_100 (mAP)" in table
    with_paper = results_table(tmp_path, paper=True).splitlines()
    assert "| paper: LoVT 100 % | 18.1±3.2 |" in with_paper and "| paper: Random | 14.9±1.7 |" in with_paper


def test_model_and_baseline_resolution(tmp_path):
    from lovt.evaluate import model_name, resolve_baseline, resolve_model

    ckpt = tmp_path / "pretraining" / "LoVT_100" / "checkpoints" / "backbone_weights.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    assert resolve_model("LoVT_100", tmp_path) == ckpt
    assert resolve_model(str(ckpt.parents[1])) == ckpt and model_name(str(ckpt)) == "LoVT_100"
    with pytest.raises(FileNotFoundError, match="pretraining/LoVT_30"):
        resolve_model("LoVT_30", tmp_path)
    base = tmp_path / "baselines" / "byol_30" / "checkpoints" / "backbone_weights.pt"
    base.parent.mkdir(parents=True)
    base.write_bytes(b"")
    assert resolve_baseline("random") == "random" and resolve_baseline("byol_30", None, tmp_path) == base
    with pytest.raises(FileNotFoundError, match="--weights"):
        resolve_baseline("ImageNet", None, tmp_path)
