"""Guards every training loop shares: stop on a non-finite loss, naming the step, instead of training to NaN.

`check_finite_loss(loss, step)` raises `NonFiniteLossError` ("loss is nan at step 12 (epoch 0)..."), so a run
never exits 0 after its weights became NaN. The fault-injection tests make a loss non-finite on purpose
through the environment variable SSL_MED_FAULT_NAN_STEP=<step> (`inject_nan`); unset, it does nothing.
"""

import math
import os

import torch

FAULT_NAN_STEP_ENV = "SSL_MED_FAULT_NAN_STEP"


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
            "holds the weights before it. Check the inputs for NaN/inf values, lower the learning rate, "
            "or turn off mixed precision (on CPUs, bf16 3D convolutions can be unstable).")
    return value
