"""shared.augment2d: parameter draws follow torchvision's per-sample distributions (two-sample tests with
fixed seeds, so they are deterministic), and given the same parameters the batched operations give what
torchvision.transforms.v2.functional gives per sample."""

import itertools

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from scipy import stats
from torchvision.transforms.v2 import functional as F

from shared import augment2d as A

N = 3000


def test_crop_boxes_follow_random_resized_crop():
    # a square, a wide image and a very elongated one (where the central-crop fallback happens often)
    for h, w, scale in ((100, 100, (0.2, 1.0)), (60, 90, (0.08, 1.0)), (12, 200, (0.08, 1.0))):
        torch.manual_seed(0)
        img = torch.zeros(1, h, w)
        ref = np.array([T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(N)])
        ours = A.draw_crop_boxes(torch.tensor([[h, w]] * N), scale, generator=torch.Generator().manual_seed(1))
        ours = ours.numpy()
        assert (ours[:, 0] + ours[:, 2] <= h).all() and (ours[:, 1] + ours[:, 3] <= w).all()
        for k, what in enumerate(("top", "left", "height", "width")):
            p = stats.ks_2samp(ref[:, k], ours[:, k]).pvalue
            assert p > 0.01, f"{h}x{w} {what}: KS p={p:.2g}"


def test_jitter_flip_blur_draws_follow_torchvision():
    torch.manual_seed(0)
    jitter = T.ColorJitter(0.4, 0.4, 0.4, 0.1)
    ref = [T.ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
           for _ in range(N)]
    ref_flip = np.array([bool(torch.rand(1) < 0.5) for _ in range(N)])
    ref_apply = np.array([not 0.8 < torch.rand(1) for _ in range(N)])  # RandomApply's test
    g = torch.Generator().manual_seed(1)
    ours = A.draw_color_jitter(N, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=g)
    for k in range(4):
        p = stats.ks_2samp([r[1 + k] for r in ref], ours.factors[:, k].numpy()).pvalue
        assert p > 0.01, f"factor {k}: KS p={p:.2g}"
    perms = {q: i for i, q in enumerate(itertools.permutations(range(4)))}
    counts = np.zeros((2, 24))
    for r in ref:
        counts[0, perms[tuple(r[0].tolist())]] += 1
    for o in ours.order.tolist():
        counts[1, perms[tuple(o)]] += 1
    assert stats.chi2_contingency(counts).pvalue > 0.01
    flips = A.draw_flips(N, 0.5, generator=g).numpy()
    for a, b in ((ref_flip, flips), (ref_apply, ours.apply.numpy())):
        table = [[a.sum(), (~a).sum()], [b.sum(), (~b).sum()]]
        assert stats.chi2_contingency(table).pvalue > 0.01
    applied, sigma = A.draw_gaussian_blur(N, (0.1, 2.0), 0.5, generator=g)
    assert stats.binomtest(int(applied.sum()), N, 0.5).pvalue > 0.01
    assert stats.kstest(sigma.numpy(), stats.uniform(0.1, 1.9).cdf).pvalue > 0.01


def _reference_view(img, p, size, kernel):
    """torchvision.transforms.v2.functional on one float image with the i-th parameters."""
    top, left, h, w = (int(v) for v in p.boxes)
    x = F.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    if p.jitter.apply:
        for op in p.jitter.order.tolist():
            f = float(p.jitter.factors[op])
            x = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue][op](x, f)
    if p.gray:
        x = F.rgb_to_grayscale(x, num_output_channels=x.shape[0])
    if p.blur:
        x = F.gaussian_blur(x, [kernel, kernel], [float(p.sigma)] * 2)
    return F.hflip(x) if p.flip else x


@pytest.mark.parametrize("channels", [1, 3])
def test_view_matches_torchvision_per_sample(channels):
    torch.manual_seed(0)
    sizes = torch.tensor([[48, 40], [40, 48], [30, 30], [48, 48], [20, 44], [48, 36]])
    imgs = [torch.rand(channels, h, w) for h, w in sizes.tolist()]
    batch, got_sizes = A.stack_padded(imgs)
    assert torch.equal(got_sizes, sizes) and batch.shape == (6, channels, 48, 48)
    view = A.ViewAugment(24, scale=(0.2, 1.0), jitter_p=0.8, grayscale_p=0.3, blur_p=0.5)
    params = view.draw(sizes, generator=torch.Generator().manual_seed(3))
    params.jitter.apply[:] = True  # every op on every sample: the comparison covers them all
    params.blur[::2] = True
    for impl, jitter_impl in (("matmul", "batched"), ("loop", "loop")):
        view.crop_impl, view.jitter_impl = impl, jitter_impl
        out = view.finish(view.crop(batch, params), params)
        ref = torch.stack([_reference_view(imgs[i], params[i], 24, view.blur_kernel) for i in range(6)])
        assert out.shape == (6, channels, 24, 24)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)


def test_uint8_loop_crop_is_torchvision_uint8():
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 64, 64], [5, 9, 30, 41], [10, 3, 12, 9]])  # down, down, up-sampling
    out = A.resized_crop(x, boxes, 32, impl="loop")
    ref = torch.stack([F.resized_crop(x[i], *b.tolist(), [32, 32], antialias=True) for i, b in enumerate(boxes)])
    assert torch.equal(out, ref.float() / 255)
    # the float matrix products agree to within the 8-bit rounding of the uint8 kernel
    assert (A.resized_crop(x, boxes, 32, impl="matmul") - out).abs().max() <= 1.0 / 255


def test_jitter_range_and_bad_input():
    assert A.jitter_range(0.4, "brightness") == pytest.approx((0.6, 1.4))
    assert A.jitter_range(1.5, "contrast") == pytest.approx((0.0, 2.5))
    assert A.jitter_range(0, "saturation") is None
    assert A.jitter_range(0.1, "hue", center=0.0, bound=(-0.5, 0.5)) == pytest.approx((-0.1, 0.1))
    with pytest.raises(ValueError, match="hue"):
        A.jitter_range(0.7, "hue", center=0.0, bound=(-0.5, 0.5))
    with pytest.raises(ValueError, match="impl"):
        A.resized_crop(torch.zeros(1, 1, 8, 8), torch.tensor([[0, 0, 8, 8]]), 4, impl="roi")


def test_pil_blur_matches_pillow():
    """kind="pil" is Pillow's GaussianBlur(radius=sigma) (three extended-box passes per axis, edges
    repeated) up to Pillow's 8-bit rounding after each pass; torchvision's Gaussian differs more."""
    from PIL import Image, ImageFilter

    img = np.zeros((40, 48), np.uint8)
    img[10:30, 12:20] = 220  # sharp edges, where the two blurs differ most
    img[:, 40:] = 90
    x = torch.from_numpy(img.astype(np.float32))[None, None]
    for sigma in (0.1, 0.7, 1.3, 2.0):
        ref = torch.from_numpy(np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)), np.float32))
        pil = A.gaussian_blur(x, torch.tensor([True]), torch.tensor([sigma]), kind="pil")[0, 0]
        assert (pil - ref).abs().max() <= 2.5, sigma
        if sigma == 0.7:
            gauss = A.gaussian_blur(x, torch.tensor([True]), torch.tensor([sigma]), 13)[0, 0]
            assert (gauss - ref).abs().max() > 5
