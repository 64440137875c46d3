"""Shape primitives for the synthetic phantoms (3D volumes and 2D radiographs).

Everything works on plain numpy grids in index space; callers convert to millimetres. Shapes are
boolean masks (or float weights for soft edges) so the phantoms read as "paint this organ here".
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grid(shape):
    """Open index grids (ogrid) for `shape`, one broadcastable array per axis."""
    return np.ogrid[tuple(slice(0, n) for n in shape)]


def ellipsoid(shape, center, radii):
    """Boolean mask of an axis-aligned ellipsoid (works for 2D ellipses too)."""
    dist = 0.0
    for g, c, r in zip(grid(shape), center, radii):
        dist = dist + ((g - c) / r) ** 2
    return dist <= 1.0


def soft_ellipsoid(shape, center, radii, edge=0.15):
    """Ellipsoid with a smooth rim: 1 inside, falling to 0 over `edge` of the normalised radius."""
    dist = 0.0
    for g, c, r in zip(grid(shape), center, radii):
        dist = dist + ((g - c) / r) ** 2
    return np.clip((1.0 + edge - np.sqrt(dist)) / edge, 0.0, 1.0)


def segment(shape, p0, p1, radius, scale=None):
    """Boolean mask of a capsule (tube with round ends) from p0 to p1 in index space.

    `scale` (per-axis voxel size) makes the radius isotropic in physical units on anisotropic grids;
    only the bounding box of the capsule is evaluated, so many thin tubes stay cheap.
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    scale = np.ones(len(shape)) if scale is None else np.asarray(scale, float)
    pad = radius / scale + 1
    lo = np.maximum(np.floor(np.minimum(p0, p1) - pad), 0).astype(int)
    hi = np.minimum(np.ceil(np.maximum(p0, p1) + pad) + 1, shape).astype(int)
    out = np.zeros(shape, bool)
    if np.any(hi <= lo):
        return out
    sub = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    d = (p1 - p0) * scale
    t = np.clip(((sub - p0) * scale) @ d / max(d @ d, 1e-9), 0.0, 1.0)
    closest = p0 * scale + t[..., None] * d
    dist = np.linalg.norm(sub * scale - closest, axis=-1)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = dist <= radius
    return out


def branching_tree(rng, root, direction, length, radius, depth, spread=0.6):
    """Random binary tree of segments [(p0, p1, radius), ...] growing from `root` along `direction`.

    Children turn by up to `spread` radians, shrink in length and radius: a cartoon of
    bronchi and pulmonary vessels branching out from the hilum.
    """
    segments = []
    stack = [(np.asarray(root, float), np.asarray(direction, float), length, radius, depth)]
    while stack:
        p0, d, ln, r, k = stack.pop()
        d = d / np.linalg.norm(d)
        p1 = p0 + d * ln
        segments.append((p0, p1, r))
        if k > 0:
            for _ in range(2):
                nd = d + rng.normal(0, spread, size=d.shape)
                stack.append((p1, nd, ln * rng.uniform(0.6, 0.85), r * 0.75, k - 1))
    return segments


def smooth_noise(rng, shape, sigma, amplitude):
    """Gaussian-smoothed white noise rescaled to unit standard deviation times `amplitude`."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n * (amplitude / (n.std() + 1e-8))


def blob(rng, shape, center, radius, irregularity=0.35, sigma=None):
    """Irregular 2D/3D blob: an ellipsoid whose boundary is perturbed by smooth noise (opacities)."""
    radii = [radius * rng.uniform(0.8, 1.2) for _ in shape]
    dist = 0.0
    for g, c, r in zip(grid(shape), center, radii):
        dist = dist + ((g - c) / r) ** 2
    noise = smooth_noise(rng, shape, sigma or max(radius / 3, 1.0), irregularity)
    return np.sqrt(dist) + noise <= 1.0


def bbox(mask):
    """(x, y, w, h) of a 2D mask in image coordinates (x = column), or None when empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return (
        int(cols.min()),
        int(rows.min()),
        int(cols.max() - cols.min() + 1),
        int(rows.max() - rows.min() + 1),
    )
