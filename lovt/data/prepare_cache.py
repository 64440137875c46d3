"""Writes the fast input path of a prepared MIMIC-CXR dataset: the decode-once image cache and the reports
tokenised once (not in the original; training uses them with `data_path=cache`, see lovt/README.md).

    python lovt/data/prepare_cache.py --path <root>/mimic-cxr_ap-pa_dataset \
        [--size 256] [--tokenizer emilyalsentzer/Bio_ClinicalBERT] [--max_length 512] [--workers 8]

    <dataset>/image_cache/<key>/   every AP/PA image of every split, decoded once, shorter side resized to --size
                                   (uint8, aspect kept, one memory-mapped file; shared/image_cache.py); <key>
                                   hashes the size and the image list, so a changed setting builds a new cache
    <dataset>/tokenized/<key>/     the sentences' token ids (lovt/data/tokenized.py); <key> names the tokenizer
                                   (vocabulary hash) and max_length

Unreadable or missing images are named in the log and skipped here (counted in the cache's index.json), never
during training. Both parts are reused when already complete, so the command can be rerun safely.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import logging

from lovt.data import storage

log = logging.getLogger(__name__)

IMAGE_CACHE_DIR = "image_cache"
DEFAULT_CACHE_SIZE = 256


def image_names(dataset_path) -> list:
    """Every image of the dataset (all splits), as paths relative to the MIMIC-CXR-JPG files/ folder."""
    from lovt.data.tokenized import read_split_columns

    names = []
    for split in storage.SPLITS:
        if (Path(dataset_path) / split).is_dir():
            cols = read_split_columns(dataset_path, split, ["patient_id", "study_id", "dicom_id"])
            names += [storage.image_relpath(p, s, d) for p, s, dicoms in
                      zip(cols["patient_id"], cols["study_id"], cols["dicom_id"]) for d in dicoms]
    return sorted(set(names))


def image_cache_path(dataset_path, size: int = DEFAULT_CACHE_SIZE) -> Path:
    """The cache folder for these settings (it may not exist yet)."""
    from shared.image_cache import cache_path

    return cache_path(Path(dataset_path) / IMAGE_CACHE_DIR, image_names(dataset_path), size)


def open_image_cache(dataset_path, size: int = DEFAULT_CACHE_SIZE):
    """The dataset's ImageCache at this size, or FileNotFoundError with the command that builds it."""
    from shared.image_cache import ImageCache

    folder = image_cache_path(dataset_path, size)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no image cache at {size} px for this dataset; build it with "
                                f"`python lovt/data/prepare_cache.py --path {dataset_path} --size {size}` "
                                f"(or use data_path=files)")
    return ImageCache(folder)


def build_caches(dataset_path, size: int | None = DEFAULT_CACHE_SIZE, tokenizer=None, max_length: int = 512,
                 workers: int = 0, image_root=None) -> dict:
    """Builds (or reuses) the image cache and, when a tokenizer is given, the tokenised reports."""
    from shared.image_cache import ImageCache, build_image_cache

    dataset_path = Path(dataset_path)
    storage.detect_format(dataset_path)
    out = {}
    if size is not None:
        root = storage.image_root(dataset_path, image_root)
        names = image_names(dataset_path)
        folder = build_image_cache([root / n for n in names], dataset_path / IMAGE_CACHE_DIR, size, names=names,
                                   workers=workers, log=log.info)
        cache = ImageCache(folder)
        if cache.skipped:
            log.warning(f"{len(cache.skipped)} of {len(names)} images skipped (unreadable), listed in "
                        f"{folder / 'index.json'}; training uses another view of their study or the next study")
        out["image_cache"] = folder
    if tokenizer is not None:
        from lovt.data.tokenized import write_tokenized

        out["tokenized"] = write_tokenized(dataset_path, tokenizer, max_length)
        log.info(f"tokenised reports: {out['tokenized']}")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, help="prepared dataset folder (mimic_cxr.py create)")
    p.add_argument("--size", type=int, default=DEFAULT_CACHE_SIZE,
                   help="shorter side of the cached images in pixels (0: no image cache)")
    p.add_argument("--tokenizer", default="emilyalsentzer/Bio_ClinicalBERT",
                   help="the report encoder's language_encoder (local folder or HF cache); '' skips tokenising")
    p.add_argument("--max_length", type=int, default=512, help="the report encoder's max_length")
    p.add_argument("--workers", type=int, default=0, help="decoding processes")
    p.add_argument("--image_root", default=None, help="MIMIC-CXR-JPG files/ (default: the dataset's images link)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    tokenizer = None
    if args.tokenizer:
        from lovt.models.report_encoder import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    build_caches(args.path, args.size or None, tokenizer, args.max_length, args.workers, args.image_root)


if __name__ == "__main__":
    main()
