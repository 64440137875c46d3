"""Image and report augmentations (lovt.data.transforms)."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from lovt.data.transforms import (
    PadToSquare,
    ReportAugmentationConfig,
    ReportTransform,
    ScanAugmentationConfig,
    ScanTransform,
    SeparableGaussianBlur,
)

STATS = {"scan": {"pixel_mean": 0.4, "pixel_std": 0.2}, "chexpert_bin_pos_weights": {}}


def grey(w=120, h=90, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8), mode="L")


def test_validation_pipeline_pads_resizes_and_normalises():
    img = Image.new("L", (100, 60), color=255)
    x = ScanTransform(image_size=(32, 32), dataset_stats=STATS, val=True)(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    # white image area -> (1 - mean) / std, zero padding above and below -> (0 - mean) / std
    assert x[0, 16, 16].item() == pytest.approx((1 - 0.4) / 0.2, abs=1e-5)
    assert x[0, 0, 16].item() == pytest.approx((0 - 0.4) / 0.2, abs=1e-5)
    # deterministic
    assert torch.equal(x, ScanTransform(image_size=(32, 32), dataset_stats=STATS, val=True)(img))


def test_pad_to_square_is_one_pixel_short_for_odd_differences():
    assert PadToSquare()(Image.new("L", (10, 7))).size == (10, 9)  # floor(3 / 2) = 1 on each side
    assert PadToSquare(exact=True)(Image.new("L", (10, 7))).size == (10, 10)
    assert PadToSquare()(Image.new("L", (8, 12))).size == (12, 12)


def test_normalisation_statistics_and_the_legacy_half_flag():
    img = Image.new("L", (16, 16), color=0)
    assert ScanTransform(image_size=(8, 8), dataset_stats=STATS, val=True).pixel_mean == 0.4
    flat = {"pixel_mean": 0.3, "pixel_std": 0.1}
    assert ScanTransform(image_size=(8, 8), dataset_stats=flat, val=True).pixel_std == 0.1
    legacy = ScanTransform(image_size=(8, 8), dataset_stats=STATS, val=True, legacy_half_normalization=True)
    assert (legacy.pixel_mean, legacy.pixel_std) == (0.5, 0.5)
    assert legacy(img)[0, 0, 0].item() == pytest.approx(-1.0)
    assert ScanTransform(image_size=(8, 8), val=True).pixel_mean == 0.5  # no stats -> the original's fallback


def test_training_pipeline_is_the_originals():
    t = ScanTransform(image_size=(224, 224), dataset_stats=STATS)
    kinds = [T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandomAffine, T.RandomApply, T.GaussianBlur,
             T.ToTensor, T.Normalize]
    assert len(t.transform.transforms) == len(kinds)
    assert all(isinstance(step, kind) for step, kind in zip(t.transform.transforms, kinds))
    crop, flip, affine, jitter, blur = t.transform.transforms[:5]
    assert crop.scale == (0.6, 1.0) and flip.p == 0.5
    assert affine.degrees == [-20.0, 20.0] and affine.translate == (0.1, 0.1) and affine.scale == (0.95, 1.05)
    assert affine.interpolation == T.InterpolationMode.NEAREST
    assert jitter.p == 1.0 and jitter.transforms[0].brightness == (0.6, 1.4)
    assert blur.kernel_size == (23, 23) and blur.sigma == (0.1, 3.0)
    assert isinstance(blur, SeparableGaussianBlur)
    assert type(ScanTransform(fast_blur=False).transform.transforms[4]) is T.GaussianBlur
    # the original cannot switch the blur off; the fix is behind a flag
    off = ScanAugmentationConfig(gaussian_blur=False)
    assert any(isinstance(s, T.GaussianBlur) for s in ScanTransform(off).transform.transforms)
    fixed = ScanTransform(off, gaussian_blur_switchable=True)
    assert not any(isinstance(s, T.GaussianBlur) for s in fixed.transform.transforms)


def test_training_draws_per_sample_and_is_seeded():
    t = ScanTransform(image_size=(32, 32), dataset_stats=STATS)
    img = grey()
    torch.manual_seed(0)
    a, b = t(img), t(img)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(t(img), a)
    one = ScanTransform(image_size=(32, 32), dataset_stats=STATS, out_channels=1)
    assert one(img.convert("RGB")).shape == (1, 32, 32)  # RGB input is converted to grey


LOVT = ReportAugmentationConfig(sentence_shuffling="random_swaps", sentence_sampling=None)
SENTENCES = [f"s{i}" for i in range(6)]


def test_report_validation_and_no_augmentation_are_identity():
    assert ReportTransform(LOVT, val=True)(SENTENCES) == SENTENCES
    assert ReportTransform(ReportAugmentationConfig(augment=False))(SENTENCES) == SENTENCES
    assert ReportTransform(LOVT)([]) == []


def test_random_swaps_keep_every_sentence_with_geometric_count():
    torch.manual_seed(0)
    t = ReportTransform(LOVT)
    outs = [t(SENTENCES) for _ in range(2000)]
    assert all(sorted(o) == SENTENCES for o in outs)
    unchanged = np.mean([o == SENTENCES for o in outs])
    # P(no swap) = 0.4, plus swaps of an index with itself and swaps that cancel
    assert 0.42 < unchanged < 0.58


def test_random_swaps_follow_the_originals_draws():
    # the original: K ~ Geometric(1 - 0.6) (failures), then K pairs from randint, swapped in turn
    torch.manual_seed(3)
    got = [ReportTransform(LOVT)(SENTENCES) for _ in range(20)]
    torch.manual_seed(3)
    geometric = torch.distributions.Geometric(probs=torch.tensor(0.4))
    expected = []
    for _ in range(20):
        order = list(range(6))
        for a, b in torch.randint(high=6, size=(int(geometric.sample()), 2)).tolist():
            order[a], order[b] = order[b], order[a]
        expected.append([SENTENCES[i] for i in order])
    assert got == expected


def test_sentence_sampling_variants():
    torch.manual_seed(0)
    single = ReportTransform(ReportAugmentationConfig())  # dataclass default: ConVIRT / CLIP
    picks = [single(SENTENCES) for _ in range(300)]
    assert all(len(p) == 1 for p in picks) and {p[0] for p in picks} == set(SENTENCES)
    crop = ReportTransform(ReportAugmentationConfig(sentence_sampling="random_crop"))
    for _ in range(100):
        out = crop(SENTENCES)
        assert 4 <= len(out) <= 6  # round(0.6 * 6) = 4 .. 6, contiguous
        start = SENTENCES.index(out[0])
        assert out == SENTENCES[start:start + len(out)]
    dup = ReportTransform(ReportAugmentationConfig(sentence_sampling=None, duplicate_sentences=True))
    lengths = [len(dup(SENTENCES)) for _ in range(500)]
    assert min(lengths) == 6 and max(lengths) > 6
    with pytest.raises(ValueError, match="sentence_shuffling"):
        ReportTransform(ReportAugmentationConfig(sentence_shuffling="permute"))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_separable_blur_equals_torchvision_up_to_rounding(as_tensor):
    img = grey(64, 48, seed=1).resize((224, 224))
    x = T.functional.pil_to_tensor(img) if as_tensor else img
    for seed in range(4):
        torch.manual_seed(seed)
        ref = T.GaussianBlur(23, sigma=(0.1, 3.0))(x)
        after_ref = torch.rand(1)
        torch.manual_seed(seed)
        fast = SeparableGaussianBlur(23, sigma=(0.1, 3.0))(x)
        assert torch.equal(torch.rand(1), after_ref)  # the same random draws
        a, b = (np.asarray(v, dtype=int) if not as_tensor else v.int().numpy() for v in (ref, fast))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3
    floats = torch.rand(2, 1, 30, 40)
    torch.manual_seed(0)
    ref = T.GaussianBlur(7, sigma=(0.1, 3.0))(floats)
    torch.manual_seed(0)
    assert torch.allclose(SeparableGaussianBlur(7, sigma=(0.1, 3.0))(floats), ref, atol=1e-5)
