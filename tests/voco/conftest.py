"""Fixtures for the VoCo tests: the sample BTCV-style CT and the tiny model/geometry settings."""

import json
import os

import pytest


@pytest.fixture(scope="session")
def btcv_root(tmp_path_factory):
    """Path of the sample BTCV folder (imagesTr, labelsTr, dataset_0.json, btcv.json): written once per session
    into the folder of the top-level `sample_data` fixture, under its lock (either fixture reuses it)."""
    from filelock import FileLock

    from shared.sample_data import generate

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by all workers of this session
    out = root / "sample_data"
    with FileLock(str(root / "sample_data.lock")):
        generate(out, seed=0, only=["btcv"])  # skipped when already complete
    return out / "btcv"


@pytest.fixture(scope="session")
def small_json(btcv_root, tmp_path_factory):
    """A list with 2 training and 1 validation case of the sample data (paths relative to btcv_root)."""
    spec = json.loads((btcv_root / "dataset_0.json").read_text())
    small = dict(spec, training=spec["training"][:2], validation=spec["validation"][:1])
    path = tmp_path_factory.mktemp("voco_json") / "dataset_small.json"
    path.write_text(json.dumps(small))
    return path
