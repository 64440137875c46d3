"""The batched self-restoration transforms against plain NumPy/SciPy references written here."""

import random

import numpy as np
import pytest
import torch
from scipy import ndimage

from shared.genesis import restoration as R

SHAPE = (1, 1, 64, 64, 32)


def _cubes(n=4, seed=0, shape=(64, 64, 32)):
    return torch.rand((n, 1, *shape), generator=torch.Generator().manual_seed(seed))


def _bbox(mask):
    idx = np.argwhere(mask)
    return idx.min(0), idx.max(0) + 1


def test_pipeline_shapes_range_and_target_is_undeformed():
    x = _cubes(8)
    before = x.clone()
    inputs, target, choice = R.restoration_pair(x, np.random.default_rng(0))
    assert inputs.shape == x.shape and target.shape == x.shape and choice.shape == (8,)
    assert inputs.dtype == torch.float32
    assert float(inputs.min()) >= 0.0 and float(inputs.max()) <= 1.0
    assert torch.equal(target, x)          # the original restores the undeformed cube
    assert torch.equal(x, before)          # nothing written in place (the original's in-painting did)
    assert not torch.allclose(inputs, x)


def test_pipeline_is_deterministic_for_a_seed():
    x = _cubes(6)
    a = R.restoration_pair(x, np.random.default_rng(7))
    b = R.restoration_pair(x, np.random.default_rng(7))
    c = R.restoration_pair(x, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[2], b[2])
    assert not torch.equal(a[0], c[0])


def test_warped_target_variant_restores_the_warped_cube():
    x = _cubes(3)
    _, target, _ = R.restoration_pair(x, np.random.default_rng(3), warped_target=True)
    rng = np.random.default_rng(3)
    gen = R.torch_generator(rng)
    expected = R.elastic_warp(x, rng, generator=gen)
    assert torch.allclose(target, expected)
    assert not torch.allclose(target, x)


def test_choice_probabilities_and_thresholds():
    choice = R.choose_transforms(20000, np.random.default_rng(0))
    freq = np.bincount(choice, minlength=4) / len(choice)
    assert np.allclose(freq, 0.25, atol=0.015)

    class Fixed:
        def random(self, n):
            return np.array([0.25, 0.2500001, 0.5, 0.75, 0.99])[:n]
    assert R.choose_transforms(5, Fixed()).tolist() == [0, 1, 1, 2, 3]  # r <= 0.25 -> shuffle, ...


def test_gaussian_smoothing_matches_scipy():
    noise = torch.rand(1, 1, 40, 48, 24, dtype=torch.float64) * 2 - 1
    ours = R.smooth_fields(noise)[0, 0].numpy()
    ref = ndimage.gaussian_filter(noise[0, 0].numpy(), sigma=8, mode="constant", cval=0.0, truncate=4.0)
    assert np.allclose(ours, ref, atol=1e-10)


def test_warp_matches_scipy_map_coordinates():
    rng = np.random.default_rng(0)
    x = _cubes(2, shape=(24, 20, 8))
    disp = torch.as_tensor(rng.normal(0, 4, size=(2, 8, 24, 20, 2)), dtype=torch.float32)  # N x Z x X x Y x 2
    ours = R.warp(x, disp).numpy()
    for b in range(2):
        ii, jj, kk = np.meshgrid(np.arange(24), np.arange(20), np.arange(8), indexing="ij")
        d0 = disp[b, ..., 1].permute(1, 2, 0).numpy()  # along X
        d1 = disp[b, ..., 0].permute(1, 2, 0).numpy()  # along Y
        ref = ndimage.map_coordinates(x[b, 0].numpy(), [ii + d0, jj + d1, kk], order=1, mode="reflect")
        assert np.allclose(ours[b, 0], ref, atol=1e-5)


def test_elastic_field_statistics_match_the_original_recipe():
    rng = np.random.default_rng(0)
    ref = []
    for _ in range(12):  # the original: Gaussian-smoothed U[-1, 1) noise times alpha, per axis
        noise = rng.random((64, 64, 32)) * 2 - 1
        ref.append(ndimage.gaussian_filter(noise, 8, mode="constant", cval=0) * 991)
    ref = np.stack(ref)
    ours = R.elastic_displacement((24, 1, 64, 64, 32), rng)[..., 1].permute(0, 2, 3, 1).numpy()
    exact = R.elastic_displacement((24, 1, 64, 64, 32), rng, exact=True)[..., 1].permute(0, 2, 3, 1).numpy()
    for field in (ours, exact):
        assert abs(field.std() / ref.std() - 1) < 0.12
        assert abs(field.mean()) < 0.5
    # the default draws from the field's Karhunen-Loeve expansion: its covariance must be G G^T per axis
    for n in (32, 64):
        g = R.gaussian_matrix(n, dtype=torch.float64)
        low_rank = R._kl_factor(n, 8.0, 4.0, torch.device("cpu"), torch.float64)
        assert torch.allclose(low_rank @ low_rank.T, g @ g.T, atol=1e-6 * float((g @ g.T).max()))
    assert 2.0 < ref.std() < 4.5  # the spec's ~3 voxels


def test_fused_elastic_grid_equals_warping_the_displacement():
    x = _cubes(2)
    fused = R.elastic_warp(x, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    via_field = R.warp(x, R.elastic_displacement(x.shape, rng, generator=R.torch_generator(rng)))
    assert torch.allclose(fused, via_field, atol=1e-4)


def test_chunked_elastic_warp_equals_one_pass_over_the_batch():
    x = _cubes(2 * R.CPU_CHUNK + 1)  # several chunks, the last one short
    rng = np.random.default_rng(4)
    chunked = R.elastic_warp(x, rng, generator=R.torch_generator(rng))
    rng = np.random.default_rng(4)
    one_pass = R.warp_grid(x, R.elastic_grid(x.shape, rng, generator=R.torch_generator(rng)))
    assert torch.allclose(chunked, one_pass, atol=1e-5)


@pytest.mark.parametrize("k", range(4))
def test_in_place_pipeline_equals_the_standalone_transforms(k):
    x = _cubes(2 * R.CPU_CHUNK + 1, seed=2)
    probs = [0.0] * 4
    probs[k] = 1.0
    inputs, _, choice = R.restoration_pair(x, np.random.default_rng(11), probs=probs)
    assert (choice == k).all()
    rng = np.random.default_rng(11)
    gen = R.torch_generator(rng)
    warped = R.elastic_warp(x, rng, generator=gen)
    R.choose_transforms(len(x), rng, probs)
    steps = (lambda v: R.local_pixel_shuffling(v, rng, generator=gen),
             lambda v: R.nonlinear_transform(v, rng),
             lambda v: R.image_in_painting(v, rng, generator=gen),
             lambda v: R.image_out_painting(v, rng, generator=gen))
    expected = steps[k](warped)
    assert torch.allclose(inputs, expected, atol=1e-6)
    assert not torch.allclose(inputs, warped)


def test_elastic_keeps_depth_profiles_and_warps_in_plane():
    z_profile = torch.linspace(0, 1, 32).view(1, 1, 1, 1, 32).expand(2, 1, 64, 64, 32).contiguous()
    warped = R.elastic_warp(z_profile, np.random.default_rng(1))
    assert torch.allclose(warped, z_profile, atol=1e-6)  # no displacement along Z
    x = _cubes(2)
    assert (R.elastic_warp(x, np.random.default_rng(1)) - x).abs().mean() > 0.05


def test_nonlinear_matches_np_interp_of_the_bezier_curve():
    x = _cubes(1, seed=3)
    for seed in range(6):
        xp, fp = R.bezier_mapping(np.random.default_rng(seed))
        ref = np.interp(x.numpy(), xp, fp)
        ours = R.nonlinear_transform(x, np.random.default_rng(seed)).numpy()
        assert np.abs(ours - ref).mean() < 1e-4 and np.abs(ours - ref).max() < 5e-3


def test_torch_bezier_tables_match_numpy():
    draws = np.random.default_rng(0).random((8, 5))
    ours = R.bezier_luts_torch(draws).numpy()
    for i, draw in enumerate(draws):
        ref = R.bezier_lut(_OneDraw(draw))
        assert np.abs(ours[i] - ref).max() < 1e-4


class _OneDraw:
    """A stand-in Generator that returns one fixed draw."""

    def __init__(self, draw):
        self.draw = draw

    def random(self, n):
        return self.draw[:n]


def test_nonlinear_is_monotone_or_inverted():
    grid = torch.linspace(0, 1, 2001).view(1, 1, 2001, 1, 1)
    increasing = inverted = 0
    for seed in range(60):
        y = R.nonlinear_transform(grid, np.random.default_rng(seed)).flatten()
        if y[0] < y[-1]:
            increasing += 1
            assert torch.all(torch.diff(y) >= -1e-6)  # the sorted branch is monotone non-decreasing
            assert abs(float(y[0])) < 1e-3 and abs(float(y[-1]) - 1) < 1e-3
        else:
            inverted += 1
            assert abs(float(y[0]) - 1) < 1e-3 and abs(float(y[-1])) < 1e-3
    assert increasing > 15 and inverted > 15  # each branch half of the time


def test_local_shuffle_permutes_within_a_small_block():
    x = _cubes(3)
    for b, out in enumerate(R.local_pixel_shuffling(x, np.random.default_rng(0), n_blocks=1)):
        changed = (out != x[b]).numpy()[0]
        if not changed.any():
            continue  # a 1-voxel block (or a permutation that fixes every voxel)
        lo, hi = _bbox(changed)
        assert np.all(hi - lo <= np.array([6, 6, 3]))
        sl = tuple(slice(a, c) for a, c in zip(lo, hi))
        assert np.array_equal(np.sort(out[0][sl].numpy().ravel()), np.sort(x[b, 0][sl].numpy().ravel()))
    out = R.local_pixel_shuffling(x, np.random.default_rng(1))
    assert np.array_equal(np.sort(out.numpy(), axis=None), np.sort(x.numpy(), axis=None))
    assert (out != x).float().mean() < 0.01  # nearly the identity, as in the original (~0.1%)


def test_in_painting_changes_only_inside_one_box():
    x = _cubes(4)
    out = R.image_in_painting(x, np.random.default_rng(0))
    for b in range(4):
        changed = (out[b, 0] != x[b, 0]).numpy()
        lo, hi = _bbox(changed)
        size = hi - lo
        assert np.all(size >= np.array([64 // 6, 64 // 6, 32 // 6]) - 1)
        assert np.all(size <= np.array([64 // 3, 64 // 3, 32 // 3]))
        assert np.all(lo >= 3)
        outside = np.ones_like(changed)
        outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
        assert not changed[outside].any()
        assert float(out.min()) >= 0 and float(out.max()) < 1


def test_out_painting_keeps_only_inside_one_box():
    x = _cubes(4)
    out = R.image_out_painting(x, np.random.default_rng(0))
    for b in range(4):
        kept = (out[b, 0] == x[b, 0]).numpy()
        lo, hi = _bbox(kept)
        size = hi - lo
        assert kept[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].all()
        assert np.all(size >= np.array([64 - 4 * 64 // 7, 64 - 4 * 64 // 7, 32 - 4 * 32 // 7]))
        assert np.all(size <= np.array([64 - 3 * 64 // 7, 64 - 3 * 64 // 7, 32 - 3 * 32 // 7]))
        assert kept.sum() == np.prod(size)  # nothing outside survives


def _reference_boxes(dims, kind, r):
    """The original's box arithmetic with Python's random, as a plain reference."""
    if kind == "in":
        sizes = [r.randint(d // 6, d // 3) for d in dims]
    else:
        sizes = [d - r.randint(3 * d // 7, 4 * d // 7) for d in dims]
    starts = [r.randint(3, d - s - 3) for d, s in zip(dims, sizes)]
    return sizes, starts


@pytest.mark.parametrize("kind", ["in", "out"])
def test_box_statistics_match_the_reference(kind):
    dims = (64, 64, 32)
    r = random.Random(0)
    ref = np.array([np.prod(_reference_boxes(dims, kind, r)[0]) for _ in range(4000)]) / np.prod(dims)
    fn = R.inpaint_boxes if kind == "in" else R.outpaint_boxes
    boxes = np.array(fn((4000, 1, *dims), np.random.default_rng(0)))
    ours = np.prod(boxes[:, :, 1] - boxes[:, :, 0], axis=1) / np.prod(dims)
    assert abs(ours.mean() - ref.mean()) < 0.05 * ref.mean()
    assert ours.min() >= ref.min() - 1e-9 and ours.max() <= ref.max() + 1e-9
    starts = boxes[:, :, 0]
    assert starts.min() >= 3 and np.all(boxes[:, :, 1] <= np.array(dims) - 3)


def test_small_cubes_work():
    x = _cubes(4, shape=(16, 16, 16))
    inputs, target, _ = R.restoration_pair(x, np.random.default_rng(0), probs=(0, 0, 0.5, 0.5))
    assert inputs.shape == x.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipeline_on_gpu_matches_cpu_statistics():
    x = _cubes(16).cuda()
    inputs, target, choice = R.restoration_pair(x, np.random.default_rng(0))
    assert inputs.is_cuda and inputs.shape == x.shape
    assert float(inputs.min()) >= 0 and float(inputs.max()) <= 1
    assert torch.equal(target, x)
