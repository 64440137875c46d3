"""VoCo data: dataset lists, the MONAI pre-processing, base/random crops with overlap labels, loaders.

Geometry (defaults are the original's): every volume becomes one `(n*R, n*R, R)` working volume
(n = num_crops = 4, R = base_roi = 96: 384x384x96); the n x n base crops tile the axial plane, each
R^3 over the full depth; `sw_batch_size` random R^3 crops have integer centres in [R/2, n*R - R/2);
every crop is resized to `roi_small`^3 (64) and augmented on its own. A random crop's label for base
crop k is the fraction of its axial area that k covers, so each label row sums to 1.
"""

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resize,
    Resized,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

# ---------------------------------------------------------------------------------------------
# dataset lists (MONAI decathlon json: {"training": [{"image": "relative/path.nii.gz"}, ...]})


def load_datalist(json_path, data_dir=None, key="training", keys=("image",)):
    """Read one list of a decathlon-style json; paths are joined to `data_dir` (default: the json's
    folder). Every error names the json and the entry; missing files are reported all at once."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"dataset list not found: {json_path}")
    try:
        spec = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_path}: not valid json ({err})") from err
    if key not in spec:
        raise KeyError(f"{json_path}: no {key!r} list (it has {sorted(spec)})")
    root = Path(data_dir) if data_dir is not None else json_path.parent
    items, missing = [], []
    for i, entry in enumerate(spec[key]):
        if isinstance(entry, str):
            entry = {"image": entry}
        for k in keys:
            if k not in entry:
                raise KeyError(f"{json_path}: {key}[{i}] has no {k!r} entry ({entry})")
        item = {k: str(root / entry[k]) for k in keys}
        missing += [item[k] for k in keys if not Path(item[k]).exists()]
        items.append(item)
    if missing:
        shown = "\n  ".join(missing[:10]) + (f"\n  ... (+{len(missing) - 10})" if len(missing) > 10 else "")
        raise FileNotFoundError(f"{json_path}: {len(missing)} listed file(s) do not exist:\n  {shown}")
    if not items:
        raise ValueError(f"{json_path}: the {key!r} list is empty")
    return items


# ---------------------------------------------------------------------------------------------
# deterministic pre-processing (cached by PersistentDataset / CacheDataset)


def _source(d, key="image"):
    meta = getattr(d.get(key), "meta", {}) or {}
    return meta.get("filename_or_obj", "<unknown file>")


class CheckVolumed(MapTransform):
    """Raise a clear error (naming the file) unless each key is a 3-D volume with at least `min_size`
    voxels along every axis. Cheap and deterministic, so caching passes through it."""

    def __init__(self, keys, min_size=1, what="volume"):
        super().__init__(keys)
        self.min_size, self.what = min_size, what

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            shape = tuple(d[key].shape[1:])
            if len(shape) != 3:
                raise ValueError(f"{_source(d, key)}: expected a 3-D {self.what}, got spatial shape "
                                 f"{shape} (a {len(shape)}-D image)")
            if min(shape) < self.min_size:
                raise ValueError(f"{_source(d, key)}: {self.what} is {shape} voxels, smaller than "
                                 f"{self.min_size} along an axis (empty foreground?)")
            values = torch.as_tensor(d[key])
            if values.is_floating_point() and not torch.isfinite(values).all():
                bad = int((~torch.isfinite(values)).sum())
                raise ValueError(f"{_source(d, key)}: {bad} NaN or infinite voxels in the {self.what} "
                                 "(refused rather than cast to 0)")
        return d


class CheckPaird(MapTransform):
    """Raise a clear error, naming the label file, unless the label map has the image's voxel grid
    (shape and affine): a wrong-size or transposed label would otherwise be cropped or padded to the
    image's foreground box and trained on without a word."""

    def __init__(self, image_key="image", label_key="label"):
        super().__init__([image_key, label_key])
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data):
        d = dict(data)
        image, label = d[self.image_key], d[self.label_key]
        a, b = tuple(image.shape[1:]), tuple(label.shape[1:])
        if a != b:
            hint = " (transposed?)" if sorted(a) == sorted(b) else ""
            raise ValueError(f"{_source(d, self.label_key)}: label map of shape {b}{hint} does not match its "
                             f"image {_source(d, self.image_key)} of shape {a}")
        affines = [getattr(x, "affine", None) for x in (image, label)]
        if all(x is not None for x in affines) and not torch.allclose(
                torch.as_tensor(affines[0]).double(), torch.as_tensor(affines[1]).double(), atol=1e-3):
            raise ValueError(f"{_source(d, self.label_key)}: label map's voxel-to-world affine differs from its "
                             f"image {_source(d, self.image_key)}'s (transposed or resampled label?)")
        return d


def above(x, threshold):
    return x > threshold


def pretrain_transforms(a_min=-175.0, a_max=250.0, b_min=0.0, b_max=1.0, size=(384, 384, 96),
                        fg_threshold=0.3):
    """Load int16 HU, RAS, window to [0, 1], crop to the box of voxels > 0.3, resize to `size`
    (no spacing: the whole foreground box is stretched, as in the original)."""
    return Compose([
        LoadImaged(keys="image", image_only=True, dtype=None),  # as stored: NaN is refused, not cast to 0
        EnsureChannelFirstd(keys="image"),
        CheckVolumed(keys="image"),
        CastToTyped(keys="image", dtype=np.int16),
        Orientationd(keys="image", axcodes="RAS"),
        ScaleIntensityRanged(keys="image", a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True),
        CropForegroundd(keys="image", source_key="image",
                        select_fn=functools.partial(above, threshold=fg_threshold)),
        CheckVolumed(keys="image", min_size=2, what="foreground box"),
        Resized(keys="image", spatial_size=tuple(size), mode="trilinear", align_corners=True),
    ])


def base_dataset(items, transform, cache_dir=None, cache_dataset=False, cache_rate=0.5, workers=0):
    """Original: PersistentDataset at a hard-coded path (~56.6 MB per volume at 384x384x96 float32,
    ~558 GB for the 10k). Here the user chooses: `cache_dir` -> PersistentDataset there,
    `cache_dataset` -> CacheDataset in RAM (cache_rate of the volumes), neither -> no cache."""
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform, cache_dir=str(cache_dir))
    if cache_dataset:
        return CacheDataset(items, transform, cache_rate=cache_rate, num_workers=workers or None,
                            progress=True)
    return Dataset(items, transform)


# ---------------------------------------------------------------------------------------------
# the pretext task


def overlap_labels(corners, base_roi=96, num_crops=4):
    """Fraction of each random crop's axial area covered by each base crop.

    corners: Sx2 integer (x0, y0) lower corners of base_roi-wide random crops inside the
    (num_crops*base_roi)^2 plane. Returns Sx(num_crops^2) float64, base crop k = num_crops*i + j."""
    corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
    r, edges = base_roi, np.arange(num_crops) * base_roi
    dx = np.minimum(edges[None] + r, corners[:, :1] + r) - np.maximum(edges[None], corners[:, :1])
    dy = np.minimum(edges[None] + r, corners[:, 1:] + r) - np.maximum(edges[None], corners[:, 1:])
    area = np.clip(dx, 0, None)[:, :, None] * np.clip(dy, 0, None)[:, None, :]  # S x i x j
    return (area / float(r * r)).reshape(len(corners), -1)


class CropAugmentation:
    """The original's per-crop augmentation, MONAI's RandFlip (each axis), RandRotate90 (max_k 3, axial
    plane) and RandShiftIntensity (offsets 0.1), as parameters drawn from our own torch.Generator and
    applied batched. Per crop, independently: flip along spatial axis a with p flip_prob (a = 0, 1, 2);
    with p rot_prob, k quarter turns in axes (0, 1), k uniform in 1..3; with p shift_prob, + U(-0.1, 0.1).
    Flips come first, then the rotation, then the shift, as in the original's Compose. (Drawn here
    rather than read back from MONAI's transforms, whose draws live in private fields.)"""

    FLIP_AXES, ROT_AXES, MAX_K, OFFSET = (0, 1, 2), (0, 1), 3, 0.1

    def __init__(self, flip_prob=0.2, rot_prob=0.2, shift_prob=0.1):
        self.flip_prob, self.rot_prob, self.shift_prob = flip_prob, rot_prob, shift_prob

    def draw(self, m, generator):
        """Parameters of m crops: flips m x 3 (bool), rot_k m (int64, 0 = not rotated), shift m (float64,
        0 = not shifted)."""
        g = generator
        flips = torch.rand(m, len(self.FLIP_AXES), generator=g, dtype=torch.float64) < self.flip_prob
        rotate = torch.rand(m, generator=g, dtype=torch.float64) < self.rot_prob
        k = torch.randint(1, self.MAX_K + 1, (m,), generator=g)
        shifted = torch.rand(m, generator=g, dtype=torch.float64) < self.shift_prob
        offset = (torch.rand(m, generator=g, dtype=torch.float64) * 2 - 1) * self.OFFSET
        return {"flips": flips, "rot_k": torch.where(rotate, k, 0),
                "shift": torch.where(shifted, offset, torch.zeros_like(offset))}

    def apply(self, x, params):
        """In place on x (M x 1 x D x H x W), on its device; the parameters stay on the CPU."""
        return augment_batch(x, params["flips"], params["rot_k"], params["shift"], self.FLIP_AXES, self.ROT_AXES)


def augment_batch(x, flips, rot_k, shift, flip_axes, rot_axes):
    """In place on x (M x 1 x D x H x W): crop m flipped along flip_axes[a] where flips[m, a], then
    rotated rot_k[m] quarter turns in rot_axes, then shifted by shift[m] (spatial axes count from 0,
    like MONAI's): what MONAI's Flip, Rotate90 and ShiftIntensity compute, batched over the crops that
    drew them (MONAI's array transforms take one parameter per call)."""
    for a, axis in enumerate(flip_axes):
        idx = torch.nonzero(flips[:, a]).flatten().tolist()
        if idx:
            x[idx] = x[idx].flip(2 + axis)
    dims = (2 + rot_axes[0], 2 + rot_axes[1])
    for k in (1, 2, 3):
        idx = torch.nonzero(rot_k == k).flatten().tolist()
        if idx:
            x[idx] = torch.rot90(x[idx], k, dims)
    idx = torch.nonzero(shift).flatten().tolist()
    if idx:
        offsets = shift[idx].to(torch.float32).to(x.device, non_blocking=True)
        x[idx] = x[idx] + offsets.view(-1, *([1] * (x.dim() - 1)))
    return x


class VoCoCrops:
    """Working volume -> base crops, random crops and their overlap labels.

    Args:
        roi_small: side every crop is resized to (--roi_x, 64).
        base_roi: side of base and random crops in the working volume (96).
        num_crops: base crops per in-plane axis (4 -> 16 base crops).
        sw_batch_size: random crops per volume (2).
        aug: per-crop flips (p=flip_prob on each axis), rot90 in the axial plane (p=rot_prob, k<=3)
            and intensity shift (+-0.1, p=shift_prob), drawn independently for every crop
            (`CropAugmentation`).
    """

    def __init__(self, roi_small=64, base_roi=96, num_crops=4, sw_batch_size=2, aug=True,
                 flip_prob=0.2, rot_prob=0.2, shift_prob=0.1):
        self.roi_small, self.base_roi, self.num_crops = roi_small, base_roi, num_crops
        self.sw_batch_size, self.aug = sw_batch_size, aug
        self.resize = Resize(spatial_size=(roi_small,) * 3, mode="trilinear", align_corners=True)
        self.augment = CropAugmentation(flip_prob, rot_prob, shift_prob)

    @property
    def volume_size(self):
        n, r = self.num_crops, self.base_roi
        return (n * r, n * r, r)

    def draw(self, rng):
        """Every random choice of one volume's crops, from the numpy Generator `rng`: the random crops'
        lower corners S x 2 (centres randint(r/2, n r - r/2), the original's), then (with aug) the
        augmentation of the S random and K base crops, in that order, from a torch.Generator seeded by rng."""
        n, r, half = self.num_crops, self.base_roi, self.base_roi // 2
        corners = rng.integers(half, n * r - half, size=(self.sw_batch_size, 2)) - half  # randint(48, 336)
        params = {"corners": torch.from_numpy(corners)}
        if self.aug:
            g = torch.Generator().manual_seed(int(rng.integers(2**63)))
            params.update(self.augment.draw(self.sw_batch_size + n * n, g))
        return params

    def __call__(self, image, rng):
        """image: 1xXxYxZ working volume; rng: numpy Generator. Returns a dict of
        image Sx1xR^3 (random crops), crops Kx1xR^3 (base crops), labels SxK float64, corners Sx2."""
        image = _plain(image).float()
        if tuple(image.shape[1:]) != self.volume_size:
            raise ValueError(f"working volume is {tuple(image.shape[1:])}, expected {self.volume_size}")
        n, r = self.num_crops, self.base_roi
        params = self.draw(rng)
        corners = params["corners"].numpy()
        bases = [image[0, i * r:(i + 1) * r, j * r:(j + 1) * r, :] for i in range(n) for j in range(n)]
        rands = [image[0, x:x + r, y:y + r, :] for x, y in corners]
        crops = self.resize(torch.stack(rands + bases))  # crops as channels: one resize call
        crops = _plain(crops).unsqueeze(1)  # (S+K)x1xr^3
        if self.aug:
            crops = self.augment.apply(crops, params)
        s = self.sw_batch_size
        return {"image": crops[:s].contiguous(), "crops": crops[s:].contiguous(),
                "labels": torch.from_numpy(overlap_labels(corners, r, n)),
                "corners": params["corners"]}


def _plain(x):
    """A MetaTensor as a plain tensor (the original calls .as_tensor() before the model)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def _root_cause(err):
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def describe_failure(item, err):
    """'<file>: <what is wrong>' for a list entry whose pre-processing failed, naming the file at fault
    (the label's when the label is unreadable or does not fit, not its image's)."""
    cause = _root_cause(err)
    msg = str(cause)
    paths = [str(p) for p in item.values() if isinstance(p, (str, Path))]
    named = sorted((p for p in paths if p in msg), key=msg.index)  # the file the message starts with
    if named:
        return msg if msg.startswith(named[0]) else f"{named[0]}: {msg}"
    from monai.transforms import LoadImage

    for path in paths:  # the message names no file: find the one that does not read
        try:
            LoadImage(image_only=True)(path)
        except Exception as read_err:  # noqa: BLE001 - any reader error means this is the file
            return f"{path}: {type(_root_cause(read_err)).__name__}: {_root_cause(read_err)}"
    return f"{paths[0] if paths else '<unknown file>'}: {type(cause).__name__}: {msg}"


def record_skip(skip_log, message):
    """Append one skipped file to `skip_log` (a text file, shared by loader workers and ranks)."""
    if skip_log is not None:
        Path(skip_log).parent.mkdir(parents=True, exist_ok=True)
        with open(skip_log, "a") as f:
            f.write(message.replace("\n", " ") + "\n")


def count_skipped(skip_log):
    """(number of distinct files, their names) listed in `skip_log`."""
    if skip_log is None or not Path(skip_log).is_file():
        return 0, []
    names = sorted({line.split(": ", 1)[0] for line in Path(skip_log).read_text().splitlines() if line})
    return len(names), names


class VoCoDataset(torch.utils.data.Dataset):
    """Pre-processed volumes (possibly cached) + the random VoCo crops.

    The crops of sample i in pass `epoch` come from a generator seeded with (seed, epoch, i), so a
    resumed run sees exactly the crops an uninterrupted one would, whatever the worker count.
    An unreadable volume is skipped with a warning (the next one is used) unless skip_bad=False; each
    skip is appended to `skip_log` so the run can say how many files it skipped."""

    def __init__(self, items, base, crops, seed=0, skip_bad=True, skip_log=None):
        self.items, self.base, self.crops = items, base, crops
        self.seed, self.epoch, self.skip_bad, self.skip_log = seed, 0, skip_bad, skip_log

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.items)

    def load(self, i):
        """The pre-processed volume of item i, or a ValueError naming its file."""
        try:
            return self.base[i]["image"]
        except Exception as err:  # MONAI wraps the cause in "applying transform ..."
            raise ValueError(describe_failure(self.items[i], err)) from err

    def load_readable(self, i):
        """(j, volume) of the first readable item from i on, skipping bad ones with a warning (skip_bad)."""
        for attempt in range(len(self)):
            j = (i + attempt) % len(self)
            try:
                return j, self.load(j)
            except ValueError as err:
                if not self.skip_bad:
                    raise
                warnings.warn(f"skipping unreadable volume: {err}", stacklevel=2)
                record_skip(self.skip_log, str(err))
        raise RuntimeError(f"no readable volume among the {len(self)} listed")

    def __getitem__(self, i):
        j, image = self.load_readable(i)
        rng = np.random.default_rng([self.seed, self.epoch, j])
        try:
            return self.crops(image, rng)
        except ValueError as err:  # e.g. a stale cache of another working-volume size
            raise ValueError(f"{self.items[j]['image']}: {err}") from err


class SafeDataset(torch.utils.data.Dataset):
    """Wrap a MONAI dataset so a failing item raises a ValueError naming its file or, with skip_bad,
    is skipped with a warning (and a line in `skip_log`): a long run never dies on one bad volume.

    substitute=True (training) serves the next readable item instead; substitute=False (validation)
    never does: the item comes back as {"skipped": file, "error": message} for the caller to report,
    so no case is scored twice or under another's name."""

    def __init__(self, base, items, skip_bad=True, substitute=True, skip_log=None):
        self.base, self.items, self.skip_bad = base, items, skip_bad
        self.substitute, self.skip_log = substitute, skip_log

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        for attempt in range(len(self) if self.substitute else 1):
            j = (i + attempt) % len(self)
            try:
                return self.base[j]
            except Exception as err:
                msg = describe_failure(self.items[j], err)
                if not self.skip_bad:
                    raise ValueError(msg) from err
                warnings.warn(f"skipping unreadable case: {msg}", stacklevel=2)
                record_skip(self.skip_log, msg)
                if not self.substitute:
                    return {"skipped": self.items[j]["image"], "error": msg}
        raise RuntimeError(f"no readable case among the {len(self)} listed")


def build_pretrain_dataset(args, items, skip_bad=True, skip_log=None):
    crops = VoCoCrops(args.roi_x, args.base_roi, args.num_crops, args.sw_batch_size, aug=True)
    transform = pretrain_transforms(args.a_min, args.a_max, args.b_min, args.b_max, crops.volume_size)
    cache_dir = args.cache_dir
    if cache_dir:  # MONAI keys the cache by file name only: keep different pre-processings apart
        size = "x".join(map(str, crops.volume_size))
        cache_dir = Path(cache_dir) / f"{size}_hu{args.a_min:g}_{args.a_max:g}_to{args.b_min:g}_{args.b_max:g}"
    base = base_dataset(items, transform, cache_dir, args.cache_dataset, args.cache_rate, args.workers)
    return VoCoDataset(items, base, crops, seed=args.seed, skip_bad=skip_bad, skip_log=skip_log)


def flatten_batch(batch):
    """Collated B x n x ... -> (B*n) x ... in sample-major order (row b*n + t = crop t of volume b)."""
    img, crops = batch["image"], batch["crops"]
    return (img.reshape(-1, *img.shape[2:]), crops.reshape(-1, *crops.shape[2:]), batch["labels"])


def crops_figure(volume, crops, png_path, seed=0):
    """PNG: the working volume's middle axial slice with the base-crop grid and the random crops
    outlined, the base crops laid out as in the volume, and each random crop titled with its non-zero
    overlap labels (crops shown before augmentation)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    plain = VoCoCrops(crops.roi_small, crops.base_roi, crops.num_crops, crops.sw_batch_size, aug=False)
    sample = plain(volume, np.random.default_rng(seed))
    n, r, s = crops.num_crops, crops.base_roi, crops.sw_batch_size
    vol = _plain(volume)[0]
    mid, cmid = vol.shape[-1] // 2, crops.roi_small // 2
    cols = max(n, s)
    fig, axes = plt.subplots(n + 2, cols, figsize=(2.2 * cols, 2.2 * (n + 2)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    big = fig.add_subplot(n + 2, 1, 1)
    big.imshow(vol[:, :, mid].T.numpy(), cmap="gray", origin="lower", vmin=0, vmax=1)
    for k in range(1, n):
        big.axvline(k * r - 0.5, color="yellow", lw=0.8)
        big.axhline(k * r - 0.5, color="yellow", lw=0.8)
    for t, (x, y) in enumerate(sample["corners"].tolist()):
        big.add_patch(Rectangle((x - 0.5, y - 0.5), r, r, fill=False, color=f"C{t}", lw=1.5))
        big.text(x + 2, y + 2, f"random {t}", color=f"C{t}", fontsize=7)
    big.set_title("working volume (mid axial slice): base grid, random crops", fontsize=8)
    big.axis("off")
    for i in range(n):  # base crop k = n*i + j covers x block i, y block j; show y upwards
        for j in range(n):
            ax = axes[1 + (n - 1 - j), i]
            ax.imshow(sample["crops"][n * i + j, 0, :, :, cmid].T.numpy(), cmap="gray", origin="lower",
                      vmin=0, vmax=1)
            ax.set_title(f"base {n * i + j} (x{i}, y{j})", fontsize=7)
    for t in range(s):
        ax = axes[n + 1, t]
        ax.imshow(sample["image"][t, 0, :, :, cmid].T.numpy(), cmap="gray", origin="lower", vmin=0, vmax=1)
        nz = [f"{k}:{v:.2f}" for k, v in enumerate(sample["labels"][t].tolist()) if v > 0]
        ax.set_title(f"random {t}\n" + " ".join(nz), fontsize=6, color=f"C{t}")
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return sample


# ---------------------------------------------------------------------------------------------
# BTCV fine-tuning


def btcv_transforms(args, train=True):
    """The original's fine-tuning transforms with one fix: SpatialPadd to the roi before the
    positive/negative crop, so volumes smaller than the patch after foreground cropping still give
    full-size patches (the original has none)."""
    keys = ["image", "label"]
    roi = (args.roi_x, args.roi_y, args.roi_z)
    common = [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        CheckVolumed(keys=keys),
        CheckPaird("image", "label"),
        Orientationd(keys=keys, axcodes="RAS"),
        Spacingd(keys=keys, pixdim=(args.space_x, args.space_y, args.space_z), mode=("bilinear", "nearest")),
        ScaleIntensityRanged(keys="image", a_min=args.a_min, a_max=args.a_max, b_min=args.b_min,
                             b_max=args.b_max, clip=True),
        CropForegroundd(keys=keys, source_key="image"),
    ]
    if not train:
        return Compose(common)
    return Compose(common + [
        SpatialPadd(keys=keys, spatial_size=roi),
        RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=roi, pos=3, neg=1,
                               num_samples=args.sw_batch_size, image_key="image", image_threshold=0),
        RandFlipd(keys=keys, prob=args.RandFlipd_prob, spatial_axis=0),
        RandFlipd(keys=keys, prob=args.RandFlipd_prob, spatial_axis=1),
        RandFlipd(keys=keys, prob=args.RandFlipd_prob, spatial_axis=2),
        RandRotate90d(keys=keys, prob=args.RandRotate90d_prob, max_k=3),
        RandScaleIntensityd(keys="image", factors=0.1, prob=args.RandScaleIntensityd_prob),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=args.RandShiftIntensityd_prob),
    ])
