"""Decode-once cache for 2D image sets: read every image once, resize it to a working size, and keep the
uint8 pixels in one memory-mapped file, so a training epoch reads bytes instead of decoding PNG/JPEG.

    path = build_image_cache(files, "cache", size=512, names=names)    # once, e.g. in a prepare script
    cache = ImageCache(path)                                           # anywhere, also in loader workers
    cache[i]          # HxW uint8 numpy view (no copy), shorter side == size, aspect kept
    cache.names       # the names of the cached images, in order
    cache.skipped     # [{"name", "reason"}] of images that could not be read when the cache was built
    cache.skipped_files()  # just their names

On disk, `<cache_root>/<key>/` holds `images.u8` (all pixels, one flat uint8 array) and `index.json`
(settings, names, byte offsets, shapes, skipped images). `key` hashes the settings (working size, the
list of names, the reader's name, the interpolation, the format version), so a changed setting builds a
new cache and never reuses stale arrays. A cache is written into a temporary folder and renamed into
place when complete: a killed build leaves no half cache that looks finished.

A missing or corrupt image is named and skipped (a log line, a count at the end, an entry in
`skipped`) at build time, never hours into training.
"""

import hashlib
import json
import os
import shutil
import sys
import uuid
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

CACHE_VERSION = 1
DATA_FILE = "images.u8"
INDEX_FILE = "index.json"


def read_gray_pil(path):
    """The default reader: any file PIL opens, as an 8-bit gray PIL image."""
    with Image.open(path) as img:
        img.load()
        return img.convert("L")


def reader_name(reader):
    """A stable name for a reader callable (module.qualname), part of the cache key."""
    inner = reader.func if isinstance(reader, partial) else reader
    name = f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', type(inner).__name__)}"
    if isinstance(reader, partial):
        name += repr(tuple(reader.args)) + repr(sorted(reader.keywords.items()))
    return name


def resize_shorter(img, size):
    """Resize so the shorter side is `size` (aspect kept, as torchvision's Resize(int)), bilinear with
    antialiasing; `size=None` keeps the image as read. Returns an HxW uint8 array."""
    from torchvision.transforms.v2 import functional as F

    if not isinstance(img, Image.Image):
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim != 2:
            raise ValueError(f"a reader must return a 2-D uint8 array or a PIL image, got {arr.dtype} {arr.shape}")
        img = Image.fromarray(arr)
    if img.mode != "L":
        img = img.convert("L")
    if size is not None and min(img.size) != size:
        img = F.resize(img, [size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    return np.asarray(img, dtype=np.uint8)


def cache_key(names, size, reader="shared.image_cache.read_gray_pil", extra=None):
    """Hex digest of everything that decides a cache's content."""
    settings = {"version": CACHE_VERSION, "size": size, "reader": reader, "interpolation": "bilinear-antialias",
                "extra": extra or {}}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in names:
        h.update(b"\0" + str(name).encode())
    return h.hexdigest()[:20]


def cache_path(cache_root, names, size, reader=read_gray_pil, extra=None):
    """Where the cache of these settings lives (it may not exist yet)."""
    return Path(cache_root) / cache_key([str(n) for n in names], size, reader_name(reader), extra)


def _load_one(path, reader, size):
    """(array, None) or (None, reason): a failing image is reported, not raised."""
    try:
        return resize_shorter(reader(path), size), None
    except Exception as e:  # readers raise many types; keep the reason for the index
        return None, f"{type(e).__name__}: {e}"


def build_image_cache(files, cache_root, size, reader=read_gray_pil, names=None, extra=None, workers=0,
                      progress=True, log=print):
    """Decode `files` once into `<cache_root>/<key>/` and return that folder (an existing one is reused).

    files: image paths. names: how the index names them (default: the paths as given); use names that
    do not depend on where the data lies (e.g. the entries of a list file) so a moved data folder keeps
    its cache. size: shorter side in pixels (None: keep). reader: path -> PIL image or HxW uint8 array
    (a module-level function when workers > 1). extra: more settings that change the content (hashed).
    workers: decoding processes (0 or 1: this process).
    """
    from tqdm import tqdm

    files = [Path(f) for f in files]
    names = [str(f) for f in files] if names is None else [str(n) for n in names]
    if len(names) != len(files):
        raise ValueError(f"{len(files)} files but {len(names)} names")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"names must be unique; {dup!r} appears more than once")
    rname = reader_name(reader)
    final = Path(cache_root) / cache_key(names, size, rname, extra)
    if (final / INDEX_FILE).is_file():
        log(f"image cache {final}: up to date, reused")
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    offsets, shapes, kept, skipped = [], [], [], []
    try:
        load = partial(_load_one, reader=reader, size=size)
        with open(tmp / DATA_FILE, "wb") as out:
            if workers > 1:
                import multiprocessing as mp

                pool = mp.get_context().Pool(workers)
                results = pool.imap(load, files, chunksize=8)
            else:
                pool, results = None, map(load, files)
            try:
                offset = 0
                bar = tqdm(zip(names, files, results), total=len(files), desc=f"caching images at {size} px",
                           disable=not progress, dynamic_ncols=True, file=sys.stderr)
                for name, path, (arr, reason) in bar:
                    if arr is None:
                        skipped.append({"name": name, "reason": reason})
                        log(f"image cache: skipping {path}: {reason}")
                        continue
                    out.write(np.ascontiguousarray(arr).tobytes())
                    offsets.append(offset)
                    shapes.append(list(arr.shape))
                    kept.append(name)
                    offset += arr.size
            finally:
                if pool is not None:
                    pool.terminate()
            out.flush()
            os.fsync(out.fileno())
        index = {"version": CACHE_VERSION, "settings": {"size": size, "reader": rname, "extra": extra or {},
                                                         "interpolation": "bilinear-antialias"},
                 "total_bytes": int(offset), "names": kept, "offsets": offsets, "shapes": shapes,
                 "skipped": skipped}
        (tmp / INDEX_FILE).write_text(json.dumps(index))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same cache first: theirs is as good as ours
            if not (final / INDEX_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"image cache {final}: {len(kept)} images, {offset / 2**20:.1f} MiB; "
        f"{len(skipped)} skipped{' (named in ' + INDEX_FILE + ')' if skipped else ''}")
    return final


class ImageCache:
    """Read a cache written by build_image_cache. `cache[i]` is an HxW uint8 numpy view of the memory map.

    The memory map is opened lazily in each process (and dropped when pickled), so one ImageCache can
    be handed to DataLoader workers; the operating system's page cache is shared between them.
    """

    def __init__(self, path):
        self.path = Path(path)
        index_file = self.path / INDEX_FILE
        if not index_file.is_file():
            raise FileNotFoundError(f"{self.path} is not an image cache (no {INDEX_FILE}); build it with "
                                    "shared.image_cache.build_image_cache (e.g. the method's prepare script)")
        try:
            index = json.loads(index_file.read_text())
        except ValueError as e:
            raise ValueError(f"{index_file}: corrupt cache index ({e})") from None
        if index.get("version") != CACHE_VERSION:
            raise ValueError(f"{index_file}: cache format {index.get('version')}, this code reads "
                             f"{CACHE_VERSION}; rebuild it")
        self.settings = index["settings"]
        self.names = index["names"]
        self.skipped = index["skipped"]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.shapes = np.asarray(index["shapes"], dtype=np.int64).reshape(-1, 2)
        self.total_bytes = int(index["total_bytes"])
        size = (self.path / DATA_FILE).stat().st_size if (self.path / DATA_FILE).is_file() else -1
        if size != self.total_bytes:
            raise ValueError(f"{self.path / DATA_FILE}: {size} bytes, the index says {self.total_bytes}; "
                             "the cache is damaged, delete the folder and rebuild it")
        self._map = None
        self._pid = None
        self._positions = None

    def __len__(self):
        return len(self.names)

    def _data(self):
        if self._map is None or self._pid != os.getpid():
            self._map = np.memmap(self.path / DATA_FILE, dtype=np.uint8, mode="r") if self.total_bytes else \
                np.zeros(0, np.uint8)
            self._pid = os.getpid()
        return self._map

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} of a cache of {len(self)}")
        h, w = self.shapes[i]
        start = self.offsets[i]
        return self._data()[start:start + h * w].reshape(h, w)

    def skipped_files(self):
        """Names of the images that were unreadable when the cache was built (the reasons are in `skipped`);
        the same question a dataset reading files answers with the images it skipped so far."""
        return [s["name"] for s in self.skipped]

    def index_of(self, name):
        """Position of an image by its name (KeyError when it was skipped or never listed)."""
        if self._positions is None:
            self._positions = {n: i for i, n in enumerate(self.names)}
        return self._positions[str(name)]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_map"] = None  # each worker maps the file itself
        state["_pid"] = None
        return state

    def __repr__(self):
        return f"ImageCache({str(self.path)!r}, {len(self)} images, size={self.settings.get('size')})"
