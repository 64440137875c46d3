"""Torch datasets over a prepared MIMIC-CXR folder (see lovt/data/__init__.py for the interface)."""

import copy
import csv
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset

from lovt.data import storage
from lovt.data.storage import CHEXPERT_BIN_LABELS

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "dataset"
_MAX_BAD_IN_A_ROW = 50  # consecutive unreadable studies before giving up (the data is then broken)


def open_image(file: Path, draft_size: int | None = None) -> Image.Image:
    """Decoded grey-scale image. draft_size: let libjpeg decode at the smallest 1/2, 1/4, 1/8 scale whose
    shorter side stays >= draft_size (several times faster on 2.5k-pixel MIMIC JPEGs; not the original)."""
    img = Image.open(file)
    if draft_size is not None and img.format == "JPEG":
        w, h = img.size
        scale = min(w, h) / draft_size
        if scale >= 2:
            img.draft("L", (int(w / scale) + 1, int(h / scale) + 1))
    img.load()
    return img if img.mode == "L" else img.convert("L")


class ImageTextDataset(Dataset):
    """One study per item: a drawn AP/PA view, its report sentences and 5 binary CheXpert labels.

    view_selection: 'random' draws a view with torch.randint on every access, in every split, as the
        original; 'first' always takes the first view (deterministic validation).
    draft_size: see `open_image` (None = full decode, as the original).
    """

    def __init__(self, path, split: str, image_transform: Callable | None = None,
                 text_transform: Callable | None = None, *, image_root=None, view_selection: str = "random",
                 val_image_transform: Callable | None = None, val_text_transform: Callable | None = None,
                 draft_size: int | None = None):
        if view_selection not in ("random", "first"):
            raise ValueError(f"view_selection {view_selection!r}: use 'random' or 'first'")
        self.path, self.split = Path(path), storage.normalize_split(split)
        self.rows = storage.SplitRows(self.path, self.split)
        self.num_items = len(self.rows)  # apply_subset lowers it: the first num_items studies
        self.stats = storage.read_statistics(self.path).get(self.split, {})
        self.image_root = storage.image_root(self.path, image_root)
        self.image_transform, self.text_transform = image_transform, text_transform
        self.val_image_transform, self.val_text_transform = val_image_transform, val_text_transform
        self.view_selection, self.draft_size = view_selection, draft_size
        # A truncated JPEG is skipped like any unreadable file (the original set PIL's process-wide
        # LOAD_TRUNCATED_IMAGES and trained on the grey remainder without a word).
        self.unreadable = set()  # files skipped by this process

    def __len__(self) -> int:
        return self.num_items

    def image_path(self, row: dict, view: int) -> Path:
        return self.image_root / storage.image_relpath(row["patient_id"], row["study_id"], row["dicom_id"][view])

    def _load_view(self, row: dict) -> tuple[Image.Image | None, int]:
        n = len(row["dicom_id"])
        first = int(torch.randint(n, size=())) if self.view_selection == "random" and n > 1 else 0
        for k in range(n):  # the drawn view first, the others if it cannot be read
            view = (first + k) % n
            file = self.image_path(row, view)
            try:
                return open_image(file, self.draft_size), view
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
                self.unreadable.add(str(file))
                log.warning(f"{file}: unreadable image ({e}); trying another view / study "
                            f"({len(self.unreadable)} unreadable file(s) skipped so far in this process)")
        return None, -1

    def __getitem__(self, index: int) -> dict:
        index = _check_index(index, len(self))
        for attempt in range(_MAX_BAD_IN_A_ROW):
            row = self.rows[(index + attempt) % len(self)]
            img, view = self._load_view(row)
            if img is not None:
                break
        else:
            raise RuntimeError(f"{self.image_root}: {_MAX_BAD_IN_A_ROW} studies in a row without a readable "
                               f"image from index {index}; is image_root right?")
        sentences = list(row["sentences"])
        item = {
            "scan": self.image_transform(img) if self.image_transform else _to_tensor(img),
            "sentences": self.text_transform(sentences) if self.text_transform else sentences,
            "chexpert": torch.tensor([float(row[f"bin.{n}"]) for n in CHEXPERT_BIN_LABELS]),
            "study_id": row["study_id"],
            "patient_id": row["patient_id"],
            "view_index": view,
        }
        if self.val_image_transform is not None:
            item["val_scan"] = self.val_image_transform(img)
        if self.val_text_transform is not None:
            item["val_sentences"] = self.val_text_transform(sentences)
        return item


def _check_index(index: int, n: int) -> int:
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for {n} items")
    return index % n


def _to_tensor(img: Image.Image) -> torch.Tensor:
    from torchvision.transforms.functional import to_tensor

    return to_tensor(img)  # 1xHxW in [0, 1]


def keep_studies_with_sentences(samples: list, key: str) -> list:
    """The samples (unreadable ones are None) whose report has sentences under `key`; warns naming the others.
    A batch with none left is an error: the report encoder has nothing to encode."""
    kept = [s for s in samples if s is not None and len(s[key]) > 0]
    if len(kept) < len(samples):
        ids = [s.get("study_id") for s in samples if s is not None and len(s[key]) == 0]
        warnings.warn(f"skipping {len(samples) - len(kept)} studies without report sentences: {ids}", stacklevel=3)
    if not kept:
        raise ValueError("a whole batch of studies without report sentences")
    return kept


def collate_image_text(batch: list) -> dict:
    """Stacks tensors; sentences stay a list (per sample) of lists of str for the model's tokenizer."""
    out = {
        "scan": torch.stack([b["scan"] for b in batch]),  # Bx3xHxW
        "sentences": [list(b["sentences"]) for b in batch],
        "chexpert": torch.stack([b["chexpert"] for b in batch]),  # Bx5
        "study_id": [b["study_id"] for b in batch],
        "patient_id": [b["patient_id"] for b in batch],
        "view_index": torch.tensor([b["view_index"] for b in batch], dtype=torch.long),
    }
    if "val_scan" in batch[0]:
        out["val_scan"] = torch.stack([b["val_scan"] for b in batch])
    if "val_sentences" in batch[0]:
        out["val_sentences"] = [list(b["val_sentences"]) for b in batch]
    return out


class ImageListDataset(Dataset):
    """One AP/PA image per item from `<split>/image_list.csv` (the original's MimicCxrImageDataset).

    item: {"scan": image_transform(PIL) (or the PIL image), "target": float tensor (5,)}.
    """

    def __init__(self, path, split: str, image_transform: Callable | None = None, *, image_root=None,
                 draft_size: int | None = None):
        self.path, self.split = Path(path), storage.normalize_split(split)
        file = self.path / self.split / "image_list.csv"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing; run `python lovt/data/mimic_cxr.py create_image_list "
                                    f"--path {self.path}`")
        with open(file, newline="") as f:
            rows = list(csv.DictReader(f))
        self.files = [r["img_file"] for r in rows]
        self.num_items = len(self.files)
        self.targets = torch.tensor([[float(r[n]) for n in CHEXPERT_BIN_LABELS] for r in rows]).reshape(-1, 5)
        self.stats = storage.read_statistics(self.path).get(self.split, {})
        self.image_root = storage.image_root(self.path, image_root)
        self.image_transform, self.draft_size = image_transform, draft_size
        self.unreadable = set()  # files skipped by this process (truncated JPEGs included)

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict:
        index = _check_index(index, len(self))
        for attempt in range(_MAX_BAD_IN_A_ROW):
            i = (index + attempt) % len(self)
            file = self.image_root / self.files[i]
            try:
                img = open_image(file, self.draft_size)
                break
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
                self.unreadable.add(str(file))
                log.warning(f"{file}: unreadable image ({e}); skipped "
                            f"({len(self.unreadable)} unreadable file(s) skipped so far in this process)")
        else:
            raise RuntimeError(f"{self.image_root}: {_MAX_BAD_IN_A_ROW} unreadable images in a row")
        return {"scan": self.image_transform(img) if self.image_transform else img, "target": self.targets[i]}


# ------------------------------------------------------------------------------------------ dataset configs

@dataclass
class DatasetConfig:
    """configs/dataset/<name>.yaml (the original's fields)."""

    name: str = "???"
    path: str = "???"
    loader: str = "???"  # 'MimicCxrDataset' (image-text) | 'MimicCxrImageDataset' (image list)
    train_subset: float | None = None
    val_subset: float | None = None
    test_subset: float | None = None
    arguments: dict = field(default_factory=dict)


def load_dataset_config(name: str, config_dir=None) -> DatasetConfig:
    """Reads configs/dataset/<name>.yaml (or a path to a yaml) into a DatasetConfig; env interpolations
    such as ${oc.env:LOVT_DATASETS,datasets} are resolved."""
    from omegaconf import OmegaConf

    file = Path(name) if str(name).endswith((".yaml", ".yml")) else Path(config_dir or CONFIG_DIR) / f"{name}.yaml"
    if not file.is_file():
        known = sorted(p.stem for p in Path(config_dir or CONFIG_DIR).glob("*.yaml"))
        raise FileNotFoundError(f"{file}: dataset config not found; known: {known}")
    merged = OmegaConf.merge(OmegaConf.structured(DatasetConfig), OmegaConf.load(file))
    return DatasetConfig(**OmegaConf.to_container(merged, resolve=True))


LOADERS = {"MimicCxrDataset": ImageTextDataset, "MimicCxrImageDataset": ImageListDataset}


def apply_subset(dataset: Dataset, fraction: float | None) -> Dataset:
    """The FIRST round(fraction * N) items (stored order = ascending patient id), as the original.

    Our datasets come back as a shallow copy of the same class (stats of the whole split kept, skips of
    unreadable images stay inside the subset); any other dataset as a torch Subset with `stats` copied.
    """
    if fraction is None:
        return dataset
    n = round(len(dataset) * fraction)
    if isinstance(dataset, (ImageTextDataset, ImageListDataset)):
        subset = copy.copy(dataset)
        subset.num_items = n
        return subset
    subset = Subset(dataset, range(n))
    subset.stats = getattr(dataset, "stats", None)
    return subset


def load_datasets(config, split_kwargs: dict | None = None, **common_kwargs: Any) -> dict:
    """{"train", "validation", "test"} datasets of a DatasetConfig (or config name), subsets applied.

    split_kwargs: per split extra arguments, e.g. {"train": {"image_transform": ...}, "validation": {...}}.
    """
    if not isinstance(config, DatasetConfig):
        config = load_dataset_config(config)
    if config.loader not in LOADERS:
        raise ValueError(f"dataset loader {config.loader!r}: one of {sorted(LOADERS)}")
    path = Path(os.path.expanduser(config.path))
    fractions = {"train": config.train_subset, "validation": config.val_subset, "test": config.test_subset}
    out = {}
    for split in storage.SPLITS:
        kwargs = {**config.arguments, **common_kwargs, **(split_kwargs or {}).get(split, {})}
        out[split] = apply_subset(LOADERS[config.loader](path, split, **kwargs), fractions[split])
    return out
