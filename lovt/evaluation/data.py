"""Downstream datasets as LoVT's loaders read them.

A prepared dataset folder holds train.csv, validation.csv, test.csv, dataset_statistics.json and the
processed images/masks (see `lovt.evaluation.prepare`). Dataset configs (`DATASETS`) name the folder
(relative to the datasets root), the loader and the train/validation subsets; subsets are the first
max(1, round(f * N)) csv rows. Input pipeline: pad to square, resize to input_size x input_size, scale to
[0, 1], normalize with the dataset's train mean/std, 3 channels; masks (nearest) and boxes follow. No
augmentation (the 18 tasks use none).
"""

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

NIH_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia",
               "Pneumothorax")


@dataclass(frozen=True)
class Loader:
    """Where a kind of dataset keeps its processed files; `{id}` and `{target}` are filled in."""

    image: str
    masks: dict | None = None  # target name -> path template; None for detection
    detection: bool = False


LOADERS = {
    "rsna_detection": Loader("stage_2_train_images_processed/{id}.png", detection=True),
    "rsna_segmentation": Loader("stage_2_train_images_processed/{id}.png",
                                {"opacity": "stage_2_train_masks/{id}.gif"}),
    "covid_rural": Loader("processed_images/{id}.jpg", {"opacity": "pngs_masks/{id}.png"}),
    "siim_segmentation": Loader("processed_images/{id}.png", {"pneumothorax": "segmentation_masks/{id}.gif"}),
    "object_cxr_detection": Loader("images_processed/{id}.jpg", detection=True),
    "object_cxr_segmentation": Loader("images_processed/{id}.jpg",
                                      {"foreign_object": "segmentation_masks/{id}.gif"}),
    "nih_detection": Loader("processed_images/{id}.png", detection=True),
    "nih_segmentation": Loader("processed_images/{id}.png",
                               {c: f"segmentation_masks/{c}/{{id}}.gif" for c in NIH_CLASSES}),
}

RSNA, SIIM = "RSNA-Pneunomia-Detection", "siim-acr-pneumothorax-segmentation"
COVID = "Opacity-Segmentation-COVID/opacity_segmentation_covid_chest_X_ray-master/covid_rural_annot"
OBJECT, NIH = "object-CXR", "NIH_CXR_pathology_detection"
# the original's configs/dataset/*.yaml: name -> (loader, folder, train_subset, val_subset)
DATASETS = {
    "rsna": ("rsna_detection", RSNA, 1.0, 0.1), "rsna_01": ("rsna_detection", RSNA, 0.1, 0.1),
    "rsna_001": ("rsna_detection", RSNA, 0.01, 0.1),
    "rsna_seg": ("rsna_segmentation", RSNA, 1.0, 0.1), "rsna_seg_01": ("rsna_segmentation", RSNA, 0.1, 0.1),
    "rsna_seg_001": ("rsna_segmentation", RSNA, 0.01, 0.1),
    "covid_rural": ("covid_rural", COVID, 1.0, 1.0),
    "siim_pneumothorax": ("siim_segmentation", SIIM, 1.0, 1.0),
    "object-cxr": ("object_cxr_detection", OBJECT, 1.0, 1.0),
    "object-cxr_seg": ("object_cxr_segmentation", OBJECT, 1.0, 1.0),
    "nih-cxr": ("nih_detection", NIH, 1.0, 1.0), "nih-cxr_seg": ("nih_segmentation", NIH, 1.0, 1.0),
}
# the folder each dataset family has in the sample data (shared.sample_data), for demos and tests
SAMPLE_FOLDERS = {RSNA: "rsna-pneumonia", SIIM: "siim-acr-pneumothorax", NIH: "chestxray14",
                  COVID: "covid-rural", OBJECT: "object-cxr"}
SPLITS = ("train", "validation", "test")


def subset_size(n, fraction):
    """The original takes round(f * N) rows; at least one here so tiny datasets never end up empty."""
    return n if fraction >= 1.0 else max(1, round(fraction * n))


def read_split_csv(path):
    """Rows of a split csv: [(id, boxes Kx4 (x, y, w, h), classes K)] (detection) or [(id, None, None)]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the dataset first (python -m lovt.evaluation.prepare)")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or reader.fieldnames[0] != "ID":
            raise ValueError(f"{path}: expected a header starting with 'ID', got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            boxes, classes = None, None
            if "boxes" in row:
                try:
                    boxes = np.array([[float(v) for v in b.split(";")] for b in row["boxes"].split("|") if b],
                                     dtype=np.float32).reshape(-1, 4)
                    classes = np.array([int(c) for c in (row.get("classes") or "").split("|") if c], np.int64)
                except ValueError as e:
                    raise ValueError(f"{path}, line {line}: bad boxes/classes ({e})") from None
            rows.append((row["ID"], boxes, classes))
    return rows


def read_statistics(folder):
    path = Path(folder) / "dataset_statistics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the dataset first")
    return json.loads(path.read_text())


def read_mask(path, size):
    """A 0/1 mask from a GIF written as 0/255 or a 0/1 PNG; resized (nearest) to the image size, as the
    original, with a warning naming the file (a mask of another size is usually the wrong mask)."""
    with Image.open(path) as f:
        m = f.convert("L")
    if m.size != size:
        warnings.warn(f"{path}: mask is {m.size[0]}x{m.size[1]} but its image is {size[0]}x{size[1]}; resized "
                      "(nearest) to the image, as the original", stacklevel=2)
        m = m.resize(size, Image.NEAREST)
    return torch.from_numpy(np.array(m) > 0)


def pad_to_square(w, h):
    """(left, top, right, bottom) padding of the original's PadToSquare: floor(diff / 2) on both sides,
    so odd differences stay one pixel short of square (the resize follows anyway)."""
    diff = abs(w - h) // 2
    return (0, diff, 0, diff) if w > h else (diff, 0, diff, 0)


class DownstreamDataset(Dataset):
    """One split of a downstream dataset. Items: {'id', 'scan' 3xSxS, 'boxes' Kx4 (x, y, w, h) and
    'classes' K (all 0, as the original's single-class detection loader) | 'masks' TxSxS int64}."""

    def __init__(self, folder, loader, split="train", fraction=1.0, input_size=224, stats=None):
        self.folder, self.loader = Path(folder), LOADERS[loader] if isinstance(loader, str) else loader
        self.split, self.input_size = split, input_size
        rows = read_split_csv(self.folder / f"{split}.csv")
        self.rows = rows[:subset_size(len(rows), fraction)]
        stats = stats if stats is not None else read_statistics(self.folder)["train"]["scan"]
        self.mean, self.std = float(stats["pixel_mean"]), float(stats["pixel_std"])
        self.target_names = list(self.loader.masks) if self.loader.masks else []
        self.skipped = set()  # ids of the samples skipped as unreadable (by this process)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        if self.split != "train":  # a score counts every sample once: a validation/test sample is never replaced
            try:
                return self._load(self.rows[i])
            except (OSError, ValueError) as e:
                raise OSError(f"{self.folder}: {self.split} sample {self.rows[i][0]} is unreadable ({e}); "
                              f"{self.split} samples are not replaced by others (the score would count one "
                              "twice): fix the file or prepare the dataset again") from None
        for attempt in range(min(len(self), 20)):  # an unreadable training file is skipped (warned), not fatal
            try:
                return self._load(self.rows[(i + attempt) % len(self)])
            except (OSError, ValueError) as e:
                sample_id = self.rows[(i + attempt) % len(self)][0]
                self.skipped.add(sample_id)
                warnings.warn(f"{self.folder}: skipping sample {sample_id} ({len(self.skipped)} skipped so far "
                              f"in the {self.split} split): {e}", stacklevel=2)
        raise OSError(f"{self.folder}: 20 unreadable samples in a row")

    def _load(self, row):
        sample_id, boxes, _ = row
        path = self.folder / self.loader.image.format(id=sample_id)
        with Image.open(path) as f:
            img = f.convert("L")
        w, h = img.size
        padding, size = pad_to_square(w, h), [self.input_size, self.input_size]
        scan = tv_tensors.Image(torch.from_numpy(np.array(img)).unsqueeze(0))
        scan = TF.resize(TF.pad(scan, list(padding)), size, antialias=True).float() / 255.0
        scan = ((scan - self.mean) / self.std).expand(3, -1, -1).contiguous()
        item = {"id": sample_id, "scan": scan.as_subclass(torch.Tensor)}
        if self.loader.detection:
            bb = tv_tensors.BoundingBoxes(torch.as_tensor(boxes).reshape(-1, 4), format="XYWH", canvas_size=(h, w))
            bb = TF.resize(TF.pad(bb, list(padding)), size)
            item["boxes"] = bb.as_subclass(torch.Tensor).float()
            item["classes"] = torch.zeros(len(bb), dtype=torch.long)
        else:
            masks = tv_tensors.Mask(torch.stack([read_mask(self.folder / t.format(id=sample_id), (w, h))
                                                 for t in self.loader.masks.values()]).to(torch.uint8))
            masks = TF.resize(TF.pad(masks, list(padding)), size, interpolation=TF.InterpolationMode.NEAREST)
            item["masks"] = masks.as_subclass(torch.Tensor).long()
        return item


def collate(batch):
    """Segmentation: stacked masks; detection: targets stay a list of per-image dicts."""
    out = {"id": [b["id"] for b in batch], "scan": torch.stack([b["scan"] for b in batch])}
    if "masks" in batch[0]:
        out["masks"] = torch.stack([b["masks"] for b in batch])
    else:
        out["targets"] = [{"boxes": b["boxes"], "classes": b["classes"]} for b in batch]
    return out


def resolve_folder(dataset, datasets_root=None, sample_root=None, folders=None):
    """The folder of a dataset config: an explicit `folders[name or family folder]`, the sample-data folder
    under `sample_root`, or `<datasets_root>/<original folder name>`."""
    loader, folder, *_ = DATASETS[dataset]
    folders = folders or {}
    for key in (dataset, folder):
        if key in folders:
            return Path(folders[key])
    if sample_root is not None:
        return Path(sample_root) / SAMPLE_FOLDERS[folder]
    if datasets_root is None:
        raise ValueError(f"dataset {dataset!r}: give --datasets_root (holding {folder}/) or a folder for it")
    return Path(datasets_root) / folder


def build_split(dataset, split, input_size=224, **where):
    """DownstreamDataset of a dataset config's split, with the config's subset for train/validation."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset config {dataset!r}; choose from {sorted(DATASETS)}")
    loader, _, train_fraction, val_fraction = DATASETS[dataset]
    fraction = {"train": train_fraction, "validation": val_fraction}.get(split, 1.0)
    folder = resolve_folder(dataset, **where)
    ds = DownstreamDataset(folder, loader, split, fraction, input_size)
    if len(ds) == 0:
        warnings.warn(f"{folder}/{split}.csv is empty", stacklevel=2)
    return ds
