import pickle
import random

import numpy as np
import pytest
import torch

from shared.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state


def test_save_atomic_round_trip_and_weights_only(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    obj = {"epoch": 3, "state_dict": {"w": torch.arange(4.0)}, "best_loss": 0.5, "rng": rng_state()}
    save_atomic(obj, path)
    loaded = load_checkpoint(path)  # weights_only=True
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.arange(4.0))
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"epoch": 1}, path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_atomic({"epoch": 2, "bad": lambda: None}, path)  # lambdas cannot be pickled
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_rng_state_restores_every_generator_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_atomic(rng_state(), tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), np.random.randn())
    set_rng_state(load_checkpoint(tmp_path / "rng.pt"))
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), np.random.randn())
    assert first == again


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_checkpoint(tmp_path / "absent.pt")
