"""Where a training loop's time goes: waiting for data versus the whole step, logged as metrics columns.

    timer = StepTimer(device)
    for batch in timer.wrap(loader):       # time blocked in the loader's next() is accumulated
        ...train step...
        logger.log(step, loss=..., **timer.lap())   # per-step means since the last lap

`lap()` returns {"data_wait_s", "step_s"}: the mean seconds per step spent blocked in next() and the mean
wall seconds per step, over the steps since the previous lap (or since the
iteration started; time outside the iteration, e.g. validation, is not counted). On CUDA it synchronises
first, so step_s holds the GPU work of those steps, and adds "peak_mem_gib" and "peak_reserved_gib": the
peaks, since the process started, of memory held by tensors and of memory the caching allocator reserved
(what the card must have). tools/gpu_check.py reads these columns.
"""

import time

import torch

# The metrics columns that StepTimer.lap() writes: wall-clock readings, different in any two runs of the same
# computation (comparisons of a resumed run with an uninterrupted one leave them out).
TIMING_COLUMNS = ("data_wait_s", "step_s", "peak_mem_gib", "peak_reserved_gib")


class StepTimer:
    def __init__(self, device=None):
        self.device = torch.device(device) if device is not None else None
        self._reset()

    def _reset(self):
        self._t0, self._wait, self._steps = time.perf_counter(), 0.0, 0

    def wrap(self, iterable):
        """Yield from `iterable`, adding the time each next() blocks; restarts the clock."""
        iterator = iter(iterable)
        self._reset()
        while True:
            t = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            self._wait += time.perf_counter() - t
            self._steps += 1
            yield item

    def lap(self):
        """Per-step means since the last lap; empty when no step was taken."""
        cuda = self.device is not None and self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        n = self._steps
        if n == 0:
            return {}
        out = {"data_wait_s": self._wait / n, "step_s": (time.perf_counter() - self._t0) / n}
        if cuda:
            out["peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            out["peak_reserved_gib"] = torch.cuda.max_memory_reserved(self.device) / 2**30
        self._reset()
        return out
