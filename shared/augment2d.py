"""Batched 2D augmentation: torchvision's per-image random transforms, applied to a whole batch at once
with per-sample parameters, on whatever device the batch lives on (the GPU when training on one, the
CPU in DataLoader workers otherwise).

Every transform is split in two:
- `draw_*(n, ..., generator=None)` draws the parameters of n samples on the CPU, from the same
  distributions as the per-sample torchvision transform (RandomResizedCrop.get_params, ColorJitter's
  random order and factors, RandomApply/RandomGrayscale/RandomHorizontalFlip probabilities, MoCo v2's
  blur sigma ~ U(0.1, 2.0)); by default from torch's global CPU generator, so `--seed`, DataLoader
  worker seeding and checkpointed RNG state work as with the per-sample transforms;
- the apply function takes the batch and those parameters and gives, per sample, what
  torchvision.transforms.v2.functional gives on that sample's tensor (`resized_crop(antialias=True)`,
  `adjust_brightness`, `adjust_contrast`, `adjust_saturation`, `adjust_hue`, `rgb_to_grayscale`,
  `gaussian_blur`, `hflip`), up to float rounding.

What torchvision does not do batched is written here: the crop + antialiased bilinear resize of a
different box per sample as two batched matrix products with the ATen/PIL antialias weights
(`impl="matmul"`; the default on CUDA) or, on the CPU, a loop of torchvision's `resized_crop` (fast
uint8 kernels; `impl="loop"`); brightness/contrast/saturation as per-sample blends; the Gaussian blur
as one grouped convolution with a kernel per sample. Hue alone is applied per sample (torchvision's
`adjust_hue`), and only to 3-channel images (it does nothing on gray).

Images are float (B, C, H, W) in [0, 1] after the crop; uint8 batches are scaled by 1/255 there.
Batches of images with different sizes are zero-padded to a common size (`stack_padded`) and carry
their true sizes, from which the crop boxes are drawn, so padding never enters a crop.
"""

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as F

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


def stack_padded(images):
    """Stack HxW (or CxHxW) uint8 arrays/tensors into (B, C, Hmax, Wmax), zero-padded at the bottom and
    right, and their sizes (B, 2) as int64 [height, width]. A collate_fn for cached images."""
    arrays = [torch.as_tensor(np.asarray(im)) for im in images]
    arrays = [a[None] if a.dim() == 2 else a for a in arrays]
    sizes = torch.tensor([a.shape[-2:] for a in arrays], dtype=torch.int64)
    h, w = (int(v) for v in sizes.max(0).values)
    if all(a.shape[-2:] == (h, w) for a in arrays):
        return torch.stack(arrays), sizes
    out = torch.zeros((len(arrays), arrays[0].shape[0], h, w), dtype=arrays[0].dtype)
    for o, a in zip(out, arrays):
        o[:, :a.shape[-2], :a.shape[-1]] = a
    return out, sizes


def _uniform(shape, lo, hi, generator):
    return torch.empty(shape).uniform_(lo, hi, generator=generator)


# ---------------------------------------------------------------- random resized crop

def draw_crop_boxes(sizes, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), generator=None):
    """Boxes (B, 4) int64 [top, left, height, width] drawn as torchvision's RandomResizedCrop.get_params
    for images of `sizes` (B, 2) [height, width]: up to 10 attempts of area ~ U(scale) x area and
    log-aspect ~ U(log ratio), the first that fits, else the central crop clamped to `ratio`."""
    sizes = torch.as_tensor(sizes, dtype=torch.int64).reshape(-1, 2)
    n, attempts = len(sizes), 10
    height, width = sizes[:, :1].double(), sizes[:, 1:].double()
    log_ratio = torch.log(torch.tensor(ratio))  # float32, as torchvision
    target = height * width * _uniform((n, attempts), scale[0], scale[1], generator).double()
    aspect = torch.exp(_uniform((n, attempts), float(log_ratio[0]), float(log_ratio[1]), generator)).double()
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(1, keepdim=True)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    # fallback: the central crop, clamped to the ratio range
    height, width = height[:, 0], width[:, 0]
    in_ratio = width / height
    lo, hi = min(ratio), max(ratio)
    fb_w = torch.where(in_ratio > hi, torch.round(height * hi), width)
    fb_h = torch.where(in_ratio < lo, torch.round(width / lo), height)
    found = fits.any(1)
    w, h = torch.where(found, w, fb_w), torch.where(found, h, fb_h)
    u = torch.rand((n, 2), generator=generator).double()
    top = torch.where(found, torch.floor(u[:, 0] * (height - h + 1)).clamp(max=height - h), (height - h).div(2).floor())
    left = torch.where(found, torch.floor(u[:, 1] * (width - w + 1)).clamp(max=width - w), (width - w).div(2).floor())
    return torch.stack([top, left, h, w], 1).long()


def _aa_weights(starts, lengths, in_size, out_size, device):
    """(B, out_size, in_size) weights of an antialiased bilinear resize of [start, start + length) to
    out_size: the ATen (and PIL) formula of interpolate(mode='bilinear', antialias=True), zero elsewhere."""
    starts = starts.to(device=device, dtype=torch.float64)[:, None, None]
    lengths = lengths.to(device=device, dtype=torch.float64)
    scale = lengths / out_size
    support = torch.where(scale >= 1, scale, torch.ones_like(scale))[:, None]
    invscale = torch.where(scale >= 1, 1.0 / scale, torch.ones_like(scale))[:, None, None]
    center = scale[:, None] * (torch.arange(out_size, dtype=torch.float64, device=device) + 0.5)  # (B, S)
    xmin = torch.trunc(center - support + 0.5).clamp(min=0)[..., None]
    xmax = torch.minimum(torch.trunc(center + support + 0.5), lengths[:, None])[..., None]
    rel = torch.arange(in_size, dtype=torch.float64, device=device)[None, None] - starts  # (B, 1, in)
    w = (1.0 - ((rel - center[..., None] + 0.5) * invscale).abs()).clamp(min=0)
    w = w * ((rel >= xmin) & (rel < xmax))
    return (w / w.sum(-1, keepdim=True).clamp(min=1e-12)).float()


def resized_crop(images, boxes, size, impl="auto"):
    """Crop each image to its box [top, left, height, width] and resize to `size` (int or (h, w)) with
    antialiased bilinear interpolation, as torchvision's resized_crop(antialias=True) per sample.

    images: (B, C, H, W) uint8 (scaled to [0, 1]) or float. impl: "matmul" (batched matrix products,
    float), "loop" (torchvision per sample; on uint8 it rounds each crop to 8 bits, as the PIL
    pipeline does) or "auto" (matmul on CUDA, loop on the CPU). Returns float32 (B, C, h, w).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if impl == "auto":
        impl = "matmul" if images.is_cuda else "loop"
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    boxes = boxes.cpu()
    if impl == "loop":
        crops = [F.resized_crop(img, *(int(v) for v in box), [out_h, out_w], antialias=True)
                 for img, box in zip(images, boxes)]
        return torch.stack(crops).float().div_(scale)
    if impl != "matmul":
        raise ValueError(f"impl must be auto, matmul or loop, got {impl!r}")
    x = images.float()
    wy = _aa_weights(boxes[:, 0], boxes[:, 2], x.shape[-2], out_h, x.device)  # (B, h, H)
    wx = _aa_weights(boxes[:, 1], boxes[:, 3], x.shape[-1], out_w, x.device)  # (B, w, W)
    out = torch.matmul(torch.matmul(wy[:, None], x), wx[:, None].transpose(-1, -2))
    return out.div_(scale) if scale != 1.0 else out


# ---------------------------------------------------------------- colour

def jitter_range(value, name, center=1.0, bound=(0.0, float("inf"))):
    """torchvision ColorJitter's reading of a brightness/contrast/saturation/hue argument: a number v
    gives [center - v, center + v] (clipped at 0 for factors), a pair is taken as is, 0 turns it off."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        value = [center - float(value), center + float(value)]
        if name != "hue":
            value[0] = max(value[0], 0.0)
    lo, hi = float(value[0]), float(value[1])
    if not bound[0] <= lo <= hi <= bound[1]:
        raise ValueError(f"{name} range {value} is not within {bound}")
    return None if lo == hi == center else (lo, hi)


@dataclass
class ColorJitterParams:
    """apply (B,) bool; order (B, 4) a permutation of BRIGHTNESS, CONTRAST, SATURATION, HUE per sample;
    factors (B, 4) float (1, 1, 1, 0 where an adjustment is off)."""
    apply: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor


def draw_color_jitter(n, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0, generator=None):
    """RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p) for n samples: applied with
    probability p, in a uniformly random order, each factor uniform over torchvision's range."""
    ranges = [jitter_range(brightness, "brightness"), jitter_range(contrast, "contrast"),
              jitter_range(saturation, "saturation"), jitter_range(hue, "hue", center=0.0, bound=(-0.5, 0.5))]
    apply = torch.rand(n, generator=generator) < p
    order = torch.rand((n, 4), generator=generator).argsort(1)  # a uniform random permutation per sample
    factors = torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(n, 1)
    for k, r in enumerate(ranges):
        if r is not None:
            factors[:, k] = _uniform(n, r[0], r[1], generator)
    return ColorJitterParams(apply, order, factors)


def _gray(x):
    """ITU-R 601 luma of (B, 3, H, W) as torchvision's rgb_to_grayscale (float), (B, 1, H, W)."""
    r, g, b = x.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _blend(x, other, factor):
    f = factor.to(x.device, x.dtype).view(-1, 1, 1, 1)
    return (x * f + other * (1.0 - f)).clamp_(0.0, 1.0)


def adjust_brightness(x, factor):
    return x.mul(factor.to(x.device, x.dtype).view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(x, factor):
    mean = (_gray(x) if x.shape[1] == 3 else x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x, factor):
    return x if x.shape[1] == 1 else _blend(x, _gray(x), factor)


def adjust_hue(x, factor):
    if x.shape[1] == 1 or (factor == 0).all():
        return x
    return torch.stack([F.adjust_hue(img, float(h)) for img, h in zip(x, factor)])


_ADJUST = {BRIGHTNESS: adjust_brightness, CONTRAST: adjust_contrast, SATURATION: adjust_saturation, HUE: adjust_hue}


def _on_subset(x, mask, fn, *args):
    """x with fn applied to the samples where the (CPU) mask is true; no device sync."""
    idx = mask.nonzero()[:, 0]
    if len(idx) == 0:
        return x
    if len(idx) == len(x):
        return fn(x, *args)
    dev_idx = idx.to(x.device, non_blocking=True)
    sub = fn(x.index_select(0, dev_idx), *(a[idx] for a in args))
    return x.index_copy(0, dev_idx, sub)


def color_jitter(x, params):
    """Apply ColorJitterParams to a float (B, C, H, W) batch in [0, 1]."""
    if x.shape[1] not in (1, 3):
        raise ValueError(f"colour jitter needs 1 or 3 channels, got {x.shape[1]}")
    for step in range(4):
        for op, fn in _ADJUST.items():
            neutral = 0.0 if op == HUE else 1.0
            mask = params.apply & (params.order[:, step] == op) & (params.factors[:, op] != neutral)
            x = _on_subset(x, mask, fn, params.factors[:, op])
    return x


def draw_grayscale(n, p=0.2, generator=None):
    """RandomGrayscale(p): (B,) bool."""
    return torch.rand(n, generator=generator) < p


def grayscale(x, flags):
    """rgb_to_grayscale(num_output_channels=C) where flags; gray batches are returned as they are."""
    if x.shape[1] == 1:
        return x
    return _on_subset(x, flags, lambda s: _gray(s).expand_as(s).contiguous())


# ---------------------------------------------------------------- blur and flip

def draw_gaussian_blur(n, sigma=(0.1, 2.0), p=0.5, generator=None):
    """RandomApply([GaussianBlur(sigma ~ U(sigma))], p) as MoCo v2: (apply (B,) bool, sigma (B,) float)."""
    return torch.rand(n, generator=generator) < p, _uniform(n, sigma[0], sigma[1], generator)


def blur_kernel_size(max_sigma):
    """Odd kernel size covering +-3 sigma."""
    return 2 * math.ceil(3 * max_sigma) + 1


def _blur_all(x, sigma, kernel_size):
    n, c, h, w = x.shape
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))  # torchvision's kernel: softmax(-(t / sigma)^2)
    t = torch.linspace(-lim, lim, kernel_size, dtype=x.dtype, device=x.device)
    kern = torch.softmax(-(t[None] / sigma.to(x.device, x.dtype)[:, None]).pow(2), dim=1)  # (n, k)
    kern = kern.repeat_interleave(c, 0)
    pad = kernel_size // 2
    y = nnf.pad(x.reshape(1, n * c, h, w), [pad, pad, pad, pad], mode="reflect")
    y = nnf.conv2d(y, kern[:, None, None, :], groups=n * c)
    y = nnf.conv2d(y, kern[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def gaussian_blur(x, apply, sigma, kernel_size):
    """torchvision gaussian_blur(kernel_size, sigma_b) (reflect padding) on the samples where apply."""
    return _on_subset(x, apply, lambda s, sg: _blur_all(s, sg, kernel_size), sigma)


def draw_flips(n, p=0.5, generator=None):
    """RandomHorizontalFlip(p): (B,) bool."""
    return torch.rand(n, generator=generator) < p


def hflip(x, flags):
    return torch.where(flags.to(x.device, non_blocking=True).view(-1, 1, 1, 1), x.flip(-1), x)


# ---------------------------------------------------------------- one view

@dataclass
class ViewParams:
    boxes: torch.Tensor
    jitter: ColorJitterParams
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    flip: torch.Tensor

    def __getitem__(self, idx):
        """The parameters of a subset of samples."""
        vals = {f.name: getattr(self, f.name) for f in fields(self)}
        j = vals.pop("jitter")
        return ViewParams(jitter=ColorJitterParams(j.apply[idx], j.order[idx], j.factors[idx]),
                          **{k: v[idx] for k, v in vals.items()})


class ViewAugment:
    """One augmented view as the MoCo v2 family builds it, batched:

    RandomResizedCrop(size, scale, ratio) -> RandomApply(ColorJitter(*jitter), jitter_p) ->
    RandomGrayscale(grayscale_p) -> RandomApply(GaussianBlur(blur_sigma), blur_p) -> RandomHorizontalFlip(flip_p)

    `draw(sizes)` gives the parameters, `crop(images, params)` the crops (before any colour change),
    `finish(crops, params)` the rest; `__call__` does all three.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), jitter=(0.4, 0.4, 0.4, 0.1),
                 jitter_p=0.8, grayscale_p=0.0, blur_sigma=(0.1, 2.0), blur_p=0.5, blur_kernel=None, flip_p=0.5,
                 crop_impl="auto"):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.jitter, self.jitter_p, self.grayscale_p = tuple(jitter), jitter_p, grayscale_p
        self.blur_sigma, self.blur_p, self.flip_p = tuple(blur_sigma), blur_p, flip_p
        self.blur_kernel = blur_kernel or blur_kernel_size(self.blur_sigma[1])
        self.crop_impl = crop_impl

    def draw(self, sizes, generator=None):
        n = len(sizes)
        blur, sigma = draw_gaussian_blur(n, self.blur_sigma, self.blur_p, generator)
        return ViewParams(boxes=draw_crop_boxes(sizes, self.scale, self.ratio, generator),
                          jitter=draw_color_jitter(n, *self.jitter, p=self.jitter_p, generator=generator),
                          gray=draw_grayscale(n, self.grayscale_p, generator), blur=blur, sigma=sigma,
                          flip=draw_flips(n, self.flip_p, generator))

    def crop(self, images, params):
        return resized_crop(images, params.boxes, self.size, self.crop_impl)

    def finish(self, crops, params):
        x = color_jitter(crops, params.jitter)
        x = grayscale(x, params.gray)
        x = gaussian_blur(x, params.blur, params.sigma, self.blur_kernel)
        return hflip(x, params.flip)

    def __call__(self, images, sizes, generator=None):
        params = self.draw(sizes, generator)
        return self.finish(self.crop(images, params), params)
