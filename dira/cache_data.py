"""DiRA's cached data path (`--data_path cache`): image lists decoded once into a shared.image_cache
cache, batches of uint8 pixels from its memory map, and the two-view augmentation and distortion
applied to whole batches, on the training device (`--augment_on device`) or in the loader workers
(`workers`).

    python dira/prepare_chestxray14.py <NIH root> --out dataset --cache cache --cache_size 512
    python dira/train.py <NIH root>/images --data_path cache --cache_dir cache --cache_size 512 ...
"""

import numpy as np
import torch

from dira.batch_augment import BatchTwoView
from dira.data import load_image, read_image_list
from shared.augment2d import stack_padded
from shared.image_cache import ImageCache, build_image_cache, cache_path

DEFAULT_CACHE_SIZE = 512  # shorter side: a 0.2-area crop of 512 px is ~229 px, about the 224 px it becomes


def read_gray(path):
    """The cache's reader: dira.data.load_image (PNG 8/16-bit, JPEG, DICOM) as one 8-bit gray channel."""
    return np.asarray(load_image(path, keep_gray=True).convert("L"))


def list_names(list_file):
    """The image entries of a list in the original format, as written (the cache's names)."""
    paths, _ = read_image_list(list_file, check_exists=False)
    return [str(p) for p in paths]


def build_list_cache(data_dir, list_file, cache_root, size=DEFAULT_CACHE_SIZE, workers=0, progress=True, log=print):
    """Decode the images of `list_file` (under `data_dir`) into `<cache_root>/<key>/`; returns the folder.
    Missing and unreadable images are named, skipped and recorded in the index."""
    names = list_names(list_file)
    files = [f"{data_dir}/{n}" for n in names]
    log(f"{list_file}: {len(names)} images")
    return build_image_cache(files, cache_root, size, reader=read_gray, names=names, workers=workers,
                             progress=progress, log=log)


def open_list_cache(list_file, cache_root, size=DEFAULT_CACHE_SIZE):
    """The ImageCache of `list_file` at `size`; a clear error naming the command when it was not built."""
    path = cache_path(cache_root, list_names(list_file), size, reader=read_gray)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no image cache of {list_file} at {size} px under {cache_root} (expected {path}); build it with "
            f"`python dira/prepare_chestxray14.py <root> --cache {cache_root} --cache_size {size} ...` or "
            f"dira.cache_data.build_list_cache, or train with --data_path files")
    cache = ImageCache(path)
    if len(cache) == 0:
        raise ValueError(f"the image cache of {list_file} ({path}) holds no image: all "
                         f"{len(cache.skipped)} were unreadable when it was built")
    if cache.skipped:
        print(f"{list_file}: {len(cache.skipped)} image(s) were skipped when the cache was built "
              f"(e.g. {cache.skipped[0]['name']}: {cache.skipped[0]['reason']}); see {path}/index.json")
    return cache


class CachedImages(torch.utils.data.Dataset):
    """The images of an ImageCache as HxW uint8 arrays (views of the memory map)."""

    def __init__(self, cache):
        self.cache = cache

    def __len__(self):
        return len(self.cache)

    def __getitem__(self, i):
        return self.cache[i]


class CacheCollate:
    """collate_fn: (uint8 batch (B, 1, H, W), sizes (B, 2)), or the augmented views when `augment` is
    given (augmentation in the loader workers)."""

    def __init__(self, augment=None):
        self.augment = augment

    def __call__(self, samples):
        images, sizes = stack_padded(samples)
        return self.augment(images, sizes) if self.augment is not None else (images, sizes)


class DeviceAugmentLoader:
    """Wraps a loader of (uint8 batch, sizes): moves each batch to `device` and augments it there."""

    def __init__(self, loader, augment, device):
        self.loader, self.augment, self.device = loader, augment, device
        self.sampler = loader.sampler

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for images, sizes in self.loader:
            yield self.augment(images.to(self.device, non_blocking=True), sizes)


def augment_device(augment_on, device):
    """Where the augmentation runs: `auto` is the device on CUDA and the loader workers on the CPU."""
    if augment_on == "auto":
        return "device" if device.type == "cuda" else "workers"
    return augment_on


def make_loader(cache, sampler, batch_size, workers, device, augment, augment_on="auto", persistent_workers=False):
    """A DataLoader over a cache yielding DiRA batches like the per-file path's ([y1, y2(, target)])."""
    on = augment_device(augment_on, device)
    loader = torch.utils.data.DataLoader(
        CachedImages(cache), batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=CacheCollate(None if on == "device" else augment), pin_memory=device.type == "cuda",
        drop_last=True, persistent_workers=persistent_workers and workers > 0)
    return DeviceAugmentLoader(loader, augment, device) if on == "device" else loader


def cache_augment(args, with_clean_view=False):
    return BatchTwoView(args.mode, args.img_size, args.flip_target, args.strict_swap_overlap, with_clean_view)


def preview_batch(cache, n, args):
    """The per-epoch picture rows' input ([y1, y2, target, clean view]) from the first n cached images."""
    images, sizes = stack_padded([cache[i] for i in range(min(n, len(cache)))])
    return [t.cpu() for t in cache_augment(args, with_clean_view=True)(images, sizes)]
