"""bf16 autocast for the Genesis loops, with the CPU case made safe.

PyTorch 2.12's CPU bf16 conv3d backward through oneDNN can return garbage weight gradients (1e5 to
1e36) for tiny spatial sizes (e.g. the 2x2x1 bottleneck of 16x16x8 cubes), depending on what ran
earlier in the process; the native (non-oneDNN) kernels are stable. So `--amp on` on a CPU warns and
runs forward and backward with oneDNN switched off; on a GPU nothing changes.
"""

import contextlib
import warnings

import torch

CPU_BF16_WARNING = ("--amp on a CPU: bf16 autocast runs with oneDNN switched off (its bf16 conv3d backward "
                    "can return garbage gradients for small volumes); slower than fp32 here, use --amp off "
                    "unless you are testing the bf16 path")


def use_amp(flag, device):
    """--amp auto|on|off -> bool: auto means on a GPU only."""
    return flag == "on" or (flag == "auto" and torch.device(device).type == "cuda")


def amp_guard(device, amp, stacklevel=3):
    """Context for a training loop (forward and backward): oneDNN off under CPU bf16, else nothing."""
    if amp and torch.device(device).type == "cpu":
        warnings.warn(CPU_BF16_WARNING, stacklevel=stacklevel)
        return _onednn_off()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _onednn_off():
    # only the `enabled` flag (torch.backends.mkldnn.flags() also resets TF32 and warns about it)
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
