"""Where the networks run and in what precision, decided once (eval3d.run) and used by every step.

--device: cuda when a GPU is present, else cpu; an index-less 'cuda' becomes this process's GPU
(shared.distributed.resolve_device). --amp: bf16 autocast by default on CUDA (as the methods fine-tune), fp32 on
the CPU. Autocast covers the forward passes only; the losses are computed in fp32 outside it. The raw-input
baselines (sklearn) never leave the CPU.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from shared.distributed import resolve_device

AMP_CHOICES = ("bf16", "none")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp: str  # "bf16" or "none"

    @classmethod
    def from_flags(cls, device=None, amp=None):
        """None means the default: cuda if available (else cpu); bf16 on cuda, none on cpu."""
        device = resolve_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"eval3d: --device {device} but torch sees no CUDA device")
        amp = amp or ("bf16" if device.type == "cuda" else "none")
        if amp not in AMP_CHOICES:
            raise SystemExit(f"eval3d: --amp {amp}: choose from {AMP_CHOICES}")
        return cls(device, amp)

    @property
    def cuda(self):
        return self.device.type == "cuda"

    def autocast(self):
        if self.amp == "none":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def put(self, tensor):
        """A CPU batch onto the device: through pinned memory so the copy is asynchronous and the next batch
        is built on the CPU while the GPU still computes (nothing to do on the CPU)."""
        if not self.cuda:
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def record(self):
        """What each result entry says it ran on."""
        return {"device": str(self.device), "amp": self.amp}


CPU = Runtime(torch.device("cpu"), "none")  # the default of the functions that take a runtime
