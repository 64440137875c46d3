"""DiRA's two-view augmentation and restorative distortion on a whole batch (GPU or loader workers).

The batched counterpart of dira.data.TwoViewTransform / Distortion: the same parameter distributions
(drawn per sample on the CPU, from torch's global generator unless one is given), applied with batched
torch operations (shared.augment2d for crop, jitter, blur and flip; here the distortion, as masks and
one gather). Given the same parameters, the distortion is exactly the reference's; crop, jitter and
blur equal torchvision's tensor functions per sample (the PIL reference differs from those by 8-bit
rounding and PIL's box-filter blur; see dira/README.md, "Data paths").
"""

from dataclasses import dataclass

import torch

from dira.data import Distortion
from shared.augment2d import ViewAugment

IN_PAINT, OUT_PAINT, SWAP, NONE = range(4)
BLOCKS = 10  # at most 10 rectangles (in/out-painting) or 10 swapped pairs per image


@dataclass
class DistortionParams:
    """kind (B,) IN_PAINT/OUT_PAINT/SWAP/NONE; rects (B, 10, 4) [x, y, bx, by] (x rows, y columns) of
    in/out-painting with valid (B, 10) marking the ones used; swaps (B, 10, 6) [x1, y1, x2, y2, bx, by]."""
    kind: torch.Tensor
    rects: torch.Tensor
    valid: torch.Tensor
    swaps: torch.Tensor


class BatchDistortion:
    """Custom_Distoration on (B, C, size, size) batches; lengths and quirks as dira.data.Distortion."""

    def __init__(self, size=224, strict_swap_overlap=False):
        ref = Distortion(size, strict_swap_overlap)
        self.size, self.strict, self.margin = size, strict_swap_overlap, ref.margin
        self.inpaint, self.outpaint, self.swap = ref.inpaint, ref.outpaint, ref.swap

    def _corner(self, block, generator):
        """randint(margin, size - block - margin) per element."""
        u = torch.rand(block.shape, dtype=torch.float64, generator=generator)
        return self.margin + torch.floor(u * (self.size - block - 2 * self.margin + 1)).long()

    def _swap_pairs(self, shape, generator):
        blocks = torch.randint(self.swap[0], self.swap[1] + 1, shape + (2,), generator=generator)
        return torch.cat([self._corner(blocks, generator), self._corner(blocks, generator), blocks], -1)

    def draw(self, n, generator=None):
        r = torch.rand(n, dtype=torch.float64, generator=generator)
        kind = torch.full((n,), NONE)
        for k, bound in ((SWAP, 0.65), (OUT_PAINT, 0.35), (IN_PAINT, 0.3)):
            kind[r <= bound] = k
        inner = torch.randint(self.inpaint[0], self.inpaint[1] + 1, (n, BLOCKS, 2), generator=generator)
        outer = self.size - torch.randint(self.outpaint[0], self.outpaint[1] + 1, (n, BLOCKS, 2), generator=generator)
        blocks = torch.where((kind == OUT_PAINT)[:, None, None], outer, inner)
        rects = torch.cat([self._corner(blocks, generator), blocks], -1)
        stop = torch.rand((n, BLOCKS), generator=generator) < 0.1  # `if random.random() < 0.1: break`
        valid = torch.cat([torch.ones(n, 1, dtype=torch.bool), (~stop[:, :-1]).cumprod(1).bool()], 1)
        swaps = self._swap_pairs((n, BLOCKS), generator)
        if self.strict:  # redraw pairs whose blocks overlap in both x and y, as the intended test
            while True:
                x1, y1, x2, y2, bx, by = swaps.unbind(-1)
                bad = ~((x1 > x2 + bx) | (x2 > x1 + bx) | (y1 > y2 + by) | (y2 > y1 + by))
                if not bad.any():
                    break
                swaps[bad] = self._swap_pairs((int(bad.sum()),), generator)
        return DistortionParams(kind, rects, valid, swaps)

    def _inside(self, start, length, device):
        """(m, S) bool: start <= i < start + length."""
        i = torch.arange(self.size, device=device)
        start, length = start[:, None], length[:, None]
        return (i >= start) & (i < start + length)

    def __call__(self, x, params, impl="auto"):
        """The distorted copy of x (B, C, size, size). impl: "masks" (batched masks and one gather; CUDA's
        default) or "loop" (the reference's slice copies per sample; the CPU's default). Same result."""
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"distortion of size {self.size} given images of {tuple(x.shape[-2:])}")
        if impl == "auto":
            impl = "masks" if x.is_cuda else "loop"
        if impl == "loop":
            return self._loop(x.detach().cpu().clone(), params).to(x.device)
        if impl != "masks":
            raise ValueError(f"impl must be auto, masks or loop, got {impl!r}")
        x = x.clone()
        dev = x.device
        paint = (params.kind == IN_PAINT) | (params.kind == OUT_PAINT)
        idx = paint.nonzero()[:, 0]
        if len(idx):
            rects, valid = params.rects[idx].to(dev), params.valid[idx].to(dev)  # one copy each, not per block
            covered = torch.zeros((len(idx), self.size, self.size), dtype=torch.bool, device=dev)
            for k in range(BLOCKS):
                rows = self._inside(rects[:, k, 0], rects[:, k, 2], dev) & valid[:, k, None]
                cols = self._inside(rects[:, k, 1], rects[:, k, 3], dev)
                covered |= rows[:, :, None] & cols[:, None, :]
            outer = (params.kind[idx] == OUT_PAINT).to(dev)[:, None, None]
            zero = torch.where(outer, ~covered, covered)  # in-painting zeros the blocks, out-painting the rest
            dev_idx = idx.to(dev)
            x[dev_idx] = x[dev_idx].masked_fill(zero[:, None], 0)
        idx = (params.kind == SWAP).nonzero()[:, 0]
        if len(idx):
            m, s = len(idx), self.size
            dy = torch.zeros((m, s, s), dtype=torch.long, device=dev)
            dx = torch.zeros_like(dy)
            swaps = params.swaps[idx].to(dev)
            for k in range(BLOCKS):  # later writes win, as the reference's sequential slice assignments
                x1, y1, x2, y2, bx, by = swaps[:, k].unbind(-1)
                for (ax, ay), (sx, sy) in (((x1, y1), (x2, y2)), ((x2, y2), (x1, y1))):
                    inside = self._inside(ax, bx, dev)[:, :, None] & self._inside(ay, by, dev)[:, None, :]
                    dy = torch.where(inside, (sx - ax)[:, None, None], dy)
                    dx = torch.where(inside, (sy - ay)[:, None, None], dx)
            i = torch.arange(s, device=dev)
            source = ((i[:, None] + dy) * s + (i[None, :] + dx)).view(m, 1, s * s).expand(-1, x.shape[1], -1)
            dev_idx = idx.to(dev)
            x[dev_idx] = x[dev_idx].flatten(2).gather(2, source).view(m, x.shape[1], s, s)
        return x


    @staticmethod
    def _loop(x, params):
        arr = x.numpy()  # shares x's memory
        for a, kind, rects, valid, swaps in zip(arr, params.kind.tolist(), params.rects.tolist(),
                                                params.valid.tolist(), params.swaps.tolist()):
            if kind in (IN_PAINT, OUT_PAINT):
                kept = a.copy()
                if kind == OUT_PAINT:
                    a[:] = 0
                for (r, c, br, bc), ok in zip(rects, valid):
                    if not ok:
                        break
                    a[:, r:r + br, c:c + bc] = 0 if kind == IN_PAINT else kept[:, r:r + br, c:c + bc]
            elif kind == SWAP:
                src = a.copy()
                for r1, c1, r2, c2, br, bc in swaps:
                    a[:, r1:r1 + br, c1:c1 + bc] = src[:, r2:r2 + br, c2:c2 + bc]
                    a[:, r2:r2 + br, c2:c2 + bc] = src[:, r1:r1 + br, c1:c1 + bc]
        return x


class BatchTwoView:
    """TwoViewTransform on a batch of gray images (B, 1, H, W) (uint8 or float in [0, 1]) of true sizes
    `sizes` (B, 2): returns [y1, y2] (B, 3, size, size) in `di`, [y1, y2, target (B, 1, size, size)]
    otherwise, plus view 1 before the distortion with `with_clean_view`. Same flags as TwoViewTransform."""

    def __init__(self, mode="dira", size=224, flip_target=False, strict_swap_overlap=False, with_clean_view=False,
                 crop_impl="auto"):
        self.mode = mode.lower()
        self.flip_target = flip_target
        self.with_clean_view = with_clean_view
        self.view = ViewAugment(size, scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.0,
                                blur_sigma=(0.1, 2.0), blur_p=0.5, flip_p=0.5, crop_impl=crop_impl, blur_kind="pil")
        self.distort = BatchDistortion(size, strict_swap_overlap)

    def draw(self, sizes, generator=None):
        n = len(sizes)
        params = {"view1": self.view.draw(sizes, generator), "view2": self.view.draw(sizes, generator)}
        if self.mode != "di":
            params["distort1"], params["distort2"] = self.distort.draw(n, generator), self.distort.draw(n, generator)
        return params

    @staticmethod
    def _rgb(x):
        return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x

    def apply(self, images, params):
        crop1 = self.view.crop(images, params["view1"])
        v1 = self.view.finish(crop1, params["view1"])
        v2 = self.view.finish(self.view.crop(images, params["view2"]), params["view2"])
        if self.mode == "di":
            return [self._rgb(v1), self._rgb(v2)]
        y1, y2 = self.distort(v1, params["distort1"]), self.distort(v2, params["distort2"])
        target = crop1 if crop1.shape[1] == 1 else crop1.mul(torch.tensor([0.299, 0.587, 0.114], device=crop1.device)
                                                            .view(1, 3, 1, 1)).sum(1, keepdim=True)
        if self.flip_target:
            flips = params["view1"].flip.to(target.device).view(-1, 1, 1, 1)
            target = torch.where(flips, target.flip(-1), target)
        out = [self._rgb(y1), self._rgb(y2), target]
        if self.with_clean_view:
            out.append(self._rgb(v1))
        return out

    def __call__(self, images, sizes, generator=None):
        return self.apply(images, self.draw(sizes, generator))
