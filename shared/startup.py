"""Start-up settings and checks a training CLI makes once, before its first step.

`cudnn_autotune(device)`: cuDNN benchmark mode for networks whose input shape never changes (it times the
convolution algorithms on the first batch and keeps the fastest), unless deterministic algorithms are asked for.

`check_shared_memory(...)`: DataLoader workers hand batches to the training process through /dev/shm. A
container's default /dev/shm is 64 MB, so workers x prefetch x batch bytes above it ends in a bus error
("DataLoader worker ... is killed by signal: Bus error") minutes into a run. This warns at start instead,
naming the flag that lowers it.
"""

import shutil
import warnings

import torch

SHM = "/dev/shm"


def cudnn_autotune(device):
    """Turn on torch.backends.cudnn.benchmark on CUDA unless determinism was requested; returns whether it did."""
    deterministic = torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled()
    if torch.device(device).type != "cuda" or deterministic:
        return False
    torch.backends.cudnn.benchmark = True
    return True


def shared_memory_bytes(path=SHM):
    """Free bytes in /dev/shm, or None where there is none (macOS, Windows)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def loader_shm_bytes(workers, batch_bytes, prefetch_factor=2):
    """What the workers' queued batches can hold in shared memory at once: workers x prefetch x batch."""
    return int(workers) * int(prefetch_factor or 2) * int(batch_bytes) if workers else 0


def check_shared_memory(workers, batch_bytes, flag, prefetch_factor=2, free=None, what="batch"):
    """Warn when workers x prefetch x batch bytes exceed the free space in /dev/shm; returns the estimate.

    flag: the command-line option that lowers it (e.g. '--workers'), named in the warning with a value that fits.
    """
    need = loader_shm_bytes(workers, batch_bytes, prefetch_factor)
    free = shared_memory_bytes() if free is None else free
    if need == 0 or free is None or need <= free:
        return need
    per_worker = max(1, int(prefetch_factor or 2) * int(batch_bytes))
    fits = free // per_worker
    warnings.warn(
        f"{SHM} has {free / 2**20:.0f} MiB free, but {workers} loader workers x prefetch {prefetch_factor or 2} x "
        f"{batch_bytes / 2**20:.1f} MiB per {what} can hold {need / 2**20:.0f} MiB there: expect a bus error in "
        f"a DataLoader worker. Lower it with {flag} {fits}" + (" (or 0: load in the main process)" if fits else "")
        + f", or enlarge {SHM} (docker run --shm-size=8g).", stacklevel=2)
    return need


def tensor_bytes(*tensors):
    """Total bytes of some tensors (or nested lists/tuples/dicts of them): one batch, for check_shared_memory."""
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
        elif isinstance(t, dict):
            total += tensor_bytes(*t.values())
        elif isinstance(t, (list, tuple)):
            total += tensor_bytes(*t)
    return total

