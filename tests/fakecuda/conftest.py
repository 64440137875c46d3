"""The fake-CUDA fixture: each method's real CLI `main(argv)` runs its first steps 'on cuda' on this CPU machine.

See cuda_shim.py for what is faked and how strictly. The tests here exist for the defects that only show on a
GPU: an index-less device handed to torch.cuda.set_device, RNG states loaded onto the GPU and handed to the CPU
generators, CPU and CUDA tensors mixed in one op, a checkpoint that cannot be resumed on another GPU count.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cuda_shim import fake_cuda  # noqa: E402


@pytest.fixture
def cuda():
    """One fake GPU for the test (yields the FakeCuda: .calls lists what the code asked of torch.cuda).

    Starts from torch's default determinism settings and puts the previous ones back: an in-process demo
    test (shared.demo.make_deterministic) earlier in the same worker would otherwise turn off cuDNN autotuning
    here, and the result would depend on test order."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = torch.backends.cudnn.benchmark = False
    try:
        with fake_cuda(device_count=1) as fake:
            yield fake
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
