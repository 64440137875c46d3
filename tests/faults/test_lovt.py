"""Fault injection, LoVT pre-training (lovt/train.py, lovt/data): what each fault does, asserted.

kill -9 is real: `run_training` (what the Hydra entry point calls) runs in a child process that SIGKILLs
itself at a chosen optimizer step or half-way through writing a Lightning checkpoint (shared.checkpoint's
test hooks, set through the environment); the parent resumes.
Tiny model (ResNet-18, d=8, a 2-layer BERT), synthetic pairs, CPU, one thread (same kernels both sides).
"""

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image, ImageFile

import lovt.train as train
from lovt.synthetic import SyntheticImageTextDataset, build_tiny_language_model, tiny_overrides
from shared.checkpoint import FAULT_KILL_IN_SAVE_ENV, FAULT_KILL_STEP_ENV
from shared.guards import FAULT_NAN_STEP_ENV, NonFiniteLossError
from shared.timing import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[2]

OUTCOMES = {
    "kill_resume": "resume=<ckpt> after kill -9 gives bit-identical weights and the same metrics.csv rows.",
    "kill_during_save": "the previous last.ckpt still loads (weights only) and resumes exactly.",
    "corrupt_file": "a truncated JPEG is an unreadable view: skipped, named and counted (no process-wide PIL flag).",
    "missing_file": "a listed view that is not on disk is skipped, named and counted by the preparation.",
    "empty_data": "an empty or wrong data folder stops the preparation, naming the folder.",
    "wrong_label_shape": "a CheXpert label outside 1/0/-1/blank stops the preparation, naming study and label.",
    "wrong_ndim": "a colour (3-channel) JPEG is read as grey, as the original.",
    "run_folder_clash": "resume with another pretrain_model config is refused naming the settings; a fresh "
                        "run refuses a folder holding checkpoints; nothing there changes.",
    "nonfinite_loss": "a non-finite loss stops the run in training_step, naming the step.",
    "wrong_checkpoint": "a pickled payload is refused (weights_only), and warm-start weights of another size "
                        "are refused naming the file and the component.",
}
NOT_APPLICABLE = {"nonfinite_input": "images are 8-bit JPEGs, reports text: neither holds NaN/inf"}

CHILD = r"""
import json, sys
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
from hydra import compose, initialize_config_dir
import lovt.train as train
from lovt.synthetic import SyntheticImageTextDataset
with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
    cfg = compose("train_representation", overrides=spec["overrides"])
data = {"train": SyntheticImageTextDataset(8, seed=0), "validation": SyntheticImageTextDataset(4, seed=1)}
train.run_training(cfg, spec["run_dir"], datasets=data)
"""


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return build_tiny_language_model(tmp_path_factory.mktemp("bert") / "tiny_bert")


def overrides(bert, models, *extra):
    return (["+experiment=LoVT_100", "name=faults", f"models.base_path={models}", "export_run=false",
             "callback.early_stopping.patience=100", "attention_plots=0", "pretrain_model.learning_rate=1e-3",
             "pretrain_model.max_epochs=2", "trainer.log_every_n_steps=1", "+logger.csv.flush_logs_every_n_steps=1"]
            + tiny_overrides(bert, arch="resnet18", d=8) + list(extra))


def run(bert, run_dir, *extra):
    """run_training in this process, with one thread as the child's."""
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=overrides(bert, Path(run_dir).parent / "models", *extra))
    data = {"train": SyntheticImageTextDataset(8, seed=0), "validation": SyntheticImageTextDataset(4, seed=1)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train.run_training(cfg, run_dir, datasets=data)
    finally:
        torch.set_num_threads(threads)


def run_killed(bert, run_dir, **kill_env):
    spec = {"overrides": overrides(bert, Path(run_dir).parent / "models"), "run_dir": str(run_dir)}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **kill_env}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def straight(bert, tmp_path_factory):
    """An uninterrupted run: 2 epochs of 2 optimizer steps."""
    result = run(bert, tmp_path_factory.mktemp("lovt_straight") / "run")
    return Path(result["run_dir"]), result["module"].state_dict()


def assert_same_as_straight(straight, result):
    run_dir, reference = straight
    state = result["module"].state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in state), "resumed weights differ"
    a = pd.read_csv(run_dir / "metrics.csv")
    b = pd.read_csv(Path(result["run_dir"]) / "metrics.csv")
    a, b = (m.drop(columns=[c for c in m if c.startswith("time") or c in TIMING_COLUMNS]) for m in (a, b))
    pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)])  # every row once, none lost


def test_kill_resume_bit_identical(bert, straight, tmp_path):
    run_dir = tmp_path / "run"
    run_killed(bert, run_dir, **{FAULT_KILL_STEP_ENV: "3"})  # epoch 1, second batch: after the epoch-0 checkpoint
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert pd.read_csv(run_dir / "metrics.csv")["step"].max() >= 2  # rows logged after the checkpoint
    assert_same_as_straight(straight, run(bert, run_dir, f"resume={last}"))


def test_kill_during_save_keeps_previous_checkpoint(bert, straight, tmp_path):
    run_dir = tmp_path / "run"
    # epoch 0 wrote the best and last.ckpt; the 3rd checkpoint is epoch 1's
    run_killed(bert, run_dir, **{FAULT_KILL_IN_SAVE_ENV: "3"})
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert list(last.parent.glob(".*.tmp"))  # the half-written file is a temporary one
    assert_same_as_straight(straight, run(bert, run_dir, "resume=last"))


@pytest.fixture(scope="module")
def raw_mimic(tmp_path_factory):
    from shared.sample_data import generate

    root = tmp_path_factory.mktemp("mimic_sample")
    generate(root, seed=0, only=["mimic-cxr-jpg"])
    return root / "mimic-cxr-jpg"


@pytest.fixture(scope="module")
def damaged_preparation(raw_mimic, tmp_path_factory):
    """The sample MIMIC-CXR-JPG with one view truncated mid-scan and another deleted, prepared."""
    import shutil

    from lovt.data.mimic_cxr import create_dataset

    tmp = tmp_path_factory.mktemp("damaged")
    raw = tmp / "raw"
    shutil.copytree(raw_mimic, raw)
    jpgs = sorted(raw.rglob("*.jpg"))
    truncated, missing = jpgs[0], jpgs[-1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    missing.unlink()
    handler = logging.Handler()
    handler.records = []
    handler.emit = handler.records.append
    logging.getLogger("lovt").addHandler(handler)
    try:
        prepared = create_dataset(raw, target_path=tmp / "prepared", num_workers=1)
    finally:
        logging.getLogger("lovt").removeHandler(handler)
    counts = {}
    for split in json.loads((prepared / "preparation.json").read_text())["splits"].values():
        for kind, n in split["skipped_files"].items():
            counts[kind] = counts.get(kind, 0) + n
    return truncated, missing, counts, "\n".join(r.getMessage() for r in handler.records)


def test_corrupt_file_in_preparation_skipped_counted_named(damaged_preparation):
    truncated, _, counts, log_text = damaged_preparation
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never set for the whole process
    assert counts.get("unreadable_image") == 1, counts  # the original's flag loaded it half grey
    assert f"{truncated}: unreadable JPEG" in log_text


def test_missing_file_in_preparation_skipped_counted_named(damaged_preparation):
    _, missing, counts, log_text = damaged_preparation
    assert counts.get("missing_image") == 1, counts
    assert f"{missing}: not found" in log_text


def test_corrupt_file_at_load_time_skipped_and_counted(raw_mimic, tmp_path, caplog):
    from lovt.data import ImageTextDataset, ScanTransform
    from lovt.data.mimic_cxr import create_dataset
    from lovt.data.storage import read_records

    prepared = create_dataset(raw_mimic, target_path=tmp_path / "prepared", num_workers=1)
    images = tmp_path / "images"
    record = read_records(prepared, "validation")[0]
    rel = Path(f"p{record['patient_id'][:2]}/p{record['patient_id']}/s{record['study_id']}")
    (images / rel).mkdir(parents=True)
    for d in record["scan"]["dicom_id"]:
        data = (prepared / "images" / rel / f"{d}.jpg").read_bytes()
        (images / rel / f"{d}.jpg").write_bytes(data[: len(data) // 2])  # every view truncated
    later = read_records(prepared, "validation")[1]
    later_rel = Path(f"p{later['patient_id'][:2]}/p{later['patient_id']}/s{later['study_id']}")
    (images / later_rel).parent.mkdir(parents=True, exist_ok=True)
    (images / later_rel).symlink_to((prepared / "images" / later_rel).resolve())
    ds = ImageTextDataset(prepared, "validation", ScanTransform(image_size=(8, 8), val=True), image_root=images,
                          view_selection="first")
    with caplog.at_level(logging.WARNING):
        item = ds[0]
    assert item["study_id"] == later["study_id"]  # the truncated study was skipped, not read half grey
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert len(ds.unreadable) == len(record["scan"]["dicom_id"])
    assert "unreadable image" in caplog.text and f"{record['scan']['dicom_id'][0]}.jpg" in caplog.text
    assert f"{len(ds.unreadable)} unreadable file(s) skipped so far" in caplog.text


def test_empty_data_folder_named(tmp_path):
    from lovt.data.mimic_cxr import create_dataset

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        create_dataset(tmp_path / "empty", target_path=tmp_path / "prepared", num_workers=1)


def test_wrong_label_shape_refused_naming_study():
    from lovt.data.mimic_cxr import encode_chexpert

    with pytest.raises(ValueError, match=r"s5001: CheXpert label 'Edema' = 2.0, expected 1, 0, -1 or empty"):
        encode_chexpert({"Edema": 2.0}, "s5001")


def test_wrong_ndim_colour_jpeg_read_as_grey(tmp_path):
    from lovt.data.dataset import open_image

    Image.new("RGB", (20, 10), (200, 100, 50)).save(tmp_path / "colour.jpg")
    img = open_image(tmp_path / "colour.jpg")
    assert img.mode == "L" and img.size == (20, 10)


def test_run_folder_clash_refused_and_nothing_changes(bert, straight):
    run_dir = straight[0]
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    with pytest.raises(SystemExit, match=r"resume refused: .*last.ckpt was written by another configuration "
                                         r"\(pretrain_model.learning_rate: 0.001 there, 0.01 now\)"):
        run(bert, run_dir, "pretrain_model.learning_rate=1e-2", "resume=last")
    with pytest.raises(SystemExit, match="already holds checkpoints of an earlier run"):
        run(bert, run_dir)
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before


def test_nonfinite_loss_stops_naming_the_step(bert, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_NAN_STEP_ENV, "1")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 1 \(optimizer step; epoch 0, batch 1"):
        run(bert, tmp_path / "run")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_wrong_checkpoint_pickle_refused_even_when_torch_is_told_otherwise(bert, straight, tmp_path, monkeypatch):
    ckpt = torch.load(straight[0] / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["callbacks"]["payload"] = _Payload()
    torch.save(ckpt, tmp_path / "evil.ckpt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default would unpickle anything
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match=r"evil.ckpt: refused, it holds more than tensors"):
        run(bert, tmp_path / "run", f"resume={tmp_path / 'evil.ckpt'}")
    with pytest.raises((RuntimeError, pickle.UnpicklingError)):
        train.AtomicCheckpointIO().load_checkpoint(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()


def test_wrong_checkpoint_warm_start_of_another_size(straight):
    from lovt.engine import BiModalModelRepresentationLearner

    path = straight[0] / "checkpoints" / "last.ckpt"
    config = torch.load(path, weights_only=True)["hyper_parameters"]["config"]
    wider = dict(config, d_z=16, load_checkpoint_path=str(path))
    with pytest.raises(RuntimeError, match=r"last.ckpt: its model_a does not fit this model .*size mismatch"):
        BiModalModelRepresentationLearner(wider)
