"""The fake-CUDA fixture: each method's real CLI `main(argv)` runs its first steps 'on cuda' on this CPU machine.

See cuda_shim.py for what is faked and how strictly. The tests here exist for the defects that only show on a
GPU: an index-less device handed to torch.cuda.set_device, RNG states loaded onto the GPU and handed to the CPU
generators, CPU and CUDA tensors mixed in one op, a checkpoint that cannot be resumed on another GPU count.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cuda_shim import fake_cuda  # noqa: E402


@pytest.fixture
def cuda():
    """One fake GPU for the test (yields the FakeCuda: .calls lists what the code asked of torch.cuda)."""
    with fake_cuda(device_count=1) as fake:
        yield fake
