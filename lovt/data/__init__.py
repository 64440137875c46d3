"""MIMIC-CXR image-report data for LoVT / ConVIRT / CLIP pre-training.

Preparation (once, CPU only, offline):

    python lovt/data/mimic_cxr.py create <root> --config mimic-cxr_ap-pa [--format hf|parquet]
    python lovt/data/mimic_cxr.py create_image_list --path <root>/mimic-cxr_ap-pa_dataset
    python lovt/data/mimic_cxr.py resize_images --path <root>/mimic-cxr_ap-pa_dataset --size 512  # optional
    python lovt/data/prepare_cache.py --path <root>/mimic-cxr_ap-pa_dataset --size 256  # optional: data_path=cache

writes `<root>/mimic-cxr_ap-pa_dataset/` (one record per study: AP/PA views, findings + impression
sentences, CheXpert labels), `dataset_statistics.json` and an `images` link to the JPG tree.
See `lovt/data/mimic_cxr.py` for the raw layouts it accepts.
The cached input path (image cache + stored token ids + batched augmentation): prepare_cache.py, tokenized.py,
cached.py, batch_augment.py and lovt/fast_data.py.

Interface used by training (everything importable from `lovt.data`):

    ds = ImageTextDataset(path, split, image_transform=None, text_transform=None, *,
                          image_root=None, view_selection="random",
                          val_image_transform=None, val_text_transform=None, draft_size=None)
        path   prepared dataset folder (HF `save_to_disk` or Parquet, detected automatically)
        split  "train" | "validation" | "test"  ("validate", the csv's name, is accepted too)
        ds[i] -> {
            "scan":      float tensor 3xHxW after ScanTransform (which repeats the grey channel 3x like
                         the original); 1xHxW in [0, 1] when image_transform is None,
            "sentences": list[str]  (findings then impression sentences, after text_transform),
            "chexpert":  float tensor (5,)  CHEXPERT_BIN_LABELS order, U-ones policy,
            "study_id":  str, "patient_id": str, "view_index": int (which AP/PA view was drawn),
            "val_scan" / "val_sentences": only when val_image_transform / val_text_transform are given
                         (optional extras, same view; the original trains on augmented inputs only),
        }
        ds.stats -> this split's entry of dataset_statistics.json:
                    {"scan": {"pixel_mean": m, "pixel_std": s}, "chexpert_bin_pos_weights": {label: f}}
        An unreadable / missing JPEG is skipped with a warning (another view of the study, else the
        next study), never a crash. image_root=<dataset>/images_512 reads the resize_images copies;
        draft_size lets libjpeg decode at reduced size (both faster, neither is the original).

    collate_image_text(batch) -> {"scan": Bx3xHxW, "sentences": list[list[str]] (untokenised),
                                  "chexpert": Bx5, "study_id": list[str], "patient_id": list[str],
                                  "view_index": LongTensor B, ["val_scan", "val_sentences"]}

    ScanTransform(config=ScanAugmentationConfig(), image_size=(224, 224), dataset_stats=None,
                  val=False, legacy_half_normalization=False)      # PIL 'L' image -> 3xHxW tensor
        dataset_stats: ds.stats (the split entry) or {"pixel_mean", "pixel_std"}.
        legacy_half_normalization=True reproduces the baselines' stats lookup bug (0.5 / 0.5).
    ReportTransform(config=ReportAugmentationConfig(), val=False)  # list[str] -> list[str]
        ReportAugmentationConfig(sentence_shuffling="random_swaps", sentence_sampling=None) is LoVT;
        the dataclass defaults (random_sentence) are ConVIRT / CLIP.

    ImageListDataset(path, split, image_transform=None)   # MimicCxrImageDataset (image-only baselines)
        ds[i] -> {"scan": tensor or PIL image, "target": float tensor (5,)}

    load_dataset_config(name) -> DatasetConfig     # lovt/configs/dataset/<name>.yaml (OmegaConf)
    load_datasets(config_or_name, split_kwargs=None, **common_kwargs) -> {"train", "validation", "test"}
        split_kwargs: {"train": {"image_transform": ..., "text_transform": ...}, "validation": {...}}
        applies train_subset / val_subset / test_subset as the original: the FIRST round(f*N) studies
        (same class, `stats` of the whole split).

    CHEXPERT_BIN_LABELS = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
"""

import importlib

# Imported on first use, so that `mimic_cxr.py create` (no torch needed) starts fast.
_EXPORTS = {
    "CHEXPERT_BIN_LABELS": "storage",
    "DatasetConfig": "dataset",
    "ImageListDataset": "dataset",
    "ImageTextDataset": "dataset",
    "apply_subset": "dataset",
    "collate_image_text": "dataset",
    "load_dataset_config": "dataset",
    "load_datasets": "dataset",
    "ReportAugmentationConfig": "transforms",
    "ReportTransform": "transforms",
    "ScanAugmentationConfig": "transforms",
    "ScanTransform": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lovt.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lovt.data.{_EXPORTS[name]}"), name)
