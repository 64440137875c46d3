"""Fixtures shared by every test folder.

`sample_data` is the embedded sample data (see shared/sample_data), generated once per test session
(once for all pytest-xdist workers, under a file lock) into pytest's temporary folder.
"""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on a two-core machine


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def torch_global_state():
    """Put torch's process-wide settings back after each test: in-process demo tests call
    shared.demo.make_deterministic, whose thread count (2 threads per worker oversubscribes two cores and
    made later tests in the worker many times slower) and determinism flags would leak into the next tests."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    yield
    torch.set_num_threads(saved[0])
    torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[3], saved[4]


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
    """Path of a sample-data root holding every dataset of shared.sample_data (seed 0)."""
    from filelock import FileLock

    from shared.sample_data import generate

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by all workers of this session
    out = root / "sample_data"
    with FileLock(str(root / "sample_data.lock")):
        generate(out, seed=0)  # skips the datasets already complete
    return out
