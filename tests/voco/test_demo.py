"""`make demo-voco`'s measurements (voco/demo_tasks.py): the per-patch intensity jitter of the probe and the liver
head on a frozen encoder with its raw-input and trivial baselines; the whole demo in a small configuration (slow)."""

import json

import numpy as np
import pytest
import torch

from shared.demo import verdict
from voco.demo_tasks import frozen_head_scores, jitter_intensity, mean_dice


def test_jitter_is_one_affine_map_per_patch_and_seeded():
    x = torch.arange(4 * 8, dtype=torch.float32).reshape(4, 1, 2, 2, 2) / 40 + 0.1  # in [0.1, 0.9)
    y = jitter_intensity(x, np.random.default_rng(0), scale=0.3, shift=0.05)
    for patch_in, patch_out in zip(x, y):  # one contrast a and brightness b per patch: y = a x + b
        a, b = np.polyfit(patch_in.flatten().numpy(), patch_out.flatten().numpy(), 1)
        assert np.allclose(patch_out.flatten().numpy(), a * patch_in.flatten().numpy() + b, atol=1e-5)
        assert 0.7 <= a <= 1.3 and -0.05 <= b <= 0.05
    slopes = {round(float((p[0, 1, 0, 0] - p[0, 0, 0, 0]) / (q[0, 1, 0, 0] - q[0, 0, 0, 0])), 4) for p, q in zip(y, x)}
    assert len(slopes) == 4  # a different map for every patch
    assert torch.equal(y, jitter_intensity(x, np.random.default_rng(0), scale=0.3, shift=0.05))
    assert not torch.equal(y, jitter_intensity(x, np.random.default_rng(1), scale=0.3, shift=0.05))
    u = jitter_intensity((x * 255).round().to(torch.uint8), np.random.default_rng(0), scale=0.3, shift=0.05)
    assert u.dtype == torch.uint8 and (u.float() / 255 - y).abs().max() < 0.01  # uint8 patches stay uint8
    assert jitter_intensity(torch.ones(3, 1, 2, 2, 2), np.random.default_rng(0), 0.5, 0.5).max() <= 1.0  # clipped


def test_mean_dice_scores_nothing_as_zero():
    target = np.zeros((2, 4, 4, 4), bool)
    target[:, 1:3, 1:3, 1:3] = True
    assert mean_dice(np.zeros_like(target), target) == 0.0 and mean_dice(target, target) == 1.0


def test_liver_head_has_raw_and_trivial_baselines_per_seed():
    from voco.models import Swin

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0.3, 0.05, (5, 1, 32, 32, 32)).astype(np.float32))
    y = torch.zeros(5, 32, 32, 32, dtype=torch.long)
    for i in range(5):  # a bright "liver" (label 6) at a different place in each volume
        c = 6 + 3 * i
        x[i, 0, c:c + 10, 8:20, 8:20] += 0.4
        y[i, c:c + 10, 8:20, 8:20] = 6

    def build(seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        return Swin(feature_size=12, hidden_dim=8, out_dim=8, window_size=2, double_input=True)
    scores = frozen_head_scores(x[:3], y[:3], x[3:], y[3:], build(0), build, seeds=[0, 1], max_samples=2000)
    assert scores["seeds"] == [0, 1] and scores["trivial"] == [0.0, 0.0]
    assert len(scores["raw"]) == len(scores["pretrained"]) == len(scores["random"]) == 2
    assert min(scores["raw"]) > 0.8  # a bright blob: raw voxels find it
    assert scores["random"][0] == pytest.approx(scores["pretrained"][0])  # seed 0: the same network


@pytest.mark.slow
def test_demo_writes_v1_and_v2_rows_with_baselines_on_every_downstream_row(btcv_root, tmp_path):
    from voco import demo

    demo.main(["--sample", str(btcv_root.parent), "--runs", str(tmp_path), "--steps", "2", "--v2_steps", "1",
               "--seeds", "2", "--repeats", "2"])
    for method, n in (("voco", 4), ("voco-v2", 3)):
        row = json.loads((tmp_path / "demo" / method / "row.json").read_text())
        assert len(row["metrics"]) == n and "pretext: 0 of the 2 held-out volumes" in row["seen"]
        for m in row["metrics"]:
            verdict(m)
            if m["kind"] != "pretext":
                assert len(m["raw"]) == len(m["trivial"]) == len(m["seeds"])
