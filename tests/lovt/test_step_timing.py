"""lovt/train.py's StepTimingCallback under gradient accumulation: Lightning writes one row per optimizer step,
so the values logged must be the per-batch means over the accumulated batches, not the last batch's."""

import types

import torch

from lovt import train as lovt_train


class _Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_logged_timing_is_the_mean_over_the_accumulation_window(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(lovt_train, "time", clock)
    logged = []
    module = types.SimpleNamespace(device=torch.device("cpu"),
                                   log=lambda key, value, **kw: logged.append((batch_idx, key, value)))
    trainer = types.SimpleNamespace(accumulate_grad_batches=4, num_training_batches=8)
    cb = lovt_train.StepTimingCallback()
    cb.on_train_epoch_start(trainer, module)
    batch = {"scan": torch.zeros(2, 1, 4, 4)}
    # batch i: waits i * 0.01 s for data, then computes 1 s (batch 3 holds the optimizer step: 5 s)
    for batch_idx in range(8):
        clock.now += batch_idx * 0.01
        cb.on_train_batch_start(trainer, module, batch, batch_idx)
        clock.now += 5.0 if batch_idx % 4 == 3 else 1.0
        cb.on_train_batch_end(trainer, module, None, batch, batch_idx)
    at = {(i, k): v for i, k, v in logged}
    # window 1: batches 1-3 measured (batch 0 has no previous end): (1 + 1 + 5) / 3 s, waits (0.01+0.02+0.03) / 3
    assert abs(at[(3, "step_s")] - (0.01 + 1 + 0.02 + 1 + 0.03 + 5) / 3) < 1e-9
    assert abs(at[(3, "data_wait_s")] - 0.02) < 1e-9
    # window 2: batches 4-7, a fresh mean (the logged value at its last batch is what Lightning writes)
    assert abs(at[(7, "step_s")] - (0.04 + 1 + 0.05 + 1 + 0.06 + 1 + 0.07 + 5) / 4) < 1e-9
    assert abs(at[(7, "data_wait_s")] - 0.055) < 1e-9
