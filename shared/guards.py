"""Guards every training loop shares: stop on a non-finite loss, naming the step, instead of training to NaN.

`LossWatch` is what the training loops use: `observe(loss, step)` every step, `check()` at each logging interval
and before every checkpoint save. It raises `NonFiniteLossError` ("loss is nan at step 12 (epoch 0)..."), so a
run never exits 0, nor saves a checkpoint, after its loss or weights became NaN.

- On a GPU, `observe` records on the device (no host sync per step); `check` reads it. On a CPU there is no
  queue to keep full, so `observe` checks at once and stops before the step's backward, as `check_finite_loss`.
- With an enabled GradScaler (fp16), a non-finite loss is the scaler's to handle: it skips that optimizer step
  and lowers the scale (a transient fp16 overflow must not end the run, nor does it in the originals). The run
  stops only after MAX_CONSECUTIVE_SKIPS consecutive steps with a non-finite loss, or when a weight is
  non-finite; the message says which.

`check_finite_loss(loss, step)` is the one-off version (it syncs). The fault-injection tests make a loss
non-finite on purpose through the environment variable SSL_MED_FAULT_NAN_STEP=<step> (`inject_nan`); unset, it
does nothing.
"""

import math
import os

import torch

FAULT_NAN_STEP_ENV = "SSL_MED_FAULT_NAN_STEP"

# With an enabled GradScaler: consecutive steps with a non-finite loss (each skipped by the scaler) after which
# the run stops. 10 halvings of the scale is far beyond a transient fp16 overflow, which the next batches clear.
MAX_CONSECUTIVE_SKIPS = 10

ADVICE = ("Check the inputs for NaN/inf values, lower the learning rate, or turn off mixed precision (on CPUs, "
          "bf16 3D convolutions can be unstable).")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


def inject_nan(loss, step):
    """The loss, or NaN in its place at the step named by SSL_MED_FAULT_NAN_STEP (tests only)."""
    planted = os.environ.get(FAULT_NAN_STEP_ENV)
    if planted is not None and int(planted) == int(step):
        return loss * float("nan")
    return loss


def check_finite_loss(loss, step, where=""):
    """Raise NonFiniteLossError when `loss` (tensor or float) is NaN or infinite at `step`."""
    value = float(loss.detach().float()) if torch.is_tensor(loss) else float(loss)
    if not math.isfinite(value):
        at = f"step {step}" + (f" ({where})" if where else "")
        raise NonFiniteLossError(
            f"loss is {value} at {at}; stopping before the weights are overwritten. The last checkpoint "
            f"holds the weights before it. {ADVICE}")
    return value


def scaler_enabled(scaler):
    return scaler is not None and scaler.is_enabled()


class LossWatch:
    """Watches one loss of a training loop for NaN/inf without a host sync per step (see the module docstring).

    watch = LossWatch(device, scaler, parameters=model.parameters())
    per step:      watch.observe(loss, step, "epoch 3")          # before backward
    every log:     watch.check()                                 # and before every checkpoint save
    """

    def __init__(self, device, scaler=None, parameters=None, max_skips=MAX_CONSECUTIVE_SKIPS, name="loss"):
        self.device = torch.device(device)
        self.skips_allowed = scaler_enabled(scaler)
        self.parameters = list(parameters) if parameters is not None else []
        self.max_skips, self.name = int(max_skips), name
        self.immediate = self.device.type == "cpu"
        # [first non-finite step since the last check (-1: none), consecutive non-finite steps, their maximum]
        self._steps = torch.tensor([-1, 0, 0], dtype=torch.int64, device=self.device)
        self._first_value = torch.zeros((), dtype=torch.float32, device=self.device)
        self._where = {}

    def observe(self, loss, step, where=""):
        """Record this step's loss (device ops only); on a CPU, check at once."""
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss).all()
        first, run, longest = self._steps.unbind()
        new_first = (first < 0) & bad
        run = torch.where(bad, run + 1, torch.zeros_like(run))
        self._steps = torch.stack([torch.where(new_first, torch.full_like(first, int(step)), first), run,
                                   torch.maximum(longest, run)])
        self._first_value = torch.where(new_first, loss.reshape(-1)[0] if loss.dim() else loss, self._first_value)
        self._where[int(step)] = where
        if self.immediate:
            self.check(at_step=step)

    def check(self, at_step=None):
        """Raise NonFiniteLossError if the loss (or, after a skipped step, a weight) went non-finite."""
        first, run, longest = (int(v) for v in self._steps.tolist())
        if first < 0:
            self._where.clear()
            return
        value, where = float(self._first_value), self._where.get(first, "")
        at = f"step {first}" + (f" ({where})" if where else "")
        if not self.skips_allowed:
            when = ("stopping before the weights are overwritten. The last checkpoint holds the weights before it."
                    if self.immediate else
                    f"found at the check after step {max(self._where, default=first)} (the loss is read on the "
                    "host once per logging interval); nothing after it is saved: the last checkpoint holds the "
                    "weights before it.")
            raise NonFiniteLossError(f"{self.name} is {value} at {at}; {when} {ADVICE}")
        if longest >= self.max_skips:
            raise NonFiniteLossError(
                f"{self.name} is {value} at {at} and stayed non-finite for {longest} consecutive steps, each "
                f"skipped by the GradScaler: stopping (a run stops after {self.max_skips} consecutive skipped "
                f"steps, or on a non-finite weight). The last checkpoint holds the weights before it. {ADVICE}")
        broken = [i for i, p in enumerate(self.parameters) if not bool(torch.isfinite(p.detach()).all())]
        if broken:
            raise NonFiniteLossError(
                f"{self.name} is {value} at {at} and a weight is now non-finite (parameter #{broken[0]} of "
                f"{len(self.parameters)}): stopping; the GradScaler skips steps with non-finite gradients, so "
                f"something else wrote NaN/inf. The last checkpoint holds the weights before it. {ADVICE}")
        # skipped steps the scaler handled: forget them, keep counting a run of them that is still going on
        self._steps = torch.tensor([-1, run, run], dtype=torch.int64, device=self.device)
        self._where.clear()
