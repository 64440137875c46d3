"""Fault injection, LoVT's localized evaluation (lovt/evaluation/: preparation, datasets, runs, protocol).

kill -9 is real: `evaluate_task` (what `lovt/evaluate.py` calls per task) runs in a child process that
SIGKILLs itself inside the second of two runs; the parent evaluates again in the same folder. One frozen
linear-head task (rsna_seg_linear_100) on the sample RSNA data at 32 px, two steps a run, CPU, one thread.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from lovt.evaluation import prepare
from lovt.evaluation.data import RSNA, DownstreamDataset, Loader
from lovt.evaluation.engine import run_downstream
from lovt.evaluation.protocol import evaluate_task
from lovt.evaluation.tasks import get_task
from shared.guards import FAULT_NAN_STEP_ENV, NonFiniteLossError
from shared.weights import WeightLoadError

ROOT = Path(__file__).resolve().parents[2]
TASK = "rsna_seg_linear_100"

OUTCOMES = {
    "kill_resume": "evaluating again after kill -9 reuses the finished runs, redoes the interrupted one, "
                   "and gives the uninterrupted results.",
    "kill_during_save": "a run killed while writing results.json leaves no half file; the finished runs' "
                        "results still load and the run is redone.",
    "corrupt_file": "an unreadable training image is skipped, counted and named (results.json lists it); "
                    "a validation/test image stops the run naming it; preparation prints the skipped files.",
    "missing_file": "a listed training image that is missing is skipped and named; in validation/test it "
                    "stops the run naming it.",
    "empty_data": "an empty split stops the run before training, naming its csv.",
    "wrong_label_shape": "a mask of another size than its image is resized as the original, with a warning "
                         "naming the mask.",
    "wrong_ndim": "a colour image is read as grey (the same scan as its grey version).",
    "run_folder_clash": "a run folder of another configuration (weights, lr, seed, ...) is refused naming "
                        "the differences; nothing in it is reused or deleted.",
    "nonfinite_loss": "a non-finite training loss stops the run, naming the step and task.",
    "wrong_checkpoint": "weights that are not a complete ResNet-50 are refused naming the file.",
}
NOT_APPLICABLE = {"nonfinite_input": "prepared images are 8-bit PNG/JPEG: no NaN/inf values"}

CHILD = r"""
import json, os, pathlib, signal, sys
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
import lovt.evaluation.engine as engine
from lovt.evaluation.protocol import evaluate_task
from lovt.evaluation.tasks import get_task
runs, run_downstream = [0], engine.run_downstream
def counted(*a, **k):
    runs[0] += 1
    return run_downstream(*a, **k)
engine.run_downstream = counted
if spec["kill"] == "second_step_of_second_run":
    steps, loss = [0], engine.Evaluator.loss
    def killing(self, batch, frozen, device, update_metrics=False):
        if runs[0] == 2 and not update_metrics:
            steps[0] += 1
            if steps[0] == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return loss(self, batch, frozen, device, update_metrics)
    engine.Evaluator.loss = killing
if spec["kill"] == "second_results_json":
    write_text = pathlib.Path.write_text
    def half_write(self, data, *a, **k):
        if "results.json" in self.name and runs[0] == 2:
            with open(self, "w") as f:
                f.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return write_text(self, data, *a, **k)
    pathlib.Path.write_text = half_write
evaluate_task(get_task(spec["task"], batch_size=4), "random", spec["task_dir"], **spec["kwargs"])
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from shared.sample_data import generate

    root = tmp_path_factory.mktemp("eval_sample")
    generate(root, seed=0, only=["rsna-pneumonia", "covid-rural"])
    return root


@pytest.fixture(scope="module")
def rsna(sample, tmp_path_factory):
    return prepare.prepare_rsna(sample / "rsna-pneumonia", out=tmp_path_factory.mktemp("rsna"))


def kwargs(rsna, **extra):
    return {"runs": 2, "tune_lr": False, "input_size": 32, "max_epochs": 1, "max_steps": 2, "progress": False,
            "where": {"folders": {RSNA: str(rsna)}}, **extra}


def evaluate(rsna, task_dir, weights="random", **extra):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return evaluate_task(get_task(TASK, batch_size=4), weights, task_dir, **kwargs(rsna, **extra))
    finally:
        torch.set_num_threads(threads)


def run_killed(rsna, task_dir, kill):
    spec = {"task": TASK, "task_dir": str(task_dir), "kill": kill, "kwargs": kwargs(rsna)}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def straight(rsna, tmp_path_factory):
    task_dir = tmp_path_factory.mktemp("eval_straight") / TASK
    return task_dir, evaluate(rsna, task_dir)


def results(task_dir, k):
    return json.loads((task_dir / f"run_{k}" / "results.json").read_text())


def assert_same_results(a_dir, b_dir):
    for k in (0, 1):
        a, b = results(a_dir, k), results(b_dir, k)
        assert (a["val"], a["test"], a["steps"]) == (b["val"], b["test"], b["steps"])
        wa, wb = (torch.load(d / f"run_{k}" / "checkpoints" / "best.pt", weights_only=True)["model"]
                  for d in (a_dir, b_dir))
        assert all(torch.equal(wa[n], wb[n]) for n in wa)


def test_kill_resume_reuses_finished_runs_and_redoes_the_interrupted(rsna, straight, tmp_path):
    task_dir = tmp_path / TASK
    run_killed(rsna, task_dir, "second_step_of_second_run")
    finished = (task_dir / "run_0" / "results.json").read_bytes()
    assert not (task_dir / "run_1" / "results.json").exists() and (task_dir / "run_1" / "config.json").exists()
    summary = evaluate(rsna, task_dir)
    assert (task_dir / "run_0" / "results.json").read_bytes() == finished  # reused, not run again
    assert_same_results(straight[0], task_dir)
    assert summary["metrics"] == straight[1]["metrics"]


def test_kill_during_save_leaves_no_half_results(rsna, straight, tmp_path):
    task_dir = tmp_path / TASK
    run_killed(rsna, task_dir, "second_results_json")
    assert json.loads((task_dir / "run_0" / "results.json").read_text())["seed"] == 12345  # still loads
    assert not (task_dir / "run_1" / "results.json").exists()  # only the temporary file was half written
    evaluate(rsna, task_dir)
    assert_same_results(straight[0], task_dir)


def grey(path, size=(40, 30), value=100):
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)


def small_set(tmp_path, split, ids, masks=True):
    (tmp_path / f"{split}.csv").write_text("ID\n" + "".join(f"{i}\n" for i in ids))
    loader = Loader("{id}.png", {"m": "{id}_mask.png"} if masks else None)
    return DownstreamDataset(tmp_path, loader, split, input_size=16, stats={"pixel_mean": 0.5, "pixel_std": 0.5})


def skip_in_train_stop_in_test(tmp_path, fault):
    for i in ("a", "b"):
        grey(tmp_path / f"{i}.png")
        grey(tmp_path / f"{i}_mask.png", value=1)
    if fault == "corrupt":
        (tmp_path / "a.png").write_bytes((tmp_path / "a.png").read_bytes()[:60])
    else:
        (tmp_path / "a.png").unlink()
    train = small_set(tmp_path, "train", ["a", "b"])
    with pytest.warns(UserWarning, match=r"skipping sample a \(1 skipped so far in the train split\)"):
        assert train[0]["id"] == "b"
    assert train.skipped == {"a"}
    test = small_set(tmp_path, "test", ["a", "b"])
    with pytest.raises(OSError, match=r"test sample a is unreadable .* not replaced by others"):
        test[0]


def test_corrupt_file_skipped_in_train_stops_in_test(tmp_path):
    skip_in_train_stop_in_test(tmp_path, "corrupt")


def test_missing_file_skipped_in_train_stops_in_test(tmp_path):
    skip_in_train_stop_in_test(tmp_path, "missing")


def test_corrupt_file_listed_in_results_and_by_preparation(rsna, sample, tmp_path):
    copy = tmp_path / "rsna"
    shutil.copytree(rsna, copy)
    header, *rows = (copy / "train.csv").read_text().splitlines()
    (copy / "train.csv").write_text("\n".join([header, *rows[:2]]) + "\n")  # one batch holds both
    first = rows[0].split(",")[0]
    (copy / "stage_2_train_images_processed" / f"{first}.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match=f"skipping sample {first}"):
        res = run_downstream(get_task(TASK, batch_size=4), "random", tmp_path / "run", input_size=32, max_epochs=1,
                             where={"folders": {RSNA: str(copy)}}, progress=False)
    assert res["skipped_samples"] == [first]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["skipped_samples"] == [first]
    # the preparation command line: one-line warnings, and the skipped images counted and named at the end
    raw = tmp_path / "covid"
    shutil.copytree(sample / "covid-rural", raw)
    bad = sorted((raw / "jpgs").glob("*.jpg"))[0]
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    proc = subprocess.run([sys.executable, "-m", "lovt.evaluation.prepare", "covid", str(raw), "--out",
                           str(tmp_path / "covid_out")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"skipped 1 unreadable image(s): {bad}" in proc.stdout
    assert f"UserWarning: skipping unreadable image {bad}: " in proc.stderr  # one line (tqdm may precede it)
    line = next(li for li in proc.stderr.splitlines() if "skipping unreadable image" in li)
    assert ".py:" not in line and "warnings.warn(" not in proc.stderr  # no source file, line or text


def test_preparation_split_is_seeded_by_default(sample, tmp_path):
    for out in ("a", "b"):
        prepare.main(["covid", str(sample / "covid-rural"), "--out", str(tmp_path / out)])
    for split in ("train", "validation", "test"):
        assert (tmp_path / "a" / f"{split}.csv").read_text() == (tmp_path / "b" / f"{split}.csv").read_text()
    prepare.main(["covid", str(sample / "covid-rural"), "--out", str(tmp_path / "c"), "--seed", "1"])
    assert any((tmp_path / "a" / f"{s}.csv").read_text() != (tmp_path / "c" / f"{s}.csv").read_text()
               for s in ("train", "validation", "test"))


def test_empty_data_split_named_before_training(rsna, tmp_path):
    copy = tmp_path / "rsna"
    shutil.copytree(rsna, copy)
    (copy / "validation.csv").write_text("ID,boxes,classes\n")
    with pytest.raises(ValueError, match=r"validation.csv: the validation split of rsna_seg is empty"):
        run_downstream(get_task(TASK, batch_size=4), "random", tmp_path / "run", input_size=32,
                       where={"folders": {RSNA: str(copy)}}, progress=False)


def test_wrong_label_shape_mask_resized_with_a_warning(tmp_path):
    grey(tmp_path / "a.png", size=(40, 30))
    grey(tmp_path / "a_mask.png", size=(20, 15), value=1)
    ds = small_set(tmp_path, "train", ["a"])
    with pytest.warns(UserWarning, match=r"a_mask.png: mask is 20x15 but its image is 40x30; resized"):
        item = ds[0]
    assert item["masks"].shape == (1, 16, 16) and item["masks"].sum() > 0


def test_wrong_ndim_colour_image_read_as_grey(tmp_path):
    grey(tmp_path / "a.png")
    Image.fromarray(np.full((30, 40, 3), 100, np.uint8)).save(tmp_path / "b.png")
    ds = small_set(tmp_path, "train", ["a", "b"], masks=False)
    ds.loader = Loader("{id}.png", detection=True)
    ds.rows = [(i, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)) for i in ("a", "b")]
    assert ds[1]["scan"].shape == (3, 16, 16) and torch.equal(ds[0]["scan"], ds[1]["scan"])


def test_run_folder_clash_refused_and_nothing_touched(rsna, straight, tmp_path):
    task_dir = straight[0]
    before = {p: p.read_bytes() for p in sorted(task_dir.rglob("*")) if p.is_file()}
    weights = tmp_path / "other.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    with pytest.raises(FileExistsError, match=r"run_0 holds a run of another configuration \(backbone_weights: "
                                              r"'random' there, '.*other.pt' now\)"):
        evaluate(rsna, task_dir, weights=str(weights))
    with pytest.raises(FileExistsError, match=r"seed: 12345 there, 7 now"):
        evaluate(rsna, task_dir, seed=7)
    assert {p: p.read_bytes() for p in sorted(task_dir.rglob("*")) if p.is_file()} == before


def test_nonfinite_loss_stops_naming_step_and_task(rsna, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_NAN_STEP_ENV, "1")
    with pytest.raises(NonFiniteLossError, match=rf"loss is nan at step 1 \({TASK}, epoch 0\)"):
        run_downstream(get_task(TASK, batch_size=4), "random", tmp_path / "run", input_size=32, max_epochs=1,
                       max_steps=2, where={"folders": {RSNA: str(rsna)}}, progress=False)
    assert not (tmp_path / "run" / "results.json").exists()


def test_wrong_checkpoint_resnet18_refused_naming_the_file(rsna, tmp_path):
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    with pytest.raises(WeightLoadError, match=r"too few tensors matched[^$]* from \S*resnet18.pt"):
        run_downstream(get_task(TASK, batch_size=4), weights, tmp_path / "run", input_size=32,
                       where={"folders": {RSNA: str(rsna)}}, progress=False)
