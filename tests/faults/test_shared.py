"""Faults injected into the shared checkpoint and weight loading (shared/checkpoint.py, shared/weights.py)
and the per-run record in a run folder (shared/runfolder.py) that every method's resume goes through."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.checkpoint import CheckpointError, load_checkpoint, load_state, save_atomic
from shared.runfolder import RunFolderClash, check_checkpoint_run, claim_run_folder
from shared.weights import WeightLoadError, load_pretrained, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]

OUTCOMES = {
    "kill_during_save": "kill -9 inside save_atomic: the previous file still loads, only a .tmp is left",
    "corrupt_file": "truncated, empty or foreign checkpoint: CheckpointError / WeightLoadError naming the file "
                    "and its size, no torch internals",
    "missing_file": "FileNotFoundError naming the checkpoint",
    "empty_data": "a checkpoint without tensors: WeightLoadError saying so",
    "run_folder_clash": "runs share a folder, files named per run; the same name with other settings: "
                        "RunFolderClash naming each; a fresh start sets <name>.metrics.csv aside",
    "wrong_checkpoint": "wrong shapes: CheckpointError naming the file; a pickled file is refused with the "
                        "trusted=True / --trusted opt-in, no colour codes, no weights_only=False advice",
}
NOT_APPLICABLE = {
    "kill_resume": "no training loop here (each method's row)",
    "wrong_label_shape": "no labels here",
    "nonfinite_input": "no inputs here (each method's row)",
    "wrong_ndim": "no images here",
    "nonfinite_loss": "no loss here (shared/guards.py, each method's row)",
}


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import torch
        from shared.checkpoint import save_atomic
        save_atomic({{"step": 1, "w": torch.zeros(1000)}}, {str(target)!r})
        save_atomic({{"step": 2, "w": torch.ones(1000)}}, {str(target)!r})
    """)
    env = dict(os.environ, SSL_MED_FAULT_KILL_IN_SAVE="2", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert load_checkpoint(target)["step"] == 1
    leftovers = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < target.stat().st_size


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint"])
def test_corrupt_file_is_named_with_its_size(tmp_path, content):
    path = tmp_path / "model.pt"
    save_atomic({"w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:300] if content is None else content)
    size = path.stat().st_size
    with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint \\({size} bytes; truncated or "
                                              "corrupt"):
        load_checkpoint(path)
    with pytest.raises(WeightLoadError, match=f"{path}: not a readable checkpoint"):
        read_checkpoint(path)


def test_missing_file_is_named(tmp_path):
    for read in (load_checkpoint, read_checkpoint):
        with pytest.raises(FileNotFoundError, match="checkpoint not found: .*gone.pt"):
            read(tmp_path / "gone.pt")


def test_empty_data_checkpoint_without_tensors(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save({"epoch": 3}, path)
    with pytest.raises(WeightLoadError, match="no state dict of tensors found"):
        load_pretrained(torch.nn.Linear(2, 2), path, verbose=False)


def test_run_folder_clash_names_every_difference_and_keeps_logs(tmp_path):
    claim_run_folder(tmp_path, "a", {"method": "a", "width": 2, "shape": (1, 2)})
    (tmp_path / "a.metrics.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(RunFolderClash, match="a.run.json holds a run of 'a' with other settings "
                                             "\\(method: 'a' there, 'b' now; width: 2 there, 4 now\\)"):
        claim_run_folder(tmp_path, "a", {"method": "b", "width": 4, "shape": (1, 2)}, resume=True)
    assert json.loads((tmp_path / "a.run.json").read_text())["method"] == "a"
    claim_run_folder(tmp_path, "a", {"method": "a", "width": 2, "shape": [1, 2]}, resume=True)  # JSON round trip
    assert (tmp_path / "a.metrics.csv").is_file()
    with pytest.warns(UserWarning, match="a.metrics.1.csv"):
        claim_run_folder(tmp_path, "a", {"method": "a", "width": 2, "shape": (1, 2)}, resume=False)
    assert (tmp_path / "a.metrics.1.csv").read_text() == "step,loss\n1,0.5\n"
    claim_run_folder(tmp_path, "b", {"method": "b", "width": 4})  # another run beside it: its own files
    assert json.loads((tmp_path / "b.run.json").read_text()) == {"method": "b", "width": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.metrics.1.csv", "a.run.json", "b.run.json"]
    with pytest.raises(RunFolderClash, match="ckpt.pt: a checkpoint of a 'a' run.*refusing to resume"):
        check_checkpoint_run({"run": {"method": "a"}}, {"method": "b"}, "ckpt.pt")
    check_checkpoint_run({"state_dict": {}}, {"method": "b"}, "old.pt")  # no record: nothing to compare


def _legacy_folder(root, record):
    root.mkdir()
    (root / "run.json").write_text(json.dumps(record))
    for file in ("last.pt", "metrics.csv", "metrics.1.csv", "config.json", "tensorboard/events.1", "images/e1.png"):
        (root / file).parent.mkdir(exist_ok=True)
        (root / file).write_text(file)
    return root


def test_run_folder_clash_earlier_layout_renamed_for_its_run_refused_or_left_alone(tmp_path):
    record = {"method": "a", "width": 2}
    other = _legacy_folder(tmp_path / "other", record)
    claim_run_folder(other, "b", {"method": "b", "width": 2})  # another method's run: nothing of it moves
    assert sorted(p.name for p in other.iterdir()) == ["b.run.json", "config.json", "images", "last.pt",
                                                       "metrics.1.csv", "metrics.csv", "run.json", "tensorboard"]
    with pytest.raises(RunFolderClash, match="run.json \\(written before runs were named\\) holds a run of 'a' "
                                             "with other settings \\(width: 2 there, 3 now\\)"):
        claim_run_folder(other, "a", {"method": "a", "width": 3}, resume=True)  # the same method, other settings
    own = _legacy_folder(tmp_path / "own", record)
    claim_run_folder(own, "a", record, resume=True)  # its own run: renamed to its names, then continued
    names = sorted(str(p.relative_to(own)) for p in own.rglob("*") if p.is_file())
    assert names == ["a.config.json", "a.last.pt", "a.metrics.1.csv", "a.metrics.csv", "a.run.json",
                     "images/a/e1.png", "tensorboard/a/events.1"]
    assert (own / "a.last.pt").read_text() == "last.pt" and (own / "a.metrics.csv").read_text() == "metrics.csv"


def test_wrong_checkpoint_shapes_are_named(tmp_path):
    path = tmp_path / "wide.pt"
    save_atomic({"state_dict": torch.nn.Linear(4, 4).state_dict()}, path)
    with pytest.raises(CheckpointError, match=f"{path}: its weights do not fit this model.*size mismatch"):
        load_state(torch.nn.Linear(2, 2), load_checkpoint(path)["state_dict"], path)
    with pytest.raises(WeightLoadError, match=f"(?s)too few tensors matched.*from {path}"):
        load_pretrained(torch.nn.Linear(2, 2), path, verbose=False)


def test_wrong_checkpoint_pickled_file_is_refused_plainly(tmp_path):
    path = tmp_path / "original.pt"
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict(), "best_loss": np.float64(0.1)}, path)
    for read, kind in ((load_checkpoint, pickle.UnpicklingError), (read_checkpoint, WeightLoadError)):
        with pytest.raises(kind) as err:
            read(path)
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no torch text in the traceback
        text = str(err.value)
        assert text.startswith(f"{path}: refused to unpickle it with weights_only=True")
        assert "trusted=True (or --trusted on the command line)" in text and "numpy" in text
        assert "\x1b[" not in text and "weights_only=False" not in text
    assert load_checkpoint(path, trusted=True)["best_loss"] == pytest.approx(0.1)
