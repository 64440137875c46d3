"""Self-restoration transforms of Semantic Genesis and TransVW, batched in torch.

The originals (`utils/purturbation.py`) transform one NumPy cube at a time: an elastic warp with
probability 1, then exactly one of four transforms, each with probability 0.25:

    local pixel shuffling | non-linear intensity (Bezier) | in-painting | out-painting

and the network restores the *undeformed* cube. Here every step works on a batch N x 1 x X x Y x Z of
intensities in [0, 1], on whatever device the batch lives (the GPU, or a loader worker's CPU), with
the original parameter distributions:

- elastic: two displacement fields (axes X and Y, none along Z), each uniform noise in [-1, 1)
  smoothed by a Gaussian (sigma 8, truncated at 4 sigma, zero outside the cube) and scaled by
  alpha = 991; bilinear sampling within each Z slice with half-sample reflection at the borders;
- non-linear: cubic Bezier through (0,0), (a,b), (c,d), (1,1) sampled at 100,000 points; half of the
  draws sort only x (an inverted mapping, f(0)=1, f(1)=0), the other half sort x and y (increasing);
- local shuffle: 5 blocks of [1, X//10] x [1, Y//10] x [1, Z//10] voxels, each permuted;
- in-painting: one block of [X//6, X//3] per axis filled with per-voxel uniform noise;
- out-painting: uniform noise everywhere but one box of dim - [3 dim//7, 4 dim//7] per axis.

Randomness comes from a `numpy.random.Generator` passed in: small parameters are drawn from it, bulk
noise from a torch generator seeded from it, so a batch is a pure function of (input, generator state).

On a CPU the warp runs CPU_CHUNK cubes at a time and the four transforms work in place, cube by cube:
whole-batch temporaries of tens of MiB cost more in page faults than in arithmetic (about 1.5 ms of CPU
time per 64x64x32 cube here, against 2.3-3 ms for whole-batch passes and ~58 ms for the original).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

TRANSFORMS = ("local-shuffle", "non-linear", "in-paint", "out-paint")
ALPHA, SIGMA, TRUNCATE = 991.0, 8.0, 4.0
BEZIER_SAMPLES = 100_000
LUT_SIZE = 16_385  # the Bezier mapping is tabulated on this uniform grid of [0, 1], then interpolated
SHUFFLE_BLOCKS = 5
CPU_CHUNK = 4  # cubes per pass through the elastic warp on a CPU (see cube_chunks)


def torch_generator(rng, device="cpu"):
    """A torch generator on `device` seeded from the numpy generator `rng` (advances `rng`)."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return gen


def _randint(rng, low, high):
    """Python's random.randint: inclusive on both ends."""
    return int(rng.integers(low, high + 1))


def _corner(rng, dim, size, margin=3):
    """randint[margin, dim - size - margin], the margin shrinking only for cubes too small to keep it."""
    lo = min(margin, dim - size)
    return _randint(rng, lo, max(lo, dim - size - margin))


# ---------------------------------------------------------------------------------------- elastic

def gaussian_matrix(n, sigma=SIGMA, truncate=TRUNCATE, device="cpu", dtype=torch.float32):
    """n x n matrix M with (M @ v) = scipy.ndimage.gaussian_filter1d(v, sigma, mode='constant')."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    idx = torch.arange(n)
    diff = idx[None, :] - idx[:, None]  # column - row
    mat = torch.where(diff.abs() <= radius, weights[(diff + radius).clamp(0, 2 * radius)], 0.0)
    return mat.to(device=device, dtype=dtype)


def smooth_fields(noise, sigma=SIGMA, truncate=TRUNCATE):
    """Separable Gaussian along the last three axes of N x C x A x B x D fields, zero padding
    (scipy.ndimage.gaussian_filter with mode='constant')."""
    n, c, sa, sb, sd = noise.shape
    ma, mb, md = (gaussian_matrix(s, sigma, truncate, noise.device, noise.dtype) for s in (sa, sb, sd))
    out = torch.matmul(noise, md.T)                                      # along D (one GEMM)
    out = torch.matmul(mb, out.reshape(n * c * sa, sb, sd))              # along B
    out = torch.matmul(ma, out.reshape(n * c, sa, sb * sd))              # along A
    return out.reshape(n, c, sa, sb, sd)


_KL = {}


def _kl_factor(n, sigma, truncate, device, dtype, rel_tol=1e-4):
    """n x r factor L with L L^T = G G^T (G = gaussian_matrix), keeping singular values > rel_tol."""
    key = (n, sigma, truncate, str(device), dtype)
    if key not in _KL:
        u, s, _ = torch.linalg.svd(gaussian_matrix(n, sigma, truncate, dtype=torch.float64))
        r = int((s > rel_tol * s[0]).sum())
        _KL[key] = (u[:, :r] * s[:r]).to(device=device, dtype=dtype)
    return _KL[key]


def elastic_displacement(shape, rng, alpha=ALPHA, sigma=SIGMA, device="cpu", generator=None, exact=False):
    """N x Z x X x Y x 2 displacements in voxels, [..., 0] along Y and [..., 1] along X (no Z
    displacement), distributed as the original's.

    The original smooths uniform noise U[-1, 1) (variance 1/3) with a Gaussian G along each axis. That
    field is a Gaussian random field with covariance (1/3) G G^T per axis (the sum of ~10^5 uniforms is
    normal to any measurable precision), so by default it is drawn from its Karhunen-Loeve expansion:
    (U S) w with G = U S V^T and w ~ N(0, 1/3), keeping the singular values above 1e-4 of the largest
    (13 of 64, 7 of 32; the dropped modes hold < 1e-7 of the variance). Same distribution, ~1000x fewer
    random numbers and FLOPs. `exact=True` smooths full-size uniform noise literally, as the original.

    The layout is the one grid_sample reads (each Z slice an image, the two components last), so the
    warp needs no copy of the field.
    """
    n, _, sx, sy, sz = shape
    gen = generator if generator is not None else torch_generator(rng, device)
    if exact:
        noise = torch.rand((n, 2, sz, sx, sy), generator=gen, device=device) * 2 - 1
        return (alpha * smooth_fields(noise, sigma)).permute(0, 2, 3, 4, 1).contiguous()
    lz, lx, ly = (_kl_factor(s, sigma, TRUNCATE, torch.device(device), torch.float32) for s in (sz, sx, sy))
    rz, rx, ry = lz.shape[1], lx.shape[1], ly.shape[1]
    w = torch.randn((n, rz, rx, ry, 2), generator=gen, device=device) * (alpha / math.sqrt(3.0))
    out = torch.matmul(ly, w)                                             # r_y -> Y: n x rz x rx x Y x 2
    out = torch.matmul(lx, out.reshape(n * rz, rx, sy * 2))               # r_x -> X
    out = torch.matmul(lz, out.reshape(n, rz, sx * sy * 2))               # r_z -> Z
    return out.reshape(n, sz, sx, sy, 2)


def _identity_grid(sx, sy, device, dtype):
    """X x Y x 2 grid_sample coordinates of the voxel centres (align_corners=False): (2p + 1) / size - 1."""
    jj = torch.arange(sy, device=device, dtype=dtype).view(1, sy) * 2 / sy + (1 / sy - 1)
    ii = torch.arange(sx, device=device, dtype=dtype).view(sx, 1) * 2 / sx + (1 / sx - 1)
    return torch.stack(torch.broadcast_tensors(jj, ii), dim=-1)


def displacement_to_grid(displacement):
    """N x Z x X x Y x 2 voxel displacements -> the grid_sample grid (N*Z) x X x Y x 2."""
    n, sz, sx, sy, _ = displacement.shape
    scale = displacement.new_tensor([2.0 / sy, 2.0 / sx])
    grid = torch.addcmul(_identity_grid(sx, sy, displacement.device, displacement.dtype), displacement, scale)
    return grid.view(n * sz, sx, sy, 2)


def _grid_coefficients(shape, alpha, sigma, device, generator):
    """The random part of the elastic grid: N x r_z x r_x x r_y x 2 Karhunen-Loeve coefficients, already
    scaled from voxels to grid_sample units. Drawn for the whole batch at once, so chunking the warp
    later does not change the random stream."""
    n, _, sx, sy, sz = shape
    rz, rx, ry = (_kl_factor(s, sigma, TRUNCATE, torch.device(device), torch.float32).shape[1] for s in (sz, sx, sy))
    w = torch.randn((n, rz, rx, ry, 2), generator=generator, device=device)
    return w.mul_(torch.tensor([2.0 / sy, 2.0 / sx], device=device) * (alpha / math.sqrt(3.0)))


def _grid_from_coefficients(w, shape, sigma=SIGMA):
    """(n*Z) x X x Y x 2 grid_sample grid of the n cubes whose coefficients are `w`: the voxel-to-grid
    scale is already in `w`, the identity grid enters as one more row of the last product."""
    n = w.shape[0]
    _, _, sx, sy, sz = shape
    lz, lx, ly = (_kl_factor(s, sigma, TRUNCATE, w.device, torch.float32) for s in (sz, sx, sy))
    rz, rx = lz.shape[1], lx.shape[1]
    out = torch.matmul(ly, w)                                             # r_y -> Y: n x rz x rx x Y x 2
    out = torch.matmul(lx, out.reshape(n * rz, rx, sy * 2))               # r_x -> X
    ones = torch.ones((sz, 1), device=w.device)
    base = _identity_grid(sx, sy, w.device, torch.float32).reshape(1, 1, -1).expand(n, 1, -1)
    coeffs = torch.cat((out.reshape(n, rz, sx * sy * 2), base), dim=1)   # n x (rz + 1) x (X*Y*2)
    return torch.matmul(torch.cat((lz, ones), dim=1), coeffs).view(n * sz, sx, sy, 2)


def elastic_grid(shape, rng, alpha=ALPHA, sigma=SIGMA, device="cpu", generator=None, exact=False):
    """The sampling grid of `elastic_displacement`, built without an extra pass over the field: the
    voxel-to-grid scale goes into the random coefficients and the identity grid into the last product."""
    gen = generator if generator is not None else torch_generator(rng, device)
    if exact:
        return displacement_to_grid(elastic_displacement(shape, rng, alpha, sigma, device, gen, exact=True))
    return _grid_from_coefficients(_grid_coefficients(shape, alpha, sigma, device, gen), shape, sigma)


def _warp_into(out, x, grid):
    """out[:] = warp_grid(x, grid). One cube at a time, each Z slice an image of a strided view (grid_sample
    reads strides, so no transposed copy of the input), the permutation back fused into the write."""
    sz = x.shape[-1]
    grid = grid.to(x.dtype)
    for b in range(x.shape[0]):
        slices = x[b, 0].permute(2, 0, 1).unsqueeze(1)                # Z x 1 x X x Y, a view
        warped = F.grid_sample(slices, grid[b * sz:(b + 1) * sz], mode="bilinear", padding_mode="reflection",
                               align_corners=False)
        out[b, 0].copy_(warped[:, 0].permute(1, 2, 0))
    return out


def warp_grid(x, grid):
    """Bilinear sampling of every Z slice of x (N x 1 x X x Y x Z) at `grid` ((N*Z) x X x Y x 2)."""
    return _warp_into(torch.empty_like(x), x, grid)


def warp(x, displacement):
    """Sample x (N x 1 x X x Y x Z) at (i + dX, j + dY, k): bilinear in-plane, half-sample reflection.

    displacement: N x Z x X x Y x 2 ([..., 0] along Y, [..., 1] along X). Equivalent to
    scipy.ndimage.map_coordinates(order=1, mode='reflect') with no displacement along Z.
    """
    return warp_grid(x, displacement_to_grid(displacement.to(x.dtype)))


def cube_chunks(x):
    """Slices of the batch to process together: everything on a GPU; CPU_CHUNK cubes on a CPU, where
    large temporaries (a batch of 64 grids is 64 MiB) go to fresh mmap pages on every call and the
    page faults cost more than the arithmetic."""
    step = x.shape[0] if x.device.type != "cpu" else CPU_CHUNK
    return [slice(a, min(a + step, x.shape[0])) for a in range(0, x.shape[0], step)]


def elastic_warp(x, rng, alpha=ALPHA, sigma=SIGMA, generator=None, exact=False):
    """The original's `elastic_transform` (alpha 991, sigma 8) on every cube of the batch."""
    gen = generator if generator is not None else torch_generator(rng, x.device)
    if exact:
        return warp_grid(x, elastic_grid(x.shape, rng, alpha, sigma, x.device, gen, exact=True))
    w = _grid_coefficients(x.shape, alpha, sigma, x.device, gen)
    out = torch.empty_like(x)
    for sl in cube_chunks(x):
        _warp_into(out[sl], x[sl], _grid_from_coefficients(w[sl], x.shape, sigma))
    return out


# ------------------------------------------------------------------------------------- non-linear

_BASIS = {}


def _bernstein(n_samples):
    """4 x n weights of P0..P3 at t = linspace(0, 1, n), in the original's reversed order (t=0 -> P3)."""
    if n_samples not in _BASIS:
        t = np.linspace(0.0, 1.0, n_samples)
        basis = np.stack([t**3, 3 * t**2 * (1 - t), 3 * t * (1 - t) ** 2, (1 - t) ** 3], axis=1)
        _BASIS[n_samples] = basis.astype(np.float32)  # n x 4; float32 halves the sorting time
    return _BASIS[n_samples]


def _mapping_from_draw(draw, n_samples):
    a, b, c, d, u = draw
    xvals, yvals = (_bernstein(n_samples) @ np.array([[0, 0], [a, b], [c, d], [1, 1]], np.float32)).T
    if u < 0.5:
        return np.sort(xvals), yvals  # inverted: y keeps t order, so f(0) = 1 and f(1) = 0
    return np.sort(xvals), np.sort(yvals)


def bezier_mapping(rng, n_samples=BEZIER_SAMPLES):
    """(xp, fp) of one draw (a, b, c, d, then the inversion coin): v -> np.interp(v, xp, fp)."""
    return _mapping_from_draw(rng.random(5), n_samples)


def bezier_lut(rng, n_samples=BEZIER_SAMPLES, lut_size=LUT_SIZE):
    """The mapping of one draw tabulated at lut_size equally spaced intensities in [0, 1]."""
    xp, fp = bezier_mapping(rng, n_samples)
    return np.interp(np.linspace(0.0, 1.0, lut_size), xp, fp)


def bezier_luts_torch(draws, n_samples=BEZIER_SAMPLES, lut_size=LUT_SIZE, device="cpu"):
    """bezier_lut for a batch of draws (N x 5) in torch, for GPUs (np.interp semantics: clamped ends)."""
    basis = torch.as_tensor(_bernstein(n_samples), device=device)              # n x 4
    draws = torch.as_tensor(draws, dtype=torch.float32, device=device)
    zero, one = torch.zeros_like(draws[:, 0]), torch.ones_like(draws[:, 0])
    xs = torch.stack((zero, draws[:, 0], draws[:, 2], one), 1) @ basis.T       # N x n
    ys = torch.stack((zero, draws[:, 1], draws[:, 3], one), 1) @ basis.T
    xs = xs.sort(dim=1).values
    ys = torch.where((draws[:, 4] < 0.5)[:, None], ys, ys.sort(dim=1).values)
    grid = torch.linspace(0, 1, lut_size, device=device).expand(len(draws), -1).contiguous()
    j = (torch.searchsorted(xs, grid, right=True) - 1).clamp(0, n_samples - 2)
    x0, x1, y0, y1 = xs.gather(1, j), xs.gather(1, j + 1), ys.gather(1, j), ys.gather(1, j + 1)
    w = ((grid - x0) / (x1 - x0)).nan_to_num(0.0, 0.0, 0.0).clamp(0, 1)
    return y0 + w * (y1 - y0)


def bezier_luts_numpy(draws, n_samples=BEZIER_SAMPLES, lut_size=LUT_SIZE):
    """bezier_lut for a batch of draws (N x 5) on a CPU: N x lut_size float32 tables.

    The same curve as `_mapping_from_draw`, written as a*B1 + c*B2 + B3 (P0 = (0, 0) adds nothing) and
    sorted with the stable sort, which runs in linear time on the curve's few monotone runs."""
    key = ("rows", n_samples)
    if key not in _BASIS:
        _BASIS[key] = np.ascontiguousarray(_bernstein(n_samples).T)
    basis = _BASIS[key]                                                         # 4 x n
    grid = np.linspace(0.0, 1.0, lut_size)
    luts = np.empty((len(draws), lut_size), np.float32)
    for i, (a, b, c, d, u) in enumerate(draws):
        xs = np.sort(basis[1] * np.float32(a) + basis[2] * np.float32(c) + basis[3], kind="stable")
        ys = basis[1] * np.float32(b) + basis[2] * np.float32(d) + basis[3]
        luts[i] = np.interp(grid, xs, ys if u < 0.5 else np.sort(ys, kind="stable"))
    return luts


def apply_lut(x, luts):
    """Piecewise-linear lookup of x (N x ...) in per-sample tables N x L over [0, 1]; clamps outside."""
    if x.device.type == "cpu" and x.shape[0] > CPU_CHUNK:
        out = torch.empty_like(x)
        for sl in cube_chunks(x):
            out[sl] = _apply_lut(x[sl], luts[sl])
        return out
    return _apply_lut(x, luts)


def _apply_lut(x, luts):
    n, size = luts.shape
    pos = (x.reshape(n, -1) * (size - 1)).clamp_(0, size - 1)     # N x M positions in the table
    idx = pos.to(torch.int64).clamp_(max=size - 2)
    lo = luts.gather(1, idx)
    return torch.lerp(lo, luts.gather(1, idx + 1), pos.sub_(idx)).reshape(x.shape)


def _nonlinear_luts(n, device, rng, n_samples=BEZIER_SAMPLES, lut_size=LUT_SIZE):
    """n float32 tables on `device` from n draws of `rng`."""
    draws = rng.random((n, 5))
    if torch.device(device).type == "cpu":
        return torch.from_numpy(bezier_luts_numpy(draws, n_samples, lut_size))
    return bezier_luts_torch(draws, n_samples, lut_size, device)


def nonlinear_transform(x, rng, n_samples=BEZIER_SAMPLES, lut_size=LUT_SIZE):
    """One Bezier intensity mapping per cube (the original's `nonlinear_transformation`).

    The tables are built with NumPy on a CPU (fast sorts) and batched in torch on a GPU; both read the
    same draws from `rng`.
    """
    return apply_lut(x, _nonlinear_luts(x.shape[0], x.device, rng, n_samples, lut_size).to(x.dtype))


# ------------------------------------------------------------------------- shuffling and painting

def local_pixel_shuffling(x, rng, n_blocks=SHUFFLE_BLOCKS, generator=None):
    """Permute the voxels inside n_blocks random small blocks per cube; blocks read the untouched input."""
    out = x.clone()
    _, _, sx, sy, sz = x.shape
    gen = generator if generator is not None else torch_generator(rng, x.device)
    for b in range(x.shape[0]):
        for _ in range(n_blocks):
            bx, by, bz = (_randint(rng, 1, max(1, s // 10)) for s in (sx, sy, sz))
            px, py, pz = _randint(rng, 0, sx - bx), _randint(rng, 0, sy - by), _randint(rng, 0, sz - bz)
            window = x[b, 0, px:px + bx, py:py + by, pz:pz + bz].reshape(-1)
            perm = torch.randperm(window.numel(), generator=gen, device=x.device)
            out[b, 0, px:px + bx, py:py + by, pz:pz + bz] = window[perm].reshape(bx, by, bz)
    return out


def inpaint_boxes(shape, rng):
    """One (start, stop) per axis for each cube: size randint[dim//6, dim//3], corner randint[3, ...]."""
    boxes = []
    for _ in range(shape[0]):
        sizes = [_randint(rng, s // 6, s // 3) for s in shape[2:]]
        starts = [_corner(rng, s, size) for s, size in zip(shape[2:], sizes)]
        boxes.append([(a, a + size) for a, size in zip(starts, sizes)])
    return boxes


def outpaint_boxes(shape, rng):
    """The kept box per cube: size dim - randint[3 dim//7, 4 dim//7], corner randint[3, ...]."""
    boxes = []
    for _ in range(shape[0]):
        sizes = [s - _randint(rng, 3 * s // 7, 4 * s // 7) for s in shape[2:]]
        starts = [_corner(rng, s, size) for s, size in zip(shape[2:], sizes)]
        boxes.append([(a, a + size) for a, size in zip(starts, sizes)])
    return boxes


def image_in_painting(x, rng, generator=None):
    """Replace one block per cube with uniform [0, 1) noise (not in place, unlike the original)."""
    gen = generator if generator is not None else torch_generator(rng, x.device)
    out = x.clone()
    for b, box in enumerate(inpaint_boxes(x.shape, rng)):
        sl = tuple(slice(a, c) for a, c in box)
        out[(b, 0, *sl)] = torch.rand([c - a for a, c in box], generator=gen, device=x.device, dtype=x.dtype)
    return out


def image_out_painting(x, rng, generator=None):
    """Uniform [0, 1) noise everywhere except one box per cube, which keeps the input."""
    gen = generator if generator is not None else torch_generator(rng, x.device)
    out = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    for b, box in enumerate(outpaint_boxes(x.shape, rng)):
        sl = (b, 0, *(slice(a, c) for a, c in box))
        out[sl] = x[sl]
    return out


# ---------------------------------------------------------------------------------------- pipeline

def choose_transforms(n, rng, probs=(0.25, 0.25, 0.25, 0.25)):
    """Index into TRANSFORMS per cube, by the original's thresholds on one uniform draw each."""
    edges = np.cumsum(probs)[:-1]
    return np.searchsorted(edges, rng.random(n), side="left")  # r <= 0.25 -> 0, ... (0.75, 1) -> 3


def _shuffle_(cube, rng, gen, n_blocks=SHUFFLE_BLOCKS):
    """local_pixel_shuffling of one 1 x X x Y x Z cube in place: every block is read before any is
    written, so overlapping blocks read the untouched input as in the original."""
    _, sx, sy, sz = cube.shape
    writes = []
    for _ in range(n_blocks):
        bx, by, bz = (_randint(rng, 1, max(1, s // 10)) for s in (sx, sy, sz))
        px, py, pz = _randint(rng, 0, sx - bx), _randint(rng, 0, sy - by), _randint(rng, 0, sz - bz)
        window = cube[0, px:px + bx, py:py + by, pz:pz + bz]
        perm = torch.randperm(window.numel(), generator=gen, device=cube.device)
        writes.append((window, window.reshape(-1)[perm].reshape(bx, by, bz)))
    for window, values in writes:
        window.copy_(values)


def restoration_pair(x, rng, *, elastic=True, warped_target=False, probs=(0.25, 0.25, 0.25, 0.25),
                     n_bezier=BEZIER_SAMPLES):
    """The per-sample pipeline of the original `__getitem__`, for a whole batch.

    Args:
        x: N x 1 x X x Y x Z cubes in [0, 1] (never modified).
        rng: numpy Generator driving every random choice.
        elastic: apply the elastic warp first (the original always does, training and validation).
        warped_target: restore the warped cube instead of the undeformed one (the original's target
            is the undeformed cube, so the network must also undo the warp).
        probs: probabilities of local-shuffle, non-linear, in-paint, out-paint.
    Returns (inputs, targets, choice): the transformed batch, the restoration target, and the index
    into TRANSFORMS applied to each cube.

    The four transforms work in place on the fresh warped batch, cube by cube, drawing from `rng` and
    the torch generator in the order of the standalone functions above (all shuffled cubes, then the
    non-linear draws, the in-painting boxes and noise, the out-painting noise and boxes), so a batch
    equals what those functions give on the selected cubes.
    """
    if x.dim() != 5 or x.shape[1] != 1:
        raise ValueError(f"expected cubes of shape (N, 1, X, Y, Z), got {tuple(x.shape)}")
    x = x.float()
    gen = torch_generator(rng, x.device)
    target = x
    inputs = elastic_warp(x, rng, generator=gen) if elastic else x.clone()
    if warped_target:
        target = inputs.clone()
    choice = choose_transforms(x.shape[0], rng, probs)
    shuffle, nonlinear, inpaint, outpaint = (np.flatnonzero(choice == k).tolist() for k in range(4))
    for b in shuffle:
        _shuffle_(inputs[b], rng, gen)
    if nonlinear:
        luts = _nonlinear_luts(len(nonlinear), x.device, rng, n_bezier)
        for lut, b in zip(luts, nonlinear):
            inputs[b] = apply_lut(inputs[b:b + 1], lut[None])[0]
    for b, box in zip(inpaint, inpaint_boxes((len(inpaint), *x.shape[1:]), rng)):
        sl = tuple(slice(a, c) for a, c in box)
        inputs[(b, 0, *sl)] = torch.rand([c - a for a, c in box], generator=gen, device=x.device)
    for b, box in zip(outpaint, outpaint_boxes((len(outpaint), *x.shape[1:]), rng)):
        fill = torch.rand(x.shape[1:], generator=gen, device=x.device)  # numpy and torch streams are separate
        sl = (0, *(slice(a, c) for a, c in box))
        fill[sl] = inputs[b][sl]
        inputs[b] = fill
    return inputs, target, choice


def central_slices(volumes):
    """N x 1 x X x Y x Z -> list of the N central Z slices (X x Y numpy arrays), for picture grids."""
    z = volumes.shape[-1] // 2
    return [v[0, :, :, z].detach().float().cpu().numpy() for v in volumes]


def transform_names(choice):
    return [TRANSFORMS[int(k)] for k in choice]


__all__ = ["TRANSFORMS", "restoration_pair", "elastic_warp", "elastic_displacement", "elastic_grid", "warp",
           "warp_grid", "displacement_to_grid", "smooth_fields", "gaussian_matrix", "nonlinear_transform",
           "bezier_mapping", "bezier_lut", "bezier_luts_torch", "bezier_luts_numpy", "apply_lut",
           "local_pixel_shuffling", "image_in_painting", "image_out_painting", "inpaint_boxes", "outpaint_boxes",
           "choose_transforms", "torch_generator", "central_slices", "transform_names", "cube_chunks"]
