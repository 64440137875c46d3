"""The fast pre-training input path: images from the decode-once cache, reports from the stored token ids.

    ds = CachedImageTextDataset(path, split, tokenizer, max_length, images, text_transform=None,
                                view_selection="random", with_text=False)
        images: a shared.image_cache.ImageCache of this dataset's images (lovt/data/prepare_cache.py writes it),
                whose `names` are the images' paths relative to the MIMIC-CXR-JPG files/ folder
        ds[i] -> {"scan": uint8 tensor 1xHxW (the cached image, not yet augmented),
                  "sentence_ids": list of int32 arrays (the sentences after text_transform, which draws on
                                  sentence indices exactly as on the sentences themselves),
                  "chexpert", "study_id", "patient_id", "view_index" as ImageTextDataset,
                  "sentences": list[str] only with with_text=True (validation: attention plots)}

    CachedPretrainCollator(tokenizer, max_length, scan_transform=None)(items) -> the batch of PretrainCollator:
        "report" packed from the stored ids (ReportTokenizer.pack: the same tensors as tokenising the text);
        "scan" = scan_transform(images, sizes) (a BatchScanTransform: augmentation in the loader workers) when
        given; else "scan_uint8" (B x 1 x H x W, zero-padded, shared.augment2d.stack_padded) and "scan_sizes"
        (B x 2), for the training device to augment (lovt/fast_data.py).

A view or study whose image the cache skipped (unreadable when the cache was built, and named in its log then)
is handled as ImageTextDataset handles an unreadable file: another view of the study, else the next study.
"""
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from lovt.data import storage
from lovt.data.dataset import keep_studies_with_sentences
from lovt.data.storage import CHEXPERT_BIN_LABELS
from lovt.data.tokenized import TokenizedReports, read_split_columns
from shared.augment2d import stack_padded

_MAX_BAD_IN_A_ROW = 50


class CachedImageTextDataset(Dataset):
    def __init__(self, path, split: str, tokenizer, max_length: int, images, text_transform=None, *,
                 view_selection: str = "random", with_text: bool = False):
        if view_selection not in ("random", "first"):
            raise ValueError(f"view_selection {view_selection!r}: use 'random' or 'first'")
        self.path, self.split = path, storage.normalize_split(split)
        columns = ["study_id", "patient_id", "dicom_id", *(f"bin.{n}" for n in CHEXPERT_BIN_LABELS)]
        cols = read_split_columns(path, self.split, columns + (["sentences"] if with_text else []))
        self.study_ids, self.patient_ids = cols["study_id"], cols["patient_id"]
        self.labels = torch.tensor([cols[f"bin.{n}"] for n in CHEXPERT_BIN_LABELS], dtype=torch.float32).T
        self.sentences = cols.get("sentences")
        self.stats = storage.read_statistics(path).get(self.split, {})
        self.tokens = TokenizedReports(path, self.split, tokenizer, max_length, self.study_ids)
        self.images = images
        index = {name: i for i, name in enumerate(images.names)}
        # cache index of every view of every study (-1: not in the cache, i.e. skipped when it was built)
        self.views = [[index.get(storage.image_relpath(p, s, d), -1) for d in dicoms]
                      for p, s, dicoms in zip(self.patient_ids, self.study_ids, cols["dicom_id"])]
        missing = sum(v < 0 for views in self.views for v in views)
        if missing == sum(len(v) for v in self.views) and self.views:
            raise ValueError(f"{self.path} ({self.split}): none of the split's images is in the image cache; was "
                             f"the cache built for this dataset?")
        self.num_missing = missing
        self.text_transform, self.view_selection = text_transform, view_selection

    def __len__(self) -> int:
        return len(self.study_ids)

    def _pick_view(self, row: int) -> tuple[int, int]:
        views = self.views[row]
        n = len(views)
        first = int(torch.randint(n, size=())) if self.view_selection == "random" and n > 1 else 0
        for k in range(n):  # the drawn view first, the others if the cache has no image for it
            view = (first + k) % n
            if views[view] >= 0:
                return views[view], view
        return -1, -1

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        for attempt in range(_MAX_BAD_IN_A_ROW):
            row = (index + attempt) % n
            cache_index, view = self._pick_view(row)
            if cache_index >= 0:
                break
        else:
            raise RuntimeError(f"{self.path}: {_MAX_BAD_IN_A_ROW} studies in a row without a cached image from "
                               f"index {index}")
        sentence_ids = self.tokens[row]
        order = list(range(len(sentence_ids)))
        if self.text_transform is not None:
            order = self.text_transform(order)  # the same draws as on the sentence strings
        item = {
            "scan": torch.from_numpy(np.array(self.images[cache_index])).unsqueeze(0),  # a copy: the map is read-only
            "sentence_ids": [sentence_ids[i] for i in order],
            "chexpert": self.labels[row],
            "study_id": self.study_ids[row],
            "patient_id": self.patient_ids[row],
            "view_index": view,
        }
        if self.sentences is not None:
            item["sentences"] = [self.sentences[row][i] for i in order]
        return item


class CachedPretrainCollator:
    """Batches CachedImageTextDataset items; studies without sentences are dropped as in PretrainCollator."""

    def __init__(self, tokenizer, max_length: int = 512, scan_transform=None):
        from lovt.models.report_encoder import ReportTokenizer

        self.pack = ReportTokenizer(tokenizer, max_length).pack
        self.scan_transform = scan_transform

    def __call__(self, samples: list) -> dict:
        kept = keep_studies_with_sentences(samples, "sentence_ids")
        scans = [s["scan"] for s in kept]
        batch = {
            "report": self.pack([s["sentence_ids"] for s in kept]),
            "chexpert": torch.stack([s["chexpert"] for s in kept]),
            "study_id": [s["study_id"] for s in kept],
            "patient_id": [s["patient_id"] for s in kept],
            "view_index": torch.tensor([s["view_index"] for s in kept], dtype=torch.long),
        }
        images, sizes = stack_padded(scans)
        if self.scan_transform is not None:
            batch["scan"] = self.scan_transform(images, sizes)
        else:  # augmented on the training device (lovt/fast_data.py)
            batch["scan_uint8"], batch["scan_sizes"] = images, sizes
        if "sentences" in kept[0]:
            batch["sentences"] = [s["sentences"] for s in kept]
        return batch
