"""LoVT's scan augmentation as batched torch operations (any device), with per-sample parameters.

The per-sample reference is `ScanTransform` (lovt/data/transforms.py): RandomResizedCrop(scale 0.6-1) ->
HorizontalFlip(0.5) -> RandomAffine(+-20 deg, 10 % shift, scale 0.95-1.05, nearest, fill 0) -> ColorJitter
(brightness, contrast 0.6-1.4, random order, p=1) -> GaussianBlur(k = 0.1 * size made odd; sigma 0.1-3) ->
Normalize(dataset mean, std) -> 3 channels. `BatchScanTransform` runs the same steps on a whole batch at once, each
sample with its own parameters drawn from the reference's distributions, so a batch costs a handful of kernels on
the GPU instead of B Python pipelines in the loader workers. Given the same parameters every step equals
torchvision's functional op on one float tensor (tests/lovt/test_fast_data.py).

The crop, flip, colour jitter and blur are shared/augment2d.py's; what only LoVT uses is here: the random affine
(nearest neighbour), the validation pad-to-square resize, and the pipeline in LoVT's order. Parameters are drawn on
the CPU from torch's global generator (or `generator`), so seeding torch (and Lightning's per-worker seeds) makes
them reproducible and checkpoints' RNG states resume them.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from lovt.data.transforms import _cv2, _gaussian_1d
from shared import augment2d


def _uniform(n: int, low: float, high: float, generator=None) -> torch.Tensor:
    return torch.empty(n, dtype=torch.float64).uniform_(float(low), float(high), generator=generator)


@dataclass
class AffineParams:
    """Per sample: angle in degrees, integer translation (tx, ty) in pixels, scale (RandomAffine.get_params)."""

    angle: torch.Tensor  # (B,) float64
    translate: torch.Tensor  # (B, 2) int64
    scale: torch.Tensor  # (B,) float64


def draw_affine(n: int, image_size: tuple, degrees=(-20, 20), translate=(0.1, 0.1), scale=(0.95, 1.05),
                generator=None) -> AffineParams:
    """RandomAffine.get_params for n samples of size (height, width): uniform angle, translation rounded to whole
    pixels (half to even, as Python's round), uniform scale, no shear."""
    h, w = image_size
    angle = _uniform(n, degrees[0], degrees[1], generator)
    max_dx, max_dy = float(translate[0] * w), float(translate[1] * h)
    tx = torch.round(_uniform(n, -max_dx, max_dx, generator))
    ty = torch.round(_uniform(n, -max_dy, max_dy, generator))
    return AffineParams(angle, torch.stack([tx, ty], 1).long(), _uniform(n, scale[0], scale[1], generator))


def _inverse_affine_theta(p: AffineParams) -> torch.Tensor:
    """Bx2x3 inverse matrices as torchvision's _get_inverse_affine_matrix (centre 0, no shear), in float64."""
    rot = torch.deg2rad(p.angle)
    cos, sin = torch.cos(rot), torch.sin(rot)
    tx, ty = p.translate[:, 0].double(), p.translate[:, 1].double()
    m0, m1, m3, m4 = cos / p.scale, sin / p.scale, -sin / p.scale, cos / p.scale
    m2 = m0 * -tx + m1 * -ty
    m5 = m3 * -tx + m4 * -ty
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).view(-1, 2, 3)


def affine_nearest(x: torch.Tensor, p: AffineParams) -> torch.Tensor:
    """BxCxHxW float -> the same, each sample rotated/translated/scaled about its centre, nearest neighbour, zeros
    outside (torchvision.transforms.functional.affine on a tensor, per sample; equal bit for bit)."""
    B, _, H, W = x.shape
    theta = _inverse_affine_theta(p).to(device=x.device, dtype=x.dtype)
    # torchvision's _gen_affine_grid: pixel-centre coordinates, rescaled by the input's half size
    base = torch.empty(1, H, W, 3, dtype=x.dtype, device=x.device)
    base[..., 0].copy_(torch.linspace(-W * 0.5 + 0.5, W * 0.5 - 0.5, steps=W, device=x.device))
    base[..., 1].copy_(torch.linspace(-H * 0.5 + 0.5, H * 0.5 - 0.5, steps=H, device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2) / torch.tensor([0.5 * W, 0.5 * H], dtype=x.dtype, device=x.device)
    grid = base.view(1, H * W, 3).expand(B, -1, -1).bmm(rescaled).view(B, H, W, 2)
    return nnf.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def blur_kernel_size(image_size: int) -> int:
    """The reference's kernel: int(0.1 * size), made odd upwards (23 for 224)."""
    k = int(0.1 * image_size)
    return k + 1 - k % 2


def pad_to_square_resize(x: torch.Tensor, size: int, exact: bool = False) -> torch.Tensor:
    """1xHxW float -> 1 x size x size: PadToSquare (floor(diff / 2) on both sides, one pixel short when the
    difference is odd unless exact) then Resize((size, size)), antialiased bilinear."""
    from torchvision.transforms.v2 import functional as F

    h, w = x.shape[-2:]
    side = max(h, w)
    left, top = (side - w) // 2, (side - h) // 2
    right, bottom = (side - w - left, side - h - top) if exact else (left, top)
    return F.resize(F.pad(x, [left, top, right, bottom]), [size, size], antialias=True)


class BatchScanTransform:
    """A batch of cached uint8 images (any sizes, zero-padded to one tensor, on any device) -> normalised float
    B x out_channels x S x S: LoVT's training augmentation (val=False) or its validation resize.

    The arguments are ScanTransform's (same config, statistics and flags). `draw(sizes)` draws every sample's
    parameters (CPU, torch's global generator or `generator`); `apply(images, sizes, params)` is deterministic
    given them; `__call__(images, sizes)` does both. crop_impl: shared.augment2d.resized_crop's ("auto":
    batched matrix products on CUDA, a loop of torchvision's kernels on the CPU). opencv_blur: blur CPU batches
    with OpenCV (faster) instead of shared.augment2d's grouped convolution (used on GPUs).
    """

    def __init__(self, config=None, image_size=(224, 224), dataset_stats: dict | None = None, val: bool = False,
                 legacy_half_normalization: bool = False, gaussian_blur_switchable: bool = False,
                 exact_square_pad: bool = False, out_channels: int = 3, generator=None, crop_impl: str = "auto",
                 opencv_blur: bool = True):
        from lovt.data.transforms import ScanAugmentationConfig, ScanTransform

        config = config or ScanAugmentationConfig()
        # the reference checks the arguments and resolves the statistics: one place for both paths
        ref = ScanTransform(config, image_size, dataset_stats, val, legacy_half_normalization,
                            gaussian_blur_switchable, exact_square_pad, out_channels)
        self.mean, self.std, self.out_channels = ref.pixel_mean, ref.pixel_std, out_channels
        self.size = tuple(image_size)[0]
        self.config, self.generator = config, generator
        self.exact_square_pad, self.crop_impl, self.opencv_blur = exact_square_pad, crop_impl, opencv_blur
        augment = config.augment and not val
        self.crop = augment and config.random_crop
        self.flip = augment and config.random_horizontal_flip
        self.affine = augment and config.random_affine
        self.jitter = augment and config.random_jitter
        blur = config.gaussian_blur if gaussian_blur_switchable else config.gaussian_blur is not None
        self.blur = augment and blur
        self.kernel = blur_kernel_size(self.size)

    def draw(self, sizes) -> dict:
        """Parameters for images of these (height, width) sizes."""
        c, g = self.config, self.generator
        n = len(sizes)
        out = {}
        if self.crop:
            out["crop"] = augment2d.draw_crop_boxes(sizes, tuple(c.crop_scale_range), generator=g)
        if self.flip:
            out["flip"] = augment2d.draw_flips(n, c.horizontal_flip_prob, generator=g)
        if self.affine:
            out["affine"] = draw_affine(n, (self.size, self.size), tuple(c.rotation_angle_range),
                                        (c.horizontal_translation_fraction, c.vertical_translation_fraction),
                                        tuple(c.scaling_range), generator=g)
        if self.jitter:
            p = 1.0 if c.jitter_prob is None else c.jitter_prob
            out["jitter"] = augment2d.draw_color_jitter(n, tuple(c.brightness_jitter_ratio_range),
                                                        tuple(c.contrast_jitter_ratio_range), 0, 0, p=p, generator=g)
        if self.blur:
            out["blur"] = augment2d.draw_gaussian_blur(n, tuple(c.gaussian_blur_sigma_range), p=1.0, generator=g)
        return out

    def apply(self, images: torch.Tensor, sizes, params: dict) -> torch.Tensor:
        """images: B x 1 x H x W (uint8 or float in [0, 1]), each sample's image in its top-left sizes[i] corner
        (shared.augment2d.stack_padded)."""
        if "crop" in params:
            x = augment2d.resized_crop(images, params["crop"], self.size, self.crop_impl)
        else:
            x = torch.stack([self._val_resize(img[:, :h, :w]) for img, (h, w) in zip(images, sizes.tolist())])
        if "flip" in params:
            x = augment2d.hflip(x, params["flip"])
        if "affine" in params:
            x = affine_nearest(x, params["affine"])
        if "jitter" in params:
            x = augment2d.color_jitter(x, params["jitter"])
        if "blur" in params:
            x = self._blur(x, *params["blur"])
        x = (x - self.mean) / self.std
        return x.expand(-1, self.out_channels, -1, -1) if self.out_channels != x.shape[1] else x

    def _blur(self, x: torch.Tensor, apply: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not (self.opencv_blur and x.device.type == "cpu" and x.dtype == torch.float32 and _cv2 is not None):
            return augment2d.gaussian_blur(x, apply, sigma, self.kernel)
        # in loader workers: OpenCV's separable filter, ~10x faster than grouped convolutions on a CPU (as
        # ScanTransform's SeparableGaussianBlur); the same result up to float rounding
        out, src = x.clone(), x.contiguous().numpy()
        dst = out.numpy()
        for i in apply.nonzero()[:, 0].tolist():
            k = _gaussian_1d(self.kernel, float(sigma[i])).numpy()
            for c in range(x.shape[1]):
                _cv2.sepFilter2D(src[i, c], -1, k, k, dst=dst[i, c], borderType=_cv2.BORDER_REFLECT_101)
        return out

    def __call__(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        return self.apply(images, sizes, self.draw(sizes.cpu()))

    def _val_resize(self, scan: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        x = scan.float() / 255.0 if not scan.is_floating_point() else scan
        mode, size = self.config.val_resize_mode, [self.size, self.size]
        if mode == "resize":
            return F.resize(x, size, antialias=True)
        if mode == "center_crop":
            return F.center_crop(F.resize(x, [int(1.1 * self.size)], antialias=True), size)
        return pad_to_square_resize(x, self.size, self.exact_square_pad)
