"""Data for pre-training: MIMIC-CXR image-report datasets (lovt.data), transforms, tokenising collation."""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lovt.models.config import BiModalModelConfig
from lovt.models.report_encoder import ReportTokenizer, load_tokenizer


class PretrainCollator:
    """lovt.data.collate_image_text, then the reports tokenised for joint sentence encoding (`batch['report']`).

    Studies without any sentence are dropped from the batch with a warning (a long run never dies on one sample).
    """

    def __init__(self, tokenizer, max_length: int = 512):
        self.tokenize = ReportTokenizer(tokenizer, max_length)

    def __call__(self, samples):
        from lovt.data import collate_image_text
        from lovt.data.dataset import keep_studies_with_sentences

        kept = keep_studies_with_sentences(samples, "sentences")
        batch = collate_image_text(kept)
        batch["report"] = self.tokenize(batch["sentences"])
        return batch


class PretrainDataModule(pl.LightningDataModule):
    """Train/validation/test loaders of the pre-training dataset.

    dataset: a dataset config name (lovt/configs/dataset/<name>.yaml), a DatasetConfig, or a ready dict
    {"train": ds, "validation": ds[, "test": ds]} of lovt.data.ImageTextDataset-like datasets (tests).
    dataset_path overrides the config's `path`. Images are normalised with the TRAIN split statistics.
    """

    def __init__(self, dataset, config: BiModalModelConfig, num_workers: int = 0, dataset_path: str | None = None,
                 pin_memory: bool = True, tokenizer=None, persistent_workers: bool = True):
        super().__init__()
        self.dataset, self.config, self.num_workers = dataset, config, num_workers
        self.dataset_path, self.pin_memory = dataset_path, pin_memory
        self.tokenizer = tokenizer or load_tokenizer(config.encoder_b.language_encoder)
        self.collate = PretrainCollator(self.tokenizer, config.encoder_b.max_length)
        self.persistent_workers = persistent_workers and num_workers > 0
        self.datasets = None

    def _transforms(self, stats, val: bool):
        from lovt.data import ReportTransform, ScanTransform

        enc_a, enc_b = self.config.encoder_a, self.config.encoder_b
        scan = ScanTransform(enc_a.data_augmentation, tuple(enc_a.input_size), stats, val=val)
        text = ReportTransform(enc_b.data_augmentation, val=val)
        return scan, text

    def setup(self, stage=None):
        if self.datasets is not None:
            return
        if isinstance(self.dataset, dict) and "train" in self.dataset:
            self.datasets = self.dataset
            return
        from lovt.data import load_dataset_config, load_datasets

        cfg = load_dataset_config(self.dataset) if isinstance(self.dataset, str) else self.dataset
        if self.dataset_path:
            cfg.path = self.dataset_path
        stats = load_datasets(cfg, split_kwargs=None)["train"].stats  # normalise with the TRAIN statistics
        val_aug = not self.config.augment_on_validation
        train_t, val_t = self._transforms(stats, val=False), self._transforms(stats, val=val_aug)
        kw = {"train": {"image_transform": train_t[0], "text_transform": train_t[1]}}
        kw.update({s: {"image_transform": val_t[0], "text_transform": val_t[1]} for s in ("validation", "test")})
        self.datasets = load_datasets(cfg, split_kwargs=kw)

    def _loader(self, split, train: bool):
        return DataLoader(self.datasets[split], batch_size=self.config.batch_size, shuffle=train, drop_last=train,
                          num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                          collate_fn=self.collate, persistent_workers=self.persistent_workers)

    def train_dataloader(self):
        if len(self.datasets["train"]) < self.config.batch_size:
            raise ValueError(f"the train split has {len(self.datasets['train'])} studies, fewer than batch_size "
                             f"{self.config.batch_size} (batches are dropped when incomplete, as in the original)")
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("validation", False)

    def test_dataloader(self):
        return self._loader("test", False)
