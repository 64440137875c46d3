"""Image lists, image reading (PNG/JPEG/DICOM), DiRA's two-view augmentation and restorative distortion."""

import random
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

DICOM_SUFFIXES = {".dcm", ".dicom"}
CHESTXRAY14_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                      "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
                      "Hernia"]


class ImageReadError(RuntimeError):
    """An image that cannot be decoded; the message names the file and the reason."""


def read_image_list(list_file, data_dir=None, check_exists=True):
    """Read a list in the original format: `<image file> [label ...]` per line, whitespace separated.

    Returns (paths, labels) with labels a float32 array NxC (C=0 when the list has no labels).
    Raises a clear error for a missing or empty list, for rows with unequal label counts, and (with
    check_exists) for listed images that are not on disk.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"image list {list_file} does not exist")
    paths, labels = [], []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            row = [float(v) for v in parts[1:]]
        except ValueError as e:
            raise ValueError(f"{list_file}:{lineno}: labels must be numbers ({e})") from None
        if labels and len(row) != len(labels[0]):
            raise ValueError(f"{list_file}:{lineno}: {len(row)} labels, earlier lines have {len(labels[0])}")
        paths.append(Path(data_dir) / parts[0] if data_dir is not None else Path(parts[0]))
        labels.append(row)
    if not paths:
        raise ValueError(f"image list {list_file} is empty")
    if check_exists:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise FileNotFoundError(f"{len(missing)} image(s) named in {list_file} are missing: {shown}")
    return paths, np.asarray(labels, dtype=np.float32).reshape(len(paths), -1)


def _check_finite(arr, path):
    """A float image with NaN/inf pixels would map to an all-black (or garbage) image: refuse it by name."""
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(arr.size - np.isfinite(arr).sum())
        if bad:
            raise ImageReadError(f"{path}: {bad} of {arr.size} pixel values are NaN or infinite")
    return arr


def _to_uint8(arr, minmax=False):
    """Map any numeric array to uint8: 16-bit by its bit range (min/max with `minmax`), others by min/max."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 and not minmax:
        return (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return scaled.round().astype(np.uint8)


def _read_dicom(path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOn()
    image = reader.Execute()
    arr = _check_finite(sitk.GetArrayFromImage(image), path)  # (frames,) rows x cols (x channels); slope/intercept
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        arr = arr[arr.shape[0] // 2]  # a multi-frame file: use the middle frame
    if arr.ndim == 3:
        return Image.fromarray(_to_uint8(arr[..., :3], minmax=True)).convert("RGB")
    arr = _to_uint8(arr, minmax=True)  # DICOM holds 10-16 bit values: stretch the stored range
    photometric = reader.GetMetaData("0028|0004").strip() if reader.HasMetaDataKey("0028|0004") else ""
    if photometric == "MONOCHROME1":  # bright = low values: invert so air is dark as in PNG X-rays
        arr = 255 - arr
    return Image.fromarray(arr, mode="L")


def load_image(path, keep_gray=False):
    """Read an X-ray as a 3-channel PIL image (gray repeated, as PIL's convert('RGB') in the original).

    PNG/JPEG (any PIL format) via PIL, DICOM (.dcm/.dicom, or any file PIL cannot open that SimpleITK
    can) via SimpleITK. keep_gray: return single-channel sources as mode 'L' (TwoViewTransform then
    works on one channel and repeats it at the end, bit-identical and about 3x less pixel work).
    Raises ImageReadError naming the file.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in DICOM_SUFFIXES:
            img = _read_dicom(path)
        else:
            with Image.open(path) as img:
                img.load()
                if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    arr = _check_finite(np.asarray(img), path)
                    arr = arr.astype(np.uint16) if img.mode.startswith("I;16") else arr
                    img = Image.fromarray(_to_uint8(arr), mode="L")
        return img if keep_gray and img.mode == "L" else img.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except ImageReadError:
        raise
    except Exception as e:  # PIL/SimpleITK raise many types; keep the reason, name the file
        if path.suffix.lower() not in DICOM_SUFFIXES:
            try:
                img = _read_dicom(path)
                return img if keep_gray else img.convert("RGB")
            except Exception:
                pass
        raise ImageReadError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


class GaussianBlur:
    """PIL Gaussian blur with sigma ~ U(0.1, 2.0) drawn from Python's `random` (MoCo v2's)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class Distortion:
    """The restorative distortion (`Custom_Distoration`): on an HxWx3 uint8 array, with r ~ U[0,1):

    r <= 0.30 in-painting (up to 10 zeroed blocks), 0.30 < r <= 0.35 out-painting (keep up to 10 large
    blocks), 0.35 < r <= 0.65 swap 10 pairs of small blocks, else unchanged. Every length is the
    original's at 224 px, scaled by size/224 for other sizes.

    strict_swap_overlap: the original means to redraw overlapping swap pairs but its test is always true
    (`<` for `>` in the y comparisons), so overlaps happen. False (default) reproduces that; True redraws.
    """

    def __init__(self, size=224, strict_swap_overlap=False):
        self.size = size
        self.strict = strict_swap_overlap
        s = size / 224.0
        self.margin = max(1, round(3 * s))
        self.inpaint = (max(1, round(10 * s)), max(1, round(70 * s)))
        self.outpaint = (max(1, round(50 * s)), max(1, round(70 * s)))
        self.swap = (max(1, round(10 * s)), max(1, round(15 * s)))

    def _corner(self, block):
        return random.randint(self.margin, self.size - block - self.margin)

    def __call__(self, arr):
        arr = np.array(arr)  # a copy: the caller's array is never modified
        r = random.random()
        if r <= 0.3:
            for _ in range(10):
                bx, by = random.randint(*self.inpaint), random.randint(*self.inpaint)
                x, y = self._corner(bx), self._corner(by)
                arr[x:x + bx, y:y + by] = 0
                if random.random() < 0.1:
                    break
        elif r <= 0.35:
            kept = arr.copy()
            arr[:] = 0
            for _ in range(10):
                bx, by = self.size - random.randint(*self.outpaint), self.size - random.randint(*self.outpaint)
                x, y = self._corner(bx), self._corner(by)
                arr[x:x + bx, y:y + by] = kept[x:x + bx, y:y + by]
                if random.random() < 0.1:
                    break
        elif r <= 0.65:
            src = arr.copy()
            for _ in range(10):
                while True:
                    bx, by = random.randint(*self.swap), random.randint(*self.swap)
                    x1, y1 = self._corner(bx), self._corner(by)
                    x2, y2 = self._corner(bx), self._corner(by)
                    if x1 > x2 + bx or x2 > x1 + bx:
                        break
                    if self.strict and (y1 > y2 + by or y2 > y1 + by):
                        break
                    if not self.strict and (y1 < y2 + by or y2 < y1 + by):  # the original's test
                        break
                arr[x1:x1 + bx, y1:y1 + by] = src[x2:x2 + bx, y2:y2 + by]
                arr[x2:x2 + bx, y2:y2 + by] = src[x1:x1 + bx, y1:y1 + by]
        return arr


class TwoViewTransform:
    """DiRA's augmentation (the original `Transform`), for a PIL RGB image.

    For each of two views: RandomResizedCrop(size, scale=(0.2, 1)) -> ColorJitter(0.4, 0.4, 0.4, 0.1)
    w.p. 0.8 -> Gaussian blur w.p. 0.5 -> horizontal flip w.p. 0.5; in `dir`/`dira` then the distortion.
    Returns [y1, y2] (3xHxW in [0, 1], no normalisation) in `di`, [y1, y2, target] otherwise, where
    target (1xHxW) is view 1's crop before jitter, blur, flip and distortion, in gray. A mode 'L' input
    is processed on its one channel and repeated to 3 at the end: for gray images every step (crop,
    brightness/contrast, saturation and hue, which do nothing on gray, blur, flip, distortion) gives the
    same numbers per channel, so the output is bit-identical to the RGB pipeline's.

    flip_target: the original does not flip the target when view 1 is flipped (about half the targets
        are mirrored). False (default) reproduces that; True flips the target with the view.
    with_clean_view: also return view 1 before the distortion (for the picture grids).
    """

    def __init__(self, mode="dira", size=224, flip_target=False, strict_swap_overlap=False, with_clean_view=False):
        self.mode = mode.lower()
        self.flip_target = flip_target
        self.with_clean_view = with_clean_view
        self.crop = T.RandomResizedCrop(size, scale=(0.2, 1.0))
        self.jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
        self.blur = T.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5)
        self.distort = Distortion(size, strict_swap_overlap)

    def _augment(self, crop):
        view = self.blur(self.jitter(crop))
        flipped = bool(torch.rand(1) < 0.5)  # the draw RandomHorizontalFlip makes
        return (TF.hflip(view) if flipped else view), flipped

    @staticmethod
    def _tensor(x):
        t = TF.to_tensor(x)
        return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t

    def __call__(self, img):
        crop1, crop2 = self.crop(img), self.crop(img)
        (v1, flip1), (v2, _) = self._augment(crop1), self._augment(crop2)
        if self.mode == "di":
            return [self._tensor(v1), self._tensor(v2)]
        a1, a2 = np.asarray(v1), np.asarray(v2)
        y1, y2 = self._tensor(self.distort(a1)), self._tensor(self.distort(a2))
        target = np.asarray(crop1.convert("L"), dtype=np.float32)[None] / 255.0  # 1xHxW
        if self.flip_target and flip1:
            target = target[:, :, ::-1].copy()
        out = [y1, y2, torch.from_numpy(target)]
        if self.with_clean_view:
            out.append(self._tensor(a1.copy()))
        return out


class ImageListDataset(torch.utils.data.Dataset):
    """Images of a list (original format) under `data_dir`, transformed; the original `ChestX_ray14`.

    An unreadable image (also: NaN/inf pixels) is skipped with a warning naming it (the next image is used
    instead) so a long run never dies on one bad file; `max_bad` consecutive failures raise. Skipped files
    are marked in a shared-memory flag per image (DataLoader workers see the same flags), so the training
    loop can report how many and which (`skipped_files`).
    """

    def __init__(self, data_dir, list_file, transform, return_labels=False, max_bad=20, keep_gray=True):
        self.paths, self.labels = read_image_list(list_file, data_dir)
        self.keep_gray = keep_gray  # one-channel augmentation for gray images (same output, faster)
        self.transform = transform
        self.return_labels = return_labels
        self.max_bad = max_bad
        self.skipped = torch.zeros(len(self.paths), dtype=torch.bool).share_memory_()

    def __len__(self):
        return len(self.paths)

    def skipped_files(self):
        """Paths of the images skipped so far as unreadable (by any worker process)."""
        return [self.paths[i] for i in self.skipped.nonzero().flatten().tolist()]

    def __getitem__(self, index):
        for attempt in range(self.max_bad):
            i = (index + attempt) % len(self.paths)
            try:
                img = load_image(self.paths[i], keep_gray=self.keep_gray)
            except ImageReadError as e:
                self.skipped[i] = True
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
                continue
            sample = self.transform(img)
            return (sample, torch.from_numpy(self.labels[i])) if self.return_labels else sample
        raise ImageReadError(f"{self.max_bad} consecutive unreadable images starting at {self.paths[index]}")
