"""The pre-training data module with a choice of input path (Hydra keys `data_path`, `augment_on`, `cache_size`).

    data_path=files   (default, the original) JPEGs decoded, augmented per sample (ScanTransform) and reports
                      tokenised per batch, all in the loader workers: PretrainDataModule.
    data_path=cache   images from the decode-once cache and reports from the stored token ids (both written by
                      lovt/data/prepare_cache.py); the scan augmentation runs batched (BatchScanTransform):
        augment_on=device   on the training device, after the batch is moved there (on_after_batch_transfer)
        augment_on=workers  in the loader workers (collate), on the CPU
        augment_on=auto     device when training on a GPU, workers otherwise
"""
import torch

from lovt.datamodule import PretrainDataModule
from shared.checkpoint import set_generator_state

DATA_PATHS = ("files", "cache")
AUGMENT_ON = ("auto", "device", "workers")


class FastPretrainDataModule(PretrainDataModule):
    """PretrainDataModule plus the cached input path. Same arguments, and:

    data_path: 'files' | 'cache'; augment_on: 'auto' | 'device' | 'workers'; cache_size: shorter side of the
    cached images (the size the cache was built with). With data_path='files' this is PretrainDataModule.
    """

    def __init__(self, dataset, config, num_workers: int = 0, dataset_path: str | None = None,
                 pin_memory: bool = True, tokenizer=None, persistent_workers: bool = True,
                 data_path: str = "files", augment_on: str = "auto", cache_size: int = 256):
        if data_path not in DATA_PATHS:
            raise ValueError(f"data_path={data_path!r}: use one of {DATA_PATHS}")
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on={augment_on!r}: use one of {AUGMENT_ON}")
        if data_path == "files" and augment_on == "device":
            raise ValueError("augment_on=device needs data_path=cache (the files path augments PIL images per "
                             "sample in the loader workers, as the original)")
        super().__init__(dataset, config, num_workers, dataset_path, pin_memory, tokenizer, persistent_workers)
        self.data_path, self.augment_on, self.cache_size = data_path, augment_on, cache_size
        self.scan_transforms = {}  # split -> BatchScanTransform (cache path)
        self.collates = {}
        self.augment_generator = None  # augment_on=device: the draws' generator (None: torch's global one)
        self._restored_rng = None

    def on_device(self) -> bool:
        """Whether the cache path augments on the training device (resolves augment_on=auto)."""
        if self.augment_on != "auto":
            return self.augment_on == "device"
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def setup(self, stage=None):
        if self.data_path == "files":
            return super().setup(stage)
        if self.datasets is not None:
            return
        from lovt.data import ReportTransform, apply_subset, load_dataset_config
        from lovt.data.batch_augment import BatchScanTransform
        from lovt.data.cached import CachedImageTextDataset, CachedPretrainCollator
        from lovt.data.prepare_cache import open_image_cache
        from lovt.data.storage import read_statistics

        if isinstance(self.dataset, dict):
            raise ValueError("data_path=cache reads a prepared dataset folder (a dataset config name or "
                             "dataset_path), not ready-made datasets")
        cfg = load_dataset_config(self.dataset) if isinstance(self.dataset, str) else self.dataset
        path = self.dataset_path or cfg.path
        images = open_image_cache(path, self.cache_size)
        stats = read_statistics(path).get("train", {})  # normalise with the TRAIN statistics
        enc_a, enc_b = self.config.encoder_a, self.config.encoder_b
        fractions = {"train": cfg.train_subset, "validation": cfg.val_subset, "test": cfg.test_subset}
        on_device = self.on_device()
        if on_device:
            # drawn in the training process: one generator per rank (seed + rank; global seeds are equal on all
            # ranks), its state in the checkpoint (state_dict). Worker processes draw from their own seeded RNG.
            trainer = getattr(self, "trainer", None)
            rank = trainer.global_rank if trainer is not None else 0
            self.augment_generator = torch.Generator().manual_seed(torch.initial_seed() + rank)
            if self._restored_rng is not None:
                set_generator_state(self.augment_generator, self._restored_rng)
        self.datasets = {}
        for split in ("train", "validation", "test"):
            val = split != "train" and not self.config.augment_on_validation
            view = {k: v for k, v in cfg.arguments.items() if k == "view_selection"}  # the rest is about files
            ds = CachedImageTextDataset(path, split, self.tokenizer, enc_b.max_length, images,
                                        ReportTransform(enc_b.data_augmentation, val=val),
                                        with_text=split != "train", **view)
            self.datasets[split] = apply_subset(ds, fractions[split])
            self.scan_transforms[split] = BatchScanTransform(enc_a.data_augmentation, tuple(enc_a.input_size),
                                                             stats, val=val, generator=self.augment_generator)
            self.collates[split] = CachedPretrainCollator(
                self.tokenizer, enc_b.max_length, None if on_device else self.scan_transforms[split])

    def _loader(self, split, train: bool):
        if self.data_path == "files":
            return super()._loader(split, train)
        from torch.utils.data import DataLoader

        return DataLoader(self.datasets[split], batch_size=self.config.batch_size, shuffle=train, drop_last=train,
                          num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                          collate_fn=self.collates[split], persistent_workers=self.persistent_workers)

    def state_dict(self):
        """Saved in Lightning checkpoints: the device-side augmentation generator (resume draws what a run
        without interruption would have drawn)."""
        return {} if self.augment_generator is None else {"augment_rng": self.augment_generator.get_state()}

    def load_state_dict(self, state_dict):
        self._restored_rng = state_dict.get("augment_rng")
        if self._restored_rng is not None and self.augment_generator is not None:  # Lightning: after setup
            set_generator_state(self.augment_generator, self._restored_rng)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if isinstance(batch, dict) and "scan_uint8" in batch:
            trainer = getattr(self, "trainer", None)
            training = trainer is None or trainer.training
            split = "train" if training else ("test" if trainer.testing else "validation")
            batch["scan"] = self.scan_transforms[split](batch.pop("scan_uint8"), batch.pop("scan_sizes"))
        return batch
