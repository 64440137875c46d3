"""One run: (task, mode, fraction, encoder, seed) -> scores, on a fixed step budget.

Seed s fixes, for every encoder alike: the patient split, the label-fraction draw, the random parts of the
network (decoder or head, and the whole encoder of a random-init arm) and the order of the batches. The last
model is scored (no early stopping: the same budget for every arm, as OpenMind's fixed fine-tuning budgets).
"""

import time

import numpy as np
import torch

from eval3d.data import fraction_indices
from eval3d.encoders import load_encoder, seed_network
from eval3d.models import TaskNet
from eval3d.runtime import CPU

OPTIMIZERS = {"sgd": lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9),
              "adam": lambda p, lr: torch.optim.Adam(p, lr),
              "adamw": lambda p, lr: torch.optim.AdamW(p, lr, weight_decay=1e-5)}


def build(task, encoder, mode, seed):
    network = seed_network(encoder.arch, encoder.config, task.n_class, seed)
    report = load_encoder(network, encoder) if encoder.pretrained else None
    torch.manual_seed(seed)  # the head's initialisation does not depend on what the encoder loaded
    model = TaskNet(network, encoder.arch, encoder.config, task.kind, task.n_class, frozen=mode == "frozen")
    return model, report


def run_one(task, split, encoder, mode, fraction, seed, args, runtime=CPU):
    """Train and score one arm on runtime's device and precision; returns {metric: score, ..., n_train,
    n_test, seconds, matched, device, amp}. The network is built and seeded on the CPU, then moved, so an arm
    starts from the same weights on any device."""
    start = time.time()
    idx = fraction_indices(task.positive(split), fraction, seed)
    model, report = build(task, encoder, mode, seed)
    model.to(runtime.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS[args.optimizer](params, args.lr)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.train()
    loss = None
    for _ in range(args.steps):
        x, y = task.batch(split, idx, encoder.arch, rng, args.batch_size, args)
        x, y = runtime.put(x), runtime.put(y)
        with runtime.autocast():
            logits = model(x)
        loss = task.loss(logits, y)  # fp32: the tasks' losses cast the logits
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    final_loss = float(loss.detach()) if loss is not None else None  # read once: a read per step would wait on the GPU
    scores = task.evaluate(model, split, encoder.arch, args, runtime)
    return {**scores, "n_train": int(len(idx)), "n_test": len(split.test_x), "final_loss": final_loss,
            "seconds": round(time.time() - start, 2), **runtime.record(),
            "matched": f"{len(report.matched)}/{len(report.matched) + len(report.missing)}" if report else None}


def run_baseline(task, split, fraction, seed):
    """The raw-input baseline on the same training items as the arms of this fraction and seed (sklearn, CPU)."""
    idx = fraction_indices(task.positive(split), fraction, seed)
    return {**task.raw(split, idx, seed), "n_train": int(len(idx)), "n_test": len(split.test_x), **CPU.record()}
