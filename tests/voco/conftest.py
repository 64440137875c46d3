"""Fixtures for the VoCo tests: the sample BTCV-style CT and the tiny model/geometry settings."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="session")
def btcv_root(tmp_path_factory):
    """Path of the sample BTCV folder (imagesTr, labelsTr, dataset_0.json, btcv.json)."""
    try:
        from shared.sample_data import generate
    except ImportError:
        generate = None
    root = tmp_path_factory.mktemp("voco_sample")
    if generate is not None:
        generate(root, seed=0, only=["btcv"])
    else:  # the generator's entry point is not there yet: write the BTCV part directly
        from shared.sample_data.ct import write_btcv
        write_btcv(root / "btcv", np.random.default_rng(0))
    return root / "btcv"


@pytest.fixture(scope="session")
def small_json(btcv_root, tmp_path_factory):
    """A list with 2 training and 1 validation case of the sample data (paths relative to btcv_root)."""
    spec = json.loads((btcv_root / "dataset_0.json").read_text())
    small = dict(spec, training=spec["training"][:2], validation=spec["validation"][:1])
    path = tmp_path_factory.mktemp("voco_json") / "dataset_small.json"
    path.write_text(json.dumps(small))
    return path
