"""Atomic checkpoint writing and weights_only-safe RNG state, for exact resumption.

A checkpoint is written to a temporary file in the same folder and renamed over the target, so a run
killed mid-write leaves the previous checkpoint intact. Everything saved should be tensors and plain
Python values so that `torch.load(weights_only=True)` reads it back.
"""

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


def save_atomic(obj, path):
    """torch.save to `path` via a temporary file and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path, trusted=False, map_location="cpu"):
    """torch.load with weights_only=True unless `trusted`; a clear error when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=not trusted)


def rng_state():
    """The Python, NumPy, torch CPU and CUDA generator states, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what `rng_state` captured."""
    random.setstate(_lists_to_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(x):
    return [_tuples_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _lists_to_tuples(x):
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x
