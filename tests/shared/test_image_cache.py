"""shared.image_cache: decode once, keyed by settings, skip bad images at build time, atomic, worker-safe."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from shared.image_cache import ImageCache, build_image_cache, cache_path, read_gray_pil, resize_shorter


def _images(folder):
    rng = np.random.default_rng(0)
    shapes = {"a.png": (40, 60), "b.png": (50, 50), "c.jpg": (90, 30)}
    for name, shape in shapes.items():
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    (folder / "bad.png").write_bytes(b"\x89PNG not really")
    return [folder / n for n in ("a.png", "bad.png", "b.png", "missing.png", "c.jpg")]


def test_build_skips_bad_images_and_reads_back(tmp_path):
    files = _images(tmp_path)
    lines = []
    path = build_image_cache(files, tmp_path / "cache", size=20, names=[f.name for f in files], progress=False,
                             log=lines.append)
    cache = ImageCache(path)
    assert cache.names == ["a.png", "b.png", "c.jpg"]
    assert [s["name"] for s in cache.skipped] == ["bad.png", "missing.png"]
    assert cache.skipped_files() == ["bad.png", "missing.png"]  # what a training loop reports
    assert all(s["reason"] for s in cache.skipped)
    assert any("bad.png" in line for line in lines) and any("2 skipped" in line for line in lines)
    # shorter side 20, aspect kept as torchvision's Resize(int): the longer side truncated
    assert [cache[i].shape for i in range(3)] == [(20, 30), (20, 20), (60, 20)]
    for i, name in enumerate(cache.names):
        expected = resize_shorter(read_gray_pil(tmp_path / name), 20)
        assert cache[i].dtype == np.uint8 and np.array_equal(cache[i], expected)
    assert cache.index_of("c.jpg") == 2
    with pytest.raises(KeyError):
        cache.index_of("bad.png")


def test_key_changes_with_settings_and_reuse(tmp_path):
    files = _images(tmp_path)[:1]
    calls = []

    def counting_reader(path):
        calls.append(path)
        return read_gray_pil(path)

    root = tmp_path / "cache"
    p1 = build_image_cache(files, root, 16, reader=counting_reader, progress=False, log=lambda s: None)
    p2 = build_image_cache(files, root, 16, reader=counting_reader, progress=False, log=lambda s: None)
    assert p1 == p2 and len(calls) == 1  # reused, not decoded again
    assert p1 == cache_path(root, [str(f) for f in files], 16, reader=counting_reader)
    others = {cache_path(root, [str(f) for f in files], 32, reader=counting_reader),          # size
              cache_path(root, ["other.png"], 16, reader=counting_reader),                    # names
              cache_path(root, [str(f) for f in files], 16),                                  # reader
              cache_path(root, [str(f) for f in files], 16, reader=counting_reader, extra={"v": 2})}
    assert p1 not in others and len(others) == 4


def test_interrupted_build_leaves_nothing(tmp_path):
    files = _images(tmp_path)

    def dies(path):
        if path.name == "b.png":
            raise KeyboardInterrupt
        return read_gray_pil(path)

    with pytest.raises(KeyboardInterrupt):
        build_image_cache(files, tmp_path / "cache", 16, reader=dies, progress=False, log=lambda s: None)
    assert list((tmp_path / "cache").iterdir()) == []


def test_damaged_cache_and_missing_cache_are_named(tmp_path):
    files = _images(tmp_path)
    path = build_image_cache(files, tmp_path / "cache", 16, progress=False, log=lambda s: None)
    with pytest.raises(FileNotFoundError, match="not an image cache"):
        ImageCache(tmp_path)
    data = path / "images.u8"
    data.write_bytes(data.read_bytes()[:-5])
    with pytest.raises(ValueError, match="damaged"):
        ImageCache(path)


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, cache):
        self.cache = cache

    def __len__(self):
        return len(self.cache)

    def __getitem__(self, i):
        return torch.from_numpy(self.cache[i].copy()).float().mean()


def test_cache_in_dataloader_workers(tmp_path):
    files = _images(tmp_path)
    cache = ImageCache(build_image_cache(files, tmp_path / "cache", 16, workers=2, progress=False,
                                         log=lambda s: None))
    expected = [float(cache[i].astype(np.float32).mean()) for i in range(len(cache))]
    assert pickle.loads(pickle.dumps(cache))._map is None  # workers map the file themselves
    loader = torch.utils.data.DataLoader(_Dataset(cache), batch_size=1, num_workers=2)
    assert [float(b) for b in loader] == pytest.approx(expected)
