"""VoCo v2 crop sampler: geometry, labels and augmentation rates of Large-Scale-Medical's voco_trans.py
(3x3 base crops of 64^3 from a 192x192x64 window, random 64^3 crops with centres uniform in [32, 160),
flips p 0.2 per axis, rot90 p 0.2 with k uniform in 1..3 in the axial plane, shift U(-0.1, 0.1) p 0.5)."""

import numpy as np
import pytest
import torch

from voco.v2.data import WindowedVoCoDataset, v2_crops, v2_transforms, window_corner

N = 300  # samples of 11 crops for the geometry
N_AUG = 120  # and for the augmentation rates (MONAI's per-crop transforms are the slow part)


@pytest.fixture(scope="module")
def coded_volume():
    """v = x + 200 y + 40000 z: every voxel's value says where it is, and the gradients the orientation."""
    x, y, z = np.meshgrid(np.arange(192), np.arange(192), np.arange(64), indexing="ij")
    return torch.from_numpy((x + 200 * y + 40000 * z).astype(np.float64))[None]


def test_geometry_without_augmentation(coded_volume):
    crops = v2_crops(sw_batch_size=2, aug=False)
    assert crops.volume_size == (192, 192, 64)
    centres = []
    for seed in range(N):
        out = crops(coded_volume, np.random.default_rng(seed))
        assert out["image"].shape == (2, 1, 64, 64, 64) and out["crops"].shape == (9, 1, 64, 64, 64)
        for k in range(9):  # base crop k = 3i + j at (64i, 64j), the whole depth, no resize
            i, j = divmod(k, 3)
            assert out["crops"][k, 0, 0, 0, 0].item() == 64 * i + 200 * 64 * j
        for (x0, y0), img, lab in zip(out["corners"].tolist(), out["image"], out["labels"]):
            assert img[0, 0, 0, 0].item() == x0 + 200 * y0 and img[0, -1, -1, -1].item() == (
                x0 + 63 + 200 * (y0 + 63) + 40000 * 63)
            assert lab.sum().item() == pytest.approx(1.0) and lab.dtype == torch.float64
            centres.append((x0 + 32, y0 + 32))
    c = np.array(centres)
    assert c.min() == 32 and c.max() == 159  # randint(32, 160)
    sd = 128 / 12 ** 0.5  # uniform over 128 integers
    assert abs(c.mean() - 95.5) < 4 * sd / len(c.ravel()) ** 0.5 and abs(c.std() - sd) < 2


def _in_plane_identity_and_z_flip(crop):
    g = crop[0]
    gx, gy, gz = (g[1, 0, 0] - g[0, 0, 0]).item(), (g[0, 1, 0] - g[0, 0, 0]).item(), (g[0, 0, 1] - g[0, 0, 0]).item()
    return (gx == 1 and gy == 200), gz == -40000


def test_augmentation_rates(coded_volume):
    crops = v2_crops(sw_batch_size=2, aug=True)
    identity = zflip = 0
    zeros = torch.zeros_like(coded_volume)
    offsets = []
    for seed in range(N_AUG):
        out = crops(coded_volume, np.random.default_rng(seed))
        for c in torch.cat([out["image"], out["crops"]]):
            same, flipped = _in_plane_identity_and_z_flip(c)
            identity += same
            zflip += flipped
        flat = crops(zeros, np.random.default_rng(seed))
        offsets += [c.flatten()[0].item() for c in torch.cat([flat["image"], flat["crops"]])]
    m = N_AUG * 11
    # in-plane identity: no x/y flip and no rot (0.8^3) or both flips (a half turn) with k = 2 (0.2^3 / 3)
    p_identity = 0.8 ** 3 + 0.2 ** 3 / 3
    for observed, p in ((identity / m, p_identity), (zflip / m, 0.2)):
        assert abs(observed - p) < 4 * (p * (1 - p) / m) ** 0.5, (observed, p)
    offsets = np.array(offsets)
    shifted = offsets[offsets != 0]
    assert abs(len(shifted) / m - 0.5) < 4 * (0.25 / m) ** 0.5
    assert shifted.min() >= -0.1 and shifted.max() <= 0.1 and abs(shifted.mean()) < 0.01
    assert np.all(np.abs(offsets[offsets != 0]) > 0)


def test_window_is_uniform_and_fixed_per_pass():
    rng = np.random.default_rng(0)
    corners = np.array([window_corner((200, 195, 64), (192, 192, 64), rng) for _ in range(2000)])
    assert set(corners[:, 0]) == set(range(9)) and set(corners[:, 1]) == set(range(4)) and set(corners[:, 2]) == {0}

    class Base:
        def __getitem__(self, i):
            return {"image": torch.arange(200 * 195 * 70, dtype=torch.float32).reshape(1, 200, 195, 70)}

    ds = WindowedVoCoDataset([{"image": "a.nii.gz"}], Base(), v2_crops(aug=False), seed=3)
    first = ds.load(0)
    assert first.shape == (1, 192, 192, 64)
    assert torch.equal(ds.load(0), first)  # same pass, same window
    ds.set_epoch(1)
    assert not torch.equal(ds.load(0), first)


def test_pretransforms_make_at_least_the_window(btcv_root):
    from voco.data import load_datalist

    item = load_datalist(btcv_root / "btcv.json")[0]
    for window in ("crop", "resize"):
        vol = v2_transforms((192, 192, 64), window=window)(dict(item))["image"]
        assert vol.shape[0] == 1 and all(s >= w for s, w in zip(vol.shape[1:], (192, 192, 64)))
        assert 0 <= vol.min() and vol.max() <= 1
        if window == "resize":
            assert tuple(vol.shape[1:]) == (192, 192, 64)
        else:  # 1.5 mm spacing
            assert np.allclose(np.diag(np.asarray(vol.affine))[:3].__abs__(), 1.5)


def test_crops_on_device_give_the_worker_crops():
    """`--crops_on device` for the v2 grid: the same crops, labels and augmentation as the worker path."""
    from voco.device_crops import VolumesWithParameters

    class Base:
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.rand(1, 200, 196, 70, generator=g)}

    items = [{"image": f"{i}.nii.gz"} for i in range(2)]
    ds = WindowedVoCoDataset(items, Base(), v2_crops(sw_batch_size=2), seed=5)
    ds.set_epoch(2)
    workers = torch.utils.data.default_collate([ds[0], ds[1]])
    params = VolumesWithParameters(ds)
    device = params.device_crops(torch.utils.data.default_collate([params[0], params[1]]), torch.device("cpu"))
    for key in ("image", "crops", "labels"):
        torch.testing.assert_close(device[key], workers[key], rtol=0, atol=0)
