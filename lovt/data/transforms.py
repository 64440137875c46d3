"""Image and report augmentations of LoVT / ConVIRT / CLIP pre-training.

Both are drawn per sample (the original applies them per study inside the collate function; only
its BYOL/PixelPro baselines share one draw per batch, and those are not part of this folder). The
random draws use torch's global generator in the original's order, so seeding torch (and the
DataLoader's per-worker seeds) makes them reproducible.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from torch import distributions

try:  # OpenCV makes the blur ~100x cheaper; without it a torch fallback is used
    import cv2 as _cv2
except ImportError:  # pragma: no cover
    _cv2 = None


@dataclass
class ScanAugmentationConfig:
    """The original's `ScanAugmentationConfig`, field for field (defaults = LoVT, ConVIRT, CLIP)."""

    augment: bool = True
    random_crop: bool = True
    crop_scale_range: tuple = (0.6, 1.0)
    random_horizontal_flip: bool = True
    horizontal_flip_prob: float = 0.5
    random_affine: bool = True
    rotation_angle_range: tuple = (-20, 20)
    horizontal_translation_fraction: float = 0.1
    vertical_translation_fraction: float = 0.1
    scaling_range: tuple = (0.95, 1.05)
    random_jitter: bool = True
    jitter_prob: float | None = 1.0
    brightness_jitter_ratio_range: tuple = (0.6, 1.4)
    contrast_jitter_ratio_range: tuple = (0.6, 1.4)
    # the original tests this flag with "is not None", so False still blurs; see ScanTransform
    gaussian_blur: bool = True
    gaussian_blur_sigma_range: tuple = (0.1, 3.0)
    val_resize_mode: str = "pad"  # 'pad' | 'resize' | 'center_crop'


class PadToSquare:
    """Zero-pads the shorter side, floor(diff / 2) on each side as the original (an odd difference leaves
    the image one pixel short of square; the following resize absorbs it). exact=True pads to square."""

    def __init__(self, exact: bool = False):
        self.exact = exact

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        size = max(w, h)
        left, top = (size - w) // 2, (size - h) // 2
        if self.exact:
            return F.pad(img, [left, top, size - w - left, size - h - top])
        return F.pad(img, [left, top])


class SeparableGaussianBlur(T.GaussianBlur):
    """torchvision's GaussianBlur (same sigma draw, kernel, reflect padding, uint8 rounding for PIL input)
    computed as two 1-D passes (OpenCV's sepFilter2D for PIL images, two torch convolutions otherwise).
    The 2-D kernel is the outer product of the 1-D ones, so results agree up to float rounding (at most
    one grey level on ~0.01 % of pixels); the 23x23 blur drops from ~40-100 ms to ~0.5 ms per 224 px
    image, where it otherwise dominates the loader's CPU time."""

    def forward(self, img):
        sigma = self.get_params(self.sigma[0], self.sigma[1])
        kw, kh = self.kernel_size
        if isinstance(img, Image.Image) and _cv2 is not None:
            x = np.asarray(img, dtype=np.float32)
            y = _cv2.sepFilter2D(x, -1, _gaussian_1d(kw, sigma).numpy(), _gaussian_1d(kh, sigma).numpy(),
                                 borderType=_cv2.BORDER_REFLECT_101)  # = torch's 'reflect'
            return Image.fromarray(np.clip(np.rint(y), 0, 255).astype(np.uint8), mode=img.mode)
        pil = isinstance(img, Image.Image)
        x = F.pil_to_tensor(img) if pil else img
        shape, dtype = x.shape, x.dtype
        x = x.float().reshape(-1, 1, *shape[-2:])  # (N*C)x1xHxW
        x = torch.nn.functional.pad(x, [kw // 2, kw // 2, kh // 2, kh // 2], mode="reflect")
        x = torch.nn.functional.conv2d(x, _gaussian_1d(kw, sigma).view(1, 1, 1, kw))
        x = torch.nn.functional.conv2d(x, _gaussian_1d(kh, sigma).view(1, 1, kh, 1))
        if not dtype.is_floating_point:
            x = x.round().clamp(0, 255)
        x = x.to(dtype).reshape(shape)
        return F.to_pil_image(x, mode=img.mode) if pil else x


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


class ScanTransform:
    """PIL grey-scale image -> float tensor (out_channels x H x W), the original's `ScanDataTransform`.

    Training: RandomResizedCrop(scale 0.6-1) -> HorizontalFlip(0.5) -> RandomAffine(+-20 deg, 10 % shift,
    scale 0.95-1.05, nearest) -> ColorJitter(brightness, contrast 0.6-1.4, p=1) -> GaussianBlur(k=23,
    sigma 0.1-3) -> ToTensor -> Normalize(dataset mean, std) -> repeat to 3 channels.
    Validation (val=True or augment=False): PadToSquare -> Resize -> ToTensor -> Normalize -> 3 channels.

    dataset_stats: a split entry of dataset_statistics.json ({"scan": {"pixel_mean", "pixel_std"}, ...})
        or {"pixel_mean", "pixel_std"}; None -> 0.5 / 0.5 (the original's fallback).
    legacy_half_normalization: normalise with 0.5 / 0.5 whatever the statistics, as the original's
        image-only baselines do through a missed stats lookup (LoVT itself uses the dataset stats).
    gaussian_blur_switchable: honour `config.gaussian_blur=False` (the original always blurs).
    exact_square_pad: pad validation images to an exact square (the original is 1 px short when odd).
    out_channels: 3 as the original (a view, no copy); 1 leaves the repeat to the model.
    fast_blur: the blur as two 1-D passes (SeparableGaussianBlur, equal up to rounding); False uses
        torchvision's k x k convolution.
    """

    def __init__(self, config: ScanAugmentationConfig | None = None, image_size=(224, 224),
                 dataset_stats: dict | None = None, val: bool = False,
                 legacy_half_normalization: bool = False, gaussian_blur_switchable: bool = False,
                 exact_square_pad: bool = False, out_channels: int = 3, fast_blur: bool = True):
        config = config or ScanAugmentationConfig()
        image_size = tuple(image_size)
        if image_size[0] != image_size[1]:
            raise NotImplementedError("only square image sizes are supported (as the original)")
        if config.val_resize_mode not in ("pad", "resize", "center_crop"):
            raise ValueError(f"val_resize_mode {config.val_resize_mode!r}: use pad, resize or center_crop")
        stats = dataset_stats or {}
        if "scan" in stats and not legacy_half_normalization:
            stats = stats["scan"]
        if legacy_half_normalization:
            stats = {}
        self.pixel_mean = float(stats.get("pixel_mean", 0.5))
        self.pixel_std = float(stats.get("pixel_std", 0.5))
        self.out_channels = out_channels
        augment = config.augment and not val

        steps = []
        if augment and config.random_crop:
            steps.append(T.RandomResizedCrop(image_size, scale=tuple(config.crop_scale_range)))
        elif config.val_resize_mode == "resize":
            steps.append(T.Resize(image_size))
        elif config.val_resize_mode == "center_crop":
            steps += [T.Resize(int(1.1 * max(image_size))), T.CenterCrop(image_size)]
        else:
            steps += [PadToSquare(exact=exact_square_pad), T.Resize(image_size)]
        if augment and config.random_horizontal_flip:
            steps.append(T.RandomHorizontalFlip(config.horizontal_flip_prob))
        if augment and config.random_affine:
            steps.append(T.RandomAffine(
                degrees=tuple(config.rotation_angle_range),
                translate=(config.horizontal_translation_fraction, config.vertical_translation_fraction),
                scale=tuple(config.scaling_range)))
        if augment and config.random_jitter:
            jitter = T.ColorJitter(brightness=tuple(config.brightness_jitter_ratio_range),
                                   contrast=tuple(config.contrast_jitter_ratio_range))
            steps.append(T.RandomApply([jitter], p=config.jitter_prob))
        blur = config.gaussian_blur if gaussian_blur_switchable else config.gaussian_blur is not None
        if augment and blur:
            kernel = int(0.1 * max(image_size))
            kernel += 1 - kernel % 2  # odd: 22 -> 23 for 224
            blur_cls = SeparableGaussianBlur if fast_blur else T.GaussianBlur
            steps.append(blur_cls(kernel, sigma=tuple(config.gaussian_blur_sigma_range)))
        steps += [T.ToTensor(), T.Normalize(self.pixel_mean, self.pixel_std)]
        self.transform = T.Compose(steps)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != "L":
            img = img.convert("L")
        x = self.transform(img)  # 1xHxW
        return x.expand(self.out_channels, -1, -1) if self.out_channels != 1 else x

    def __repr__(self) -> str:
        return f"ScanTransform(mean={self.pixel_mean:.4f}, std={self.pixel_std:.4f}, {self.transform})"


@dataclass
class ReportAugmentationConfig:
    """The original's `ReportAugmentationConfig` (dataclass defaults = ConVIRT/CLIP's sentence sampling;
    LoVT sets sentence_shuffling='random_swaps', sentence_sampling=None)."""

    augment: bool = True
    sentence_shuffling: str | None = None  # None | 'random_swaps'
    swap_prob: float = 0.6  # number of swaps ~ Geometric(p = 1 - swap_prob), counting failures
    sentence_sampling: str | None = "random_sentence"  # None | 'random_sentence' | 'random_crop'
    sentence_crop_range: tuple = (0.6, 1.0)
    duplicate_sentences: bool = False
    duplication_prob: float = 0.2  # number of duplicates ~ Geometric(p = 1 - duplication_prob)


class ReportTransform:
    """list of sentences -> list of sentences: shuffle by random swaps, then sample, then duplicate.

    Works on the index list [0..n-1] with torch's generator in the original's order of draws.
    val=True (or augment=False) returns the sentences unchanged.
    """

    def __init__(self, config: ReportAugmentationConfig | None = None, val: bool = False):
        config = config or ReportAugmentationConfig()
        if config.sentence_shuffling not in (None, "random_swaps"):
            raise ValueError(f"sentence_shuffling {config.sentence_shuffling!r}: use None or 'random_swaps'")
        if config.sentence_sampling not in (None, "random_sentence", "random_crop"):
            raise ValueError(f"sentence_sampling {config.sentence_sampling!r}: use None, 'random_sentence' "
                             f"or 'random_crop'")
        augment = config.augment and not val
        self.config = config
        self.shuffle = augment and config.sentence_shuffling == "random_swaps"
        self.sampling = config.sentence_sampling if augment else None
        self.duplicate = augment and config.duplicate_sentences
        self.num_swaps = distributions.Geometric(probs=torch.tensor(1.0 - config.swap_prob))
        self.num_duplicates = distributions.Geometric(probs=torch.tensor(1.0 - config.duplication_prob))

    def __call__(self, sentences: list) -> list:
        if not sentences or not (self.shuffle or self.sampling or self.duplicate):
            return list(sentences)
        idx = torch.arange(len(sentences), dtype=torch.int)
        if self.shuffle:
            idx = self._swap(idx)
        if self.sampling == "random_sentence":
            idx = idx[torch.randint(high=len(idx), size=(1,))]
        elif self.sampling == "random_crop":
            idx = self._crop(idx)
        if self.duplicate:
            idx = self._duplicate(idx)
        return [sentences[i] for i in idx.tolist()]

    def _swap(self, idx: torch.Tensor) -> torch.Tensor:
        k = int(self.num_swaps.sample().item())
        for a, b in torch.randint(high=len(idx), size=(k, 2)).tolist():
            idx[[a, b]] = idx[[b, a]]
        return idx

    def _crop(self, idx: torch.Tensor) -> torch.Tensor:
        lo, hi = self.config.sentence_crop_range
        n = len(idx)
        length = int(torch.randint(low=max(1, round(lo * n)), high=max(1, round(hi * n)) + 1, size=()))
        start = int(torch.randint(high=n - (length - 1), size=()))
        return idx[start:start + length]

    def _duplicate(self, idx: torch.Tensor) -> torch.Tensor:
        k = int(self.num_duplicates.sample().item())
        if k == 0:
            return idx
        picked = torch.multinomial(torch.ones(len(idx)), k, replacement=True)
        slots = torch.multinomial(torch.ones(len(idx) + k), k, replacement=False)
        keep = torch.ones(len(idx) + k, dtype=torch.bool)
        keep[slots] = False
        out = torch.empty(len(idx) + k, dtype=torch.int)
        out[keep] = idx
        out[slots] = idx[picked]
        return out
