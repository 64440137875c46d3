"""Volumes for the pattern generator: memory-mapped crops in [0, 1], and scikit-image-style resizing."""

from pathlib import Path

import numpy as np

from shared.genesis.ct_volumes import is_unit_range, normalize_hu


class VolumeStore:
    """Memory-mapped access to the prepared .npy volumes; crops are read without loading the volume."""

    def __init__(self, paths, is_normalized=False):
        self.paths = [Path(p) for p in paths]
        self.is_normalized = is_normalized
        self.shapes = np.array([self._open(i).shape for i in range(len(self.paths))], dtype=np.int64)
        self._unit = {}

    def _open(self, i):
        try:
            vol = np.load(self.paths[i], mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise RuntimeError(f"{self.paths[i]}: cannot read volume ({type(e).__name__}: {e})") from e
        if vol.ndim != 3:
            raise RuntimeError(f"{self.paths[i]}: expected a 3-D (x, y, z) volume, got shape {vol.shape}")
        return vol

    def unit(self, i) -> bool:
        """Whether volume i is already in [0, 1] (flag, or detected once from its values)."""
        if self.is_normalized:
            return True
        if i not in self._unit:
            self._unit[i] = is_unit_range(self._open(i))
        return self._unit[i]

    def load(self, i):
        """Whole volume in [0, 1], float32."""
        vol = np.asarray(self._open(i), dtype=np.float32)
        return vol if self.unit(i) else normalize_hu(vol)

    def crop(self, i, x, y, z, sx, sy, sz, raw=False):
        window = np.asarray(self._open(i)[x:x + sx, y:y + sy, z:z + sz], dtype=np.float32)
        if window.shape != (sx, sy, sz):
            raise RuntimeError(f"{self.paths[i]}: crop at ({x}, {y}, {z}) of size {(sx, sy, sz)} "
                               f"leaves the volume of shape {tuple(self.shapes[i])}")
        return window if raw or self.unit(i) else normalize_hu(window)


def resize_cube(cube, shape):
    """Linear resize with scikit-image's `resize` semantics (order 1, mode 'reflect', preserve_range,
    Gaussian anti-aliasing with sigma = (factor - 1) / 2 on shrunk axes), built from scipy.ndimage."""
    from scipy import ndimage

    cube = np.asarray(cube, dtype=np.float32)
    if tuple(cube.shape) == tuple(shape):
        return cube
    factors = np.array(cube.shape) / np.array(shape)
    sigma = np.maximum(0.0, (factors - 1) / 2)
    if sigma.any():
        cube = ndimage.gaussian_filter(cube, sigma, mode="mirror")
    out = ndimage.zoom(cube, np.array(shape) / np.array(cube.shape), order=1, mode="mirror", grid_mode=True)
    return out.astype(np.float32, copy=False)
