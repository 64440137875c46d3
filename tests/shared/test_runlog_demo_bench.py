import csv
import json

import numpy as np
import pytest

from shared.bench import record, table, write_records
from shared.demo import metric, read_rows, write_row, write_summary
from shared.runlog import RunLogger, drop_rows_after, plot_metrics, read_metrics, save_image_grid


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_metrics_csv_widens_when_a_column_appears_and_resumes(tmp_path):
    log = RunLogger(tmp_path / "run", tensorboard=True, config={"lr": 0.1})
    log.log(1, loss=2.0)
    log.log(2, loss=1.5, val_loss=1.7)
    log.log(3, loss=1.0)
    log.close()
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["val_loss"] == "" and float(rows[1]["val_loss"]) == 1.7
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"lr": 0.1}
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    # a resumed run appends to the same file
    log = RunLogger(tmp_path / "run", tensorboard=False)
    log.log(4, loss=0.5)
    assert [r["loss"] for r in _rows(tmp_path / "run" / "metrics.csv")] == ["2.0", "1.5", "1.0", "0.5"]
    series = read_metrics(tmp_path / "run" / "metrics.csv")
    assert series["val_loss"] == ([2.0], [1.7]) and series["loss"][1] == [2.0, 1.5, 1.0, 0.5]


def test_resume_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    log = RunLogger(tmp_path / "run", tensorboard=False)
    for step in range(1, 6):
        log.log(step, loss=float(step))
    assert log.truncate(3) == 2  # a resume from a checkpoint at step 3: steps 4 and 5 come again
    log.log(4, loss=40.0, acc=0.5)  # a new column rewrites the file from the rows kept in memory
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert [(r["step"], r["loss"]) for r in rows] == [("1", "1.0"), ("2", "2.0"), ("3", "3.0"), ("4", "40.0")]
    # the same on a file written by another logger (Lightning's CSV); no file: nothing dropped
    assert drop_rows_after(tmp_path / "run" / "metrics.csv", 1) == 3
    assert [r["step"] for r in _rows(tmp_path / "run" / "metrics.csv")] == ["1"]
    assert drop_rows_after(tmp_path / "none.csv", 0) == 0


def test_disabled_logger_writes_nothing(tmp_path):
    log = RunLogger(tmp_path / "rank1", enabled=False)
    log.log(1, loss=1.0)
    assert not (tmp_path / "rank1").exists()


def test_plots_and_image_grids_are_png(tmp_path):
    log = RunLogger(tmp_path, tensorboard=False)
    for step in range(5):
        log.log(step, loss=1.0 / (step + 1))
    png = plot_metrics(tmp_path / "metrics.csv", tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grid = save_image_grid([[np.zeros((8, 8)), np.ones((8, 8))], [np.eye(8)]], tmp_path / "g.png",
                           titles=["a", "b"])
    assert grid.read_bytes()[:4] == b"\x89PNG"


def test_demo_rows_make_a_summary_table_with_loss_plots(tmp_path):
    runs = tmp_path / "runs"
    log = RunLogger(runs / "demo" / "m1" / "pretrain", tensorboard=False)
    log.log(1, loss=1.0)
    log.log(2, loss=0.5)
    write_row("m1", runs=runs, data="sample CT", steps=2, final_loss=0.5, wall_time_s=12.3,
              metrics=[metric("probe", "AUC", [0, 1], [0.9, 0.8], [0.6, 0.6])],
              loss_csv=str(runs / "demo" / "m1" / "pretrain" / "metrics.csv"))
    text = write_summary(runs)
    assert "| m1 | probe: AUC | 2 seeds |" in text and "| m1 | sample CT | 2 | 0.500 |" in text
    assert (runs / "demo" / "m1_loss.png").is_file() and "m1_loss.png" in text
    assert (runs / "demo" / "summary.md").read_text() == text
    assert [r["method"] for r in read_rows(runs)] == ["m1"]


def test_bench_records_are_validated_and_tabulated(tmp_path):
    path = write_records("m1", [record("train_images_per_s", 12.5, "images/s", "cpu", {"batch": 4})], runs=tmp_path)
    assert json.loads(path.read_text())[0] == {"name": "train_images_per_s", "value": 12.5, "unit": "images/s",
                                               "device": "cpu", "config": {"batch": 4}}
    assert "| m1 | train_images_per_s | 12.5 | images/s | cpu | batch=4 |" in table(tmp_path)
    with pytest.raises(ValueError, match="lacks"):
        write_records("m1", [{"name": "x", "value": 1}], runs=tmp_path)
