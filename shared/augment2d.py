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
uint8 kernels; `impl="loop"`); brightness/contrast/saturation as per-sample blends (on the CPU a loop
of torchvision's adjust_* is cheaper and is the default there); the Gaussian blur as one grouped
separable convolution with a kernel per sample (or PIL's three box passes, `kind="pil"`, the blur
MoCo v2 and DiRA run through PIL). Hue alone is applied per sample (torchvision's
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
    right, and their sizes (B, 2) as int64 [height, width]. A collate_fn for cached images (read-only
    memory-mapped views are copied once, into the batch)."""
    arrays = [np.asarray(im) for im in images]
    arrays = [a[None] if a.ndim == 2 else a for a in arrays]
    sizes = np.array([a.shape[-2:] for a in arrays], dtype=np.int64).reshape(-1, 2)
    h, w = sizes.max(0)
    same = bool((sizes == (h, w)).all())
    out = (np.empty if same else np.zeros)((len(arrays), arrays[0].shape[0], h, w), dtype=arrays[0].dtype)
    for o, a in zip(out, arrays):
        o[:, :a.shape[-2], :a.shape[-1]] = a
    return torch.from_numpy(out), torch.from_numpy(sizes)


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
    return x if x.shape[1] == 1 else torch.stack([F.adjust_hue(img, float(h)) for img, h in zip(x, factor)])


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


_TV_ADJUST = {BRIGHTNESS: F.adjust_brightness, CONTRAST: F.adjust_contrast, SATURATION: F.adjust_saturation,
              HUE: F.adjust_hue}


def color_jitter(x, params, impl="auto"):
    """Apply ColorJitterParams to a float (B, C, H, W) batch in [0, 1].

    impl: "batched" (each step of the random order as a few batched operations; CUDA's default) or
    "loop" (torchvision's adjust_* per sample, which touches each image only for its own adjustments;
    the CPU's default). Both give torchvision's per-sample result.
    """
    if x.shape[1] not in (1, 3):
        raise ValueError(f"colour jitter needs 1 or 3 channels, got {x.shape[1]}")
    # saturation and hue do nothing on one channel (torchvision returns the image as it is)
    ops = [BRIGHTNESS, CONTRAST] + ([SATURATION, HUE] if x.shape[1] == 3 else [])
    neutral = torch.tensor([1.0, 1.0, 1.0, 0.0])
    active = params.apply[:, None] & (params.factors != neutral)  # (B, 4)
    if impl == "auto":
        impl = "batched" if x.is_cuda else "loop"
    if impl == "loop":
        rows = []
        for img, act, order, factors in zip(x, active.tolist(), params.order.tolist(), params.factors.tolist()):
            for op in order:
                if op in ops and act[op]:
                    img = _TV_ADJUST[op](img, factors[op])
            rows.append(img)
        return torch.stack(rows)
    if impl != "batched":
        raise ValueError(f"impl must be auto, batched or loop, got {impl!r}")
    for step in range(4):
        for op in ops:
            mask = active[:, op] & (params.order[:, step] == op)
            x = _on_subset(x, mask, _ADJUST[op], params.factors[:, op])
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


def pil_box_radius(sigma, passes=3):
    """Pillow's _gaussian_blur_radius: the extended-box radius whose `passes` box blurs approximate a
    Gaussian of this sigma (Gwosdek et al. 2011), per element of a float tensor."""
    sigma2 = sigma.float() * sigma.float() / passes
    length = torch.sqrt(12.0 * sigma2 + 1.0)
    whole = torch.floor((length - 1.0) / 2.0)
    frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2) / (6 * (sigma2 - (whole + 1) ** 2))
    return whole + frac


def _pil_blur_all(x, sigma, passes=3):
    """PIL's GaussianBlur(radius=sigma) in float: `passes` extended-box blurs along rows (edge pixels
    repeated), then `passes` along columns; box radius R = r + a: weight 1/(2R+1) within r, a/(2R+1) at r+1."""
    n, c, h, w = x.shape
    radius = pil_box_radius(sigma.cpu())  # kernels built on the CPU: no device sync for their length
    r = torch.floor(radius)
    half = int(r.max()) + 1
    k = torch.arange(-half, half + 1, dtype=torch.float32).abs()[None]  # (1, K)
    ww = 1.0 / (2 * radius[:, None] + 1)
    fw = (1.0 - (2 * r[:, None] + 1) * ww) / 2
    kern = torch.where(k <= r[:, None], ww, torch.where(k == r[:, None] + 1, fw, torch.zeros_like(ww)))
    kern = kern.repeat_interleave(c, 0).to(x.device, x.dtype, non_blocking=True)
    y = x.reshape(1, n * c, h, w)
    for weight, pad in ((kern[:, None, None, :], [half, half, 0, 0]), (kern[:, None, :, None], [0, 0, half, half])):
        for _ in range(passes):
            y = nnf.conv2d(nnf.pad(y, pad, mode="replicate"), weight, groups=n * c)
    return y.reshape(n, c, h, w)


def gaussian_blur(x, apply, sigma, kernel_size=None, kind="gaussian"):
    """Blur the samples where `apply` with their sigma. kind "gaussian": torchvision's
    gaussian_blur(kernel_size, sigma) (reflected borders); "pil": PIL's ImageFilter.GaussianBlur(radius=sigma)
    (MoCo v2's blur: three box passes per axis, repeated borders; float, without PIL's 8-bit rounding)."""
    if kind == "pil":
        return _on_subset(x, apply, _pil_blur_all, sigma)
    if kind != "gaussian":
        raise ValueError(f"blur kind must be gaussian or pil, got {kind!r}")
    kernel_size = kernel_size or blur_kernel_size(float(sigma.max()) if len(sigma) else 0.1)
    return _on_subset(x, apply, lambda s, sg: _blur_all(s, sg, kernel_size), sigma)


def draw_flips(n, p=0.5, generator=None):
    """RandomHorizontalFlip(p): (B,) bool."""
    return torch.rand(n, generator=generator) < p


def hflip(x, flags):
    return _on_subset(x, flags, lambda s: s.flip(-1))


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

    blur_kind "gaussian" is torchvision's GaussianBlur (kernel blur_kernel), "pil" MoCo v2's PIL blur.

    `draw(sizes)` gives the parameters, `crop(images, params)` the crops (before any colour change),
    `finish(crops, params)` the rest; `__call__` does all three.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), jitter=(0.4, 0.4, 0.4, 0.1),
                 jitter_p=0.8, grayscale_p=0.0, blur_sigma=(0.1, 2.0), blur_p=0.5, blur_kernel=None, flip_p=0.5,
                 crop_impl="auto", jitter_impl="auto", blur_kind="gaussian"):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.jitter, self.jitter_p, self.grayscale_p = tuple(jitter), jitter_p, grayscale_p
        self.blur_sigma, self.blur_p, self.flip_p = tuple(blur_sigma), blur_p, flip_p
        self.blur_kernel = blur_kernel or blur_kernel_size(self.blur_sigma[1])
        self.crop_impl, self.jitter_impl, self.blur_kind = crop_impl, jitter_impl, blur_kind

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
        x = color_jitter(crops, params.jitter, self.jitter_impl)
        x = grayscale(x, params.gray)
        x = gaussian_blur(x, params.blur, params.sigma, self.blur_kernel, self.blur_kind)
        return hflip(x, params.flip)

    def __call__(self, images, sizes, generator=None):
        params = self.draw(sizes, generator)
        return self.finish(self.crop(images, params), params)
