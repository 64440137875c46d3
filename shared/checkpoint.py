"""Atomic checkpoint writing and weights_only-safe RNG state, for exact resumption.

A checkpoint is written to a temporary file in the same folder and renamed over the target, so a run
killed mid-write leaves the previous checkpoint intact. Everything saved should be tensors and plain
Python values so that `torch.load(weights_only=True)` reads it back.
"""

import os
import pickle
import random
import re
import signal
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch


def replace_atomic(path, write):
    """Call write(binary file) on a temporary file next to `path`, then rename it over `path`.

    The file gets the permissions of a plain open() (umask), not mkstemp's 0600, so a shared run or release
    folder stays readable by others."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_atomic(obj, path):
    """torch.save to `path` via a temporary file and os.replace."""
    path = Path(path)

    def write(f):
        torch.save(obj, f)
        _fault_kill_in_save(f, path)

    return replace_atomic(path, write)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, is refused, or does not fit; the message names the file."""


class CheckpointRefused(CheckpointError, pickle.UnpicklingError):
    """weights_only=True refused to unpickle the file (it holds Python objects beyond tensors and numbers)."""


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def refusal_message(path, err):
    """Why `torch.load(weights_only=True)` refused `path`, in one line, with the opt-in to use instead."""
    text = ANSI.sub("", str(err))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    what = f"it holds a pickled {found.group(1)}" if found else "it holds pickled Python objects"
    return (f"{path}: refused to unpickle it with weights_only=True ({what}, and unpickling can run code). "
            "If you trust this file, pass trusted=True (or --trusted on the command line).")


def is_refusal(err):
    """Whether torch.load(weights_only=True) refused the file (as opposed to failing to read it)."""
    # torch names the refused class ("Unsupported global: GLOBAL numpy...", "unsupported GLOBAL posix.system");
    # a garbage file fails with "Unsupported operand": that is corruption, not a refusal
    return isinstance(err, pickle.UnpicklingError) and "GLOBAL " in str(err)


def read_error(path, err):
    """CheckpointError for a file torch.load could not read (truncated, corrupt, not a checkpoint)."""
    if is_refusal(err):
        return CheckpointRefused(refusal_message(path, err))
    size = path.stat().st_size if path.is_file() else 0
    reason = ANSI.sub("", str(err)).split(".")[0].strip() or type(err).__name__
    hint = (" If it is an old checkpoint with pickled Python objects and you trust it, pass trusted=True "
            "(or --trusted)." if isinstance(err, pickle.UnpicklingError) else "")
    return CheckpointError(f"{path}: not a readable checkpoint ({size} bytes; truncated or corrupt? "
                           f"{type(err).__name__}: {reason}).{hint}")


def load_checkpoint(path, trusted=False, map_location="cpu"):
    """torch.load with weights_only=True unless `trusted`; every failure is a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError, KeyError, ...
        # a refusal drops torch's text (colour codes, advice to pass weights_only=False): ours says what to do
        raise read_error(path, err) from (None if is_refusal(err) else err)


def load_state(module, state, path, what="weights"):
    """module.load_state_dict(state) (strict), or a CheckpointError naming `path` and the first mismatches."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:4]
        raise CheckpointError(f"{path}: its {what} do not fit this model/configuration (another architecture, "
                              f"width or class count?): {' '.join(lines)[:600]}") from err


# Test-only hook (fault-injection suite): SSL_MED_FAULT_KILL_STEP=<step> SIGKILLs the process when a
# training loop calls fault_kill_at_step(step) with that step (kill -9 between two checkpoints). Inert when unset.
FAULT_KILL_STEP_ENV = "SSL_MED_FAULT_KILL_STEP"


def fault_kill_at_step(step):
    planted = os.environ.get(FAULT_KILL_STEP_ENV)
    if planted is not None and int(planted) == int(step):
        os.kill(os.getpid(), signal.SIGKILL)


# Test-only hook (fault-injection suite): SSL_MED_FAULT_KILL_IN_SAVE=<n> SIGKILLs the process in the middle
# of writing its n-th checkpoint (half the bytes on disk, the target not yet replaced); <file name>:<n> counts
# only the checkpoints written to that file name (e.g. checkpoint.pth:2). Inert when unset. Every method's
# kill tests go through these two hooks (and shared.guards' NaN hook), none patches the code it tests.
FAULT_KILL_IN_SAVE_ENV = "SSL_MED_FAULT_KILL_IN_SAVE"
_saves = {}


def _fault_kill_in_save(f, path):
    planted = os.environ.get(FAULT_KILL_IN_SAVE_ENV)
    if planted is None:
        return
    name, _, n = planted.rpartition(":")
    if name and name != path.name:
        return
    _saves[name] = _saves.get(name, 0) + 1
    if _saves[name] == int(n):
        f.flush()
        f.truncate(max(1, f.tell() // 2))
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)


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
    """Restore what `rng_state` captured, from a checkpoint loaded onto any device and on any number of GPUs.

    The RNG tensors may arrive on the training device (load_checkpoint(..., map_location=device)): they are
    moved back to CPU bytes, the only form the generators accept. CUDA states are restored for the GPUs this
    machine has; a warning names those that could not be (fewer GPUs, or none, than when it was saved)."""
    random.setstate(_lists_to_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].cpu().numpy().astype(np.uint32), int(np_state["pos"]),
                         int(np_state["has_gauss"]), float(np_state["cached_gaussian"])))
    torch.set_rng_state(cpu_bytes(state["torch"]))
    if "cuda" in state:
        set_cuda_rng_states(state["cuda"])


def cpu_bytes(rng_tensor):
    """An RNG state tensor as torch's generators accept it: a CPU uint8 tensor (wherever it was loaded)."""
    return rng_tensor.detach().to("cpu", torch.uint8)


def set_generator_state(generator, state):
    """generator.set_state(state) for a state tensor loaded onto any device (a DataLoader's or sampler's)."""
    generator.set_state(cpu_bytes(state))


def set_cuda_rng_states(states):
    """Restore the per-GPU CUDA generator states that this machine has GPUs for; warn about the rest."""
    states = list(states)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, cuda_state in enumerate(states[:gpus]):
        torch.cuda.set_rng_state(cpu_bytes(cuda_state), index)
    if len(states) > gpus:
        lost = list(range(gpus, len(states)))
        warnings.warn(f"the checkpoint holds CUDA RNG states of {len(states)} GPU(s), this machine has {gpus}: "
                      f"restored {min(gpus, len(states))}, not those of GPU(s) {lost} (their random streams, "
                      "e.g. dropout or GPU-side augmentation, start afresh)", stacklevel=3)


def _tuples_to_lists(x):
    return [_tuples_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _lists_to_tuples(x):
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x
