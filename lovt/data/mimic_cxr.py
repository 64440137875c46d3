"""MIMIC-CXR(-JPG) 2.0.0 -> the LoVT pre-training dataset, one record per study.

    python lovt/data/mimic_cxr.py create <root> --config mimic-cxr_ap-pa [--target_path P]
                                  [--format hf|parquet] [--sentence_splitter rules|stanza|auto]
                                  [--reports R] [--num_workers N]
    python lovt/data/mimic_cxr.py create_image_list --path <root>/mimic-cxr_ap-pa_dataset
    python lovt/data/mimic_cxr.py resize_images --path <root>/mimic-cxr_ap-pa_dataset --size 512  # optional

Raw data looked for under <root> (first match wins):
  MIMIC-CXR-JPG (mimic-cxr-2.0.0-{split,metadata,chexpert}.csv[.gz] and files/p1X/p<subject>/s<study>/*.jpg):
    mimic-cxr-jpg_2-0-0/ (the original's name), mimic-cxr-jpg/2.0.0/, mimic-cxr-jpg/,
    physionet.org/files/mimic-cxr-jpg/2.0.0/, or <root> itself.
  MIMIC-CXR reports (p1X/p<subject>/s<study>.txt): --reports (a folder or the zip), else
    mimic-cxr_2-0-0/mimic-cxr-reports/files/, mimic-cxr_2-0-0/mimic-cxr-reports.zip, mimic-cxr-reports/files/,
    mimic-cxr-reports.zip, mimic-cxr/2.0.0/{files/,mimic-cxr-reports.zip} (under <root> or next to the csv
    files), or .txt files inside the JPG files/ tree. The zip is read in place, never extracted.

Per split of the official split file (train, validate -> "validation", test), as the original:
join split and metadata csv, keep the configured views (AP/PA), one sample per (subject, study) in
ascending order; report -> findings + impression (lovt.data.sections) -> sentences
(lovt.data.sentences); skip the study when it has no findings/impression, no sentence or fewer than
3 tokens, or no readable image; per image width, height, pixel mean and variance (/255);
14 CheXpert labels and the 5 binary ones (uncertain -> 1, blank -> 0). Skipped studies and views are
warned about, counted per reason and written to preparation.json.
"""

import argparse
import csv
import logging
import math
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from lovt.data import storage
from lovt.data.sections import findings_and_impression
from lovt.data.sentences import clean_text, make_sentence_splitter

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "validate": "validation", "test": "test"}  # csv name -> dataset split


@dataclass(frozen=True)
class BuilderConfig:
    name: str
    views: tuple | None = None  # ViewPosition values kept; None = all
    sections: tuple = ("findings", "impression")
    min_section_tokens: int = 3
    unique_patients: bool = False  # one image per patient


BUILDER_CONFIGS = {c.name: c for c in (
    BuilderConfig("mimic-cxr"),
    BuilderConfig("mimic-cxr_ap-pa", views=("PA", "AP")),
    BuilderConfig("mimic-cxr_postero-anterior_findings-only", views=("PA",), sections=("findings",)),
    BuilderConfig("mimic-cxr_antero-posterior_findings-only", views=("AP",), sections=("findings",)),
    BuilderConfig("mimic-cxr_lateral_findings-only", views=("LATERAL",), sections=("findings",)),
    BuilderConfig("mimic-cxr_left-lateral_findings-only", views=("LL",), sections=("findings",)),
    BuilderConfig("mimic-cxr_unique-patients", unique_patients=True),
)}


# ----------------------------------------------------------------------------------------------- raw layout

CSV_COLUMNS = {
    "split": ("dicom_id", "study_id", "subject_id", "split"),
    "metadata": ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"),
    "chexpert": ("subject_id", "study_id") + storage.CHEXPERT_LABELS,
}


class ReportSource:
    """Reads `p1X/p<subject>/s<study>.txt` from a folder or, in place, from mimic-cxr-reports.zip."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._zip = None
        self._members = None

    @property
    def is_zip(self) -> bool:
        return self.path.is_file()

    def read(self, relpath: str) -> str:
        if not self.is_zip:
            file = self.path / relpath
            if not file.is_file():
                raise FileNotFoundError(f"{file}: report not found")
            return file.read_text(encoding="utf-8")
        if self._zip is None:  # opened lazily: each worker process gets its own handle
            self._zip = zipfile.ZipFile(self.path)
            self._members = {}
            for name in self._zip.namelist():
                parts = name.split("/")
                if name.endswith(".txt") and len(parts) >= 3:
                    self._members["/".join(parts[-3:])] = name
        member = self._members.get(relpath)
        if member is None:
            raise FileNotFoundError(f"{self.path}: report {relpath} not in the zip")
        return self._zip.read(member).decode("utf-8")

    def __getstate__(self):
        return {"path": self.path, "_zip": None, "_members": None}


@dataclass
class RawLayout:
    jpg_root: Path
    csvs: dict  # "split" | "metadata" | "chexpert" -> Path
    images_dir: Path
    reports: ReportSource


def _csv(folder: Path, kind: str) -> Path:
    for suffix in (".csv.gz", ".csv"):
        file = folder / f"mimic-cxr-2.0.0-{kind}{suffix}"
        if file.is_file():
            return file
    return folder / f"mimic-cxr-2.0.0-{kind}.csv.gz"


def _has_reports(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("p1*/p*/s*.txt"))


def locate_raw_data(root: Path, reports: Path | None = None) -> RawLayout:
    """Finds the MIMIC-CXR-JPG csv files, image tree and reports under `root`; clear error otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: MIMIC-CXR root folder not found")
    candidates = [root / "mimic-cxr-jpg_2-0-0", root / "mimic-cxr-jpg" / "2.0.0", root / "mimic-cxr-jpg",
                  root / "physionet.org" / "files" / "mimic-cxr-jpg" / "2.0.0", root]
    jpg_root = next((c for c in candidates if _csv(c, "split").is_file()), None)
    if jpg_root is None:
        raise FileNotFoundError(
            f"{root}: mimic-cxr-2.0.0-split.csv.gz not found in any of "
            f"{[str(c.relative_to(root)) or '.' for c in candidates]} (expected MIMIC-CXR-JPG 2.0.0)")
    csvs = {kind: _csv(jpg_root, kind) for kind in CSV_COLUMNS}
    for file in csvs.values():
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing (MIMIC-CXR-JPG 2.0.0 ships it next to files/)")
    images_dir = jpg_root / "files"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: MIMIC-CXR-JPG image folder not found")

    if reports is not None:
        reports = Path(reports)
        if not reports.exists():
            raise FileNotFoundError(f"{reports}: reports folder/zip not found")
        if reports.is_dir() and (reports / "files").is_dir():
            reports = reports / "files"
        return RawLayout(jpg_root, csvs, images_dir, ReportSource(reports))
    for base in dict.fromkeys([root, jpg_root, jpg_root.parent]):
        for sub in ("mimic-cxr_2-0-0", ".", "mimic-cxr/2.0.0"):
            folder = (base / sub).resolve()
            for cand in (folder / "mimic-cxr-reports" / "files", folder / "files"):
                if _has_reports(cand):
                    return RawLayout(jpg_root, csvs, images_dir, ReportSource(cand))
            if (folder / "mimic-cxr-reports.zip").is_file():
                return RawLayout(jpg_root, csvs, images_dir, ReportSource(folder / "mimic-cxr-reports.zip"))
    raise FileNotFoundError(
        f"{root}: MIMIC-CXR reports not found (looked for mimic-cxr_2-0-0/mimic-cxr-reports.zip, "
        f"mimic-cxr-reports/files/p1X/..., and .txt files in {images_dir}); pass --reports")


def read_csv_checked(file: Path, kind: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(file)
    except Exception as e:  # pandas raises many types for a bad gzip/csv
        raise ValueError(f"{file}: cannot be read as a csv ({type(e).__name__}: {e})") from e
    missing = [c for c in CSV_COLUMNS[kind] if c not in df.columns]
    if missing:
        raise ValueError(f"{file}: missing column(s) {missing}; it has {list(df.columns)}")
    return df


# ------------------------------------------------------------------------------------------- per study

_CHEXPERT_CODES = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}


def encode_chexpert(values: dict, where: str) -> tuple[dict, dict]:
    """Raw csv values (1, 0, -1, NaN) -> (14 ClassLabel indices, 5 binary labels with uncertain -> 1)."""
    labels = {}
    for name in storage.CHEXPERT_LABELS:
        v = values.get(name, float("nan"))
        if v is None or (isinstance(v, float) and math.isnan(v)):
            cls = "blank"
        elif float(v) in _CHEXPERT_CODES:
            cls = _CHEXPERT_CODES[float(v)]
        else:
            raise ValueError(f"{where}: CheXpert label {name!r} = {v!r}, expected 1, 0, -1 or empty")
        classes = storage.NO_FINDING_CLASSES if name == "No Finding" else storage.CHEXPERT_CLASSES
        labels[name] = classes.index(cls) if cls in classes else 0  # No Finding is only blank/positive
    binary = {name: int(storage.CHEXPERT_CLASSES[labels[name]] in ("positive", "uncertain"))
              for name in storage.CHEXPERT_BIN_LABELS}
    return labels, binary


def image_stats(file: Path) -> tuple[int, int, float, float]:
    """(width, height, mean, variance) of the pixel values / 255, as the original computes them."""
    with Image.open(file) as img:
        img.load()
        if img.mode == "L":  # an exact histogram beats a float copy of a 3000x2500 image
            hist = np.asarray(img.histogram(), dtype=np.float64)
            levels = np.arange(256, dtype=np.float64) / 255.0
            n = hist.sum()
            mean = float((hist * levels).sum() / n)
            var = float(max((hist * levels**2).sum() / n - mean**2, 0.0))
        else:
            arr = np.asarray(img, dtype=np.float64) / 255.0
            mean, var = float(arr.mean()), float(arr.var())
        return img.width, img.height, mean, var


_WORKER = {}


def _init_worker(reports: ReportSource, images_dir: Path, config: BuilderConfig, splitter: str,
                 stanza_dir: str | None) -> None:
    # no PIL LOAD_TRUNCATED_IMAGES (the original set it process-wide): a truncated JPEG is an unreadable view
    _WORKER.update(reports=reports, images_dir=images_dir, config=config,
                   splitter=make_sentence_splitter(splitter, stanza_dir))


def process_study(task: dict) -> tuple[dict | None, str | None, list]:
    """One study -> (record or None, skip reason or None, [(kind, message)] of skipped views)."""
    reports, images_dir = _WORKER["reports"], _WORKER["images_dir"]
    config, splitter = _WORKER["config"], _WORKER["splitter"]
    subject, study = str(task["subject_id"]), str(task["study_id"])
    study_dir = f"p{subject[:2]}/p{subject}/s{study}"
    notes = []

    try:
        full_text = reports.read(f"{study_dir}.txt")
    except FileNotFoundError as e:
        return None, "missing_report", [("missing_report", str(e))]
    except (UnicodeDecodeError, OSError, zipfile.BadZipFile) as e:
        return None, "unreadable_report", [("unreadable_report", f"{study_dir}.txt: {e}")]

    sections = findings_and_impression(full_text, study=f"s{study}")
    if sections is None:
        return None, "no_findings_or_impression", notes
    findings_sentences, findings_tokens = splitter(sections["findings"])
    impression_sentences, impression_tokens = splitter(sections["impression"])
    findings_text, impression_text = clean_text(sections["findings"]), clean_text(sections["impression"])
    parts = {"findings": (findings_text, findings_sentences, findings_tokens),
             "impression": (impression_text, impression_sentences, impression_tokens)}
    chosen = [parts[s] for s in config.sections]
    text = " ".join(p[0] for p in chosen)
    sentences = [s for p in chosen for s in p[1]]
    num_tokens = sum(p[2] for p in chosen)
    if not sentences:
        return None, "no_sentences", notes
    if num_tokens < config.min_section_tokens:
        return None, "too_few_tokens", notes

    scan = {k: [] for k in ("dicom_id", "view", "view_name", "width", "height", "pixel_mean", "pixel_var")}
    study_date = 0
    for view in task["views"]:
        study_date = int(view["StudyDate"])
        file = images_dir / study_dir / f"{view['dicom_id']}.jpg"
        if not file.is_file():
            notes.append(("missing_image", f"{file}: not found, view skipped"))
            continue
        try:
            width, height, mean, var = image_stats(file)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            notes.append(("unreadable_image", f"{file}: unreadable JPEG ({e}), view skipped"))
            continue
        for key, value in (("dicom_id", view["dicom_id"]), ("view", str(view["ViewPosition"])),
                           ("view_name", str(view.get("ViewCodeSequence_CodeMeaning", ""))),
                           ("width", width), ("height", height), ("pixel_mean", mean), ("pixel_var", var)):
            scan[key].append(value)
    if not scan["dicom_id"]:
        return None, "no_images", notes

    means = np.asarray(scan["pixel_mean"])
    record = {
        "patient_id": subject,
        "study_id": study,
        "study_date": study_date,
        "scan": scan,
        "num_scans": len(scan["dicom_id"]),
        "scan_pixel_mean": float(means.mean()),
        # variance of the study's pixels pooled over views: within-view + between-view
        "scan_pixel_var": float(np.mean(scan["pixel_var"]) + means.var()),
        "report": {
            "full_text": full_text,
            "findings_text": findings_text,
            "impression_text": impression_text,
            "text": text,
            "findings_sentences": findings_sentences,
            "impression_sentences": impression_sentences,
            "sentences": sentences,
            "num_findings_sentences": len(findings_sentences),
            "num_impression_sentences": len(impression_sentences),
            "num_sentences": len(sentences),
            "num_findings_tokens": findings_tokens,
            "num_impression_tokens": impression_tokens,
            "num_tokens": num_tokens,
        },
        "chexpert_labels": task["chexpert_labels"],
        "chexpert_bin_labels": task["chexpert_bin_labels"],
    }
    return record, None, notes


# ------------------------------------------------------------------------------------------- the whole set

def study_tasks(layout: RawLayout, config: BuilderConfig) -> tuple[dict, dict]:
    """{dataset split: [task per study]} in (subject, study) order, and per-split counts."""
    splits = read_csv_checked(layout.csvs["split"], "split")
    meta = read_csv_checked(layout.csvs["metadata"], "metadata")
    chexpert = read_csv_checked(layout.csvs["chexpert"], "chexpert")
    keys = ["subject_id", "study_id", "dicom_id"]
    merged = splits.merge(meta, on=keys, how="left", indicator=True)
    chexpert = chexpert.drop_duplicates(["subject_id", "study_id"], keep="last").set_index(["subject_id", "study_id"])
    chexpert_rows = chexpert[list(storage.CHEXPERT_LABELS)].to_dict("index")

    tasks, counts = {}, {}
    for csv_name, split in SPLIT_NAMES.items():
        df = merged[merged["split"] == csv_name]
        n_no_meta = int((df["_merge"] == "left_only").sum())
        df = df[df["_merge"] == "both"]
        if config.views is not None:
            df = df[df["ViewPosition"].isin(config.views)]
        df = df.sort_values(["subject_id", "study_id"], kind="stable")  # csv order within a study
        if config.unique_patients:
            df = df.groupby("subject_id", sort=False).head(1)
        split_tasks, n_no_labels = [], 0
        cols = [c for c in ("dicom_id", "ViewPosition", "ViewCodeSequence_CodeMeaning", "StudyDate") if c in df]
        for (subject, study), group in df.groupby(["subject_id", "study_id"], sort=True):
            raw = chexpert_rows.get((subject, study))
            if raw is None:
                n_no_labels += 1
                raw = {}
            labels, binary = encode_chexpert(raw, f"{layout.csvs['chexpert']} (s{study})")
            split_tasks.append({"subject_id": int(subject), "study_id": int(study),
                                "views": group[cols].to_dict("records"),
                                "chexpert_labels": labels, "chexpert_bin_labels": binary})
        tasks[split] = split_tasks
        counts[split] = {"studies": len(split_tasks), "images_without_metadata": n_no_meta,
                         "studies_without_chexpert_labels": n_no_labels}
        if n_no_meta:
            log.warning(f"{split}: {n_no_meta} images of {layout.csvs['split']} have no row in "
                        f"{layout.csvs['metadata']}; ignored")
        if n_no_labels:
            log.warning(f"{split}: {n_no_labels} studies have no row in {layout.csvs['chexpert']}; labels blank")
    return tasks, counts


def split_statistics(records: list) -> dict:
    """The original's dataset_statistics.json entry of one split."""
    if not records:
        return {"scan": {"pixel_mean": 0.0, "pixel_std": 0.0},
                "chexpert_bin_pos_weights": {name: None for name in storage.CHEXPERT_BIN_LABELS}}
    # the stored values are float32; the statistics are computed from what is stored
    means = np.asarray([r["scan_pixel_mean"] for r in records], dtype=np.float32).astype(np.float64)
    variances = np.asarray([r["scan_pixel_var"] for r in records], dtype=np.float32).astype(np.float64)
    var = variances.mean() + (means.var() if len(records) > 1 else 0.0)
    return {
        "scan": {"pixel_mean": float(means.mean()), "pixel_std": float(math.sqrt(var))},
        # named "pos_weights" by the original, holds the fraction of negative studies
        "chexpert_bin_pos_weights": {
            name: float(1.0 - np.mean([r["chexpert_bin_labels"][name] for r in records]))
            for name in storage.CHEXPERT_BIN_LABELS},
    }


def create_dataset(root, config: str = "mimic-cxr", target_path=None, fmt: str = "hf",
                   sentence_splitter: str = "rules", stanza_dir: str | None = None, reports=None,
                   num_workers: int | None = None, overwrite: bool = False) -> Path:
    """Prepares the dataset folder and returns its path (default <root>/<config>_dataset).

    config: a BUILDER_CONFIGS name; the default 'mimic-cxr' (all views) is the original's default, LoVT's
    datasets are built with 'mimic-cxr_ap-pa'.
    """
    if config not in BUILDER_CONFIGS:
        raise ValueError(f"unknown config {config!r}; one of {sorted(BUILDER_CONFIGS)}")
    if fmt not in ("hf", "parquet"):
        raise ValueError(f"unknown format {fmt!r}: use 'hf' or 'parquet'")
    builder = BUILDER_CONFIGS[config]
    target = Path(target_path) if target_path else Path(root) / f"{config}_dataset"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists (remove it or pass --overwrite)")
    layout = locate_raw_data(Path(root), reports)
    log.info(f"MIMIC-CXR-JPG at {layout.jpg_root}, reports at {layout.reports.path}")
    make_sentence_splitter(sentence_splitter, stanza_dir)  # fail now, not in a worker
    started = time.time()
    tasks, counts = study_tasks(layout, builder)

    init_args = (layout.reports, layout.images_dir, builder, sentence_splitter, stanza_dir)
    total = sum(len(t) for t in tasks.values())
    workers = min(os.cpu_count() or 1, 8) if num_workers is None else num_workers
    pool = None
    if workers > 1 and (total >= 64 or num_workers is not None):  # a pool costs ~1 s to start
        pool = get_context("spawn" if sys.platform == "win32" else "fork").Pool(
            workers, initializer=_init_worker, initargs=init_args)
    else:
        _init_worker(*init_args)
    records = {}
    try:
        for split, split_tasks in tasks.items():
            results = pool.imap(process_study, split_tasks, chunksize=16) if pool else map(process_study, split_tasks)
            kept, skipped, views_skipped = [], {}, {}
            for record, reason, notes in tqdm(results, total=len(split_tasks), desc=f"{split} studies"):
                for kind, message in notes:
                    views_skipped[kind] = views_skipped.get(kind, 0) + 1
                    log.warning(message)
                if record is None:
                    skipped[reason] = skipped.get(reason, 0) + 1
                    log.debug(f"{split}: study skipped ({reason})")
                else:
                    kept.append(record)
            records[split] = kept
            counts[split].update(kept=len(kept), skipped=skipped, skipped_files=views_skipped,
                                 images=sum(r["num_scans"] for r in kept))
            log.info(f"{split}: kept {len(kept)} of {len(split_tasks)} studies; skipped {skipped}")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if total and not any(records.values()):
        raise RuntimeError(f"{root}: no study could be prepared; per split: {counts}")

    if target.exists():
        import shutil

        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    storage.write_splits(records, target, fmt)
    stats = {split: split_statistics(r) for split, r in records.items()}
    with open(target / storage.STATS_FILE, "w") as f:
        json_dump(stats, f)
    storage.link_images(target, layout.images_dir)
    with open(target / storage.PREPARATION_FILE, "w") as f:
        json_dump({"config": builder.name, "views": builder.views, "sections": builder.sections,
                   "min_section_tokens": builder.min_section_tokens, "format": fmt,
                   "sentence_splitter": sentence_splitter, "seconds": round(time.time() - started, 2),
                   "splits": counts}, f)
    log.info(f"wrote {target} in {time.time() - started:.1f} s")
    return target


def json_dump(obj, f) -> None:
    import json

    json.dump(obj, f, indent=2)


def create_image_list(path, overwrite: bool = False) -> dict:
    """<split>/image_list.csv (one row per AP/PA image, with the 5 binary labels) for image-only baselines."""
    path = Path(path)
    storage.detect_format(path)
    written = {}
    for split in storage.SPLITS:
        if not (path / split).is_dir():
            continue
        file = path / split / "image_list.csv"
        if file.exists() and not overwrite:
            raise FileExistsError(f"{file}: already exists (pass --overwrite)")
        rows = storage.SplitRows(path, split)
        with open(file, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["patient_id", "study_id", "dicom_id", "img_file", *storage.CHEXPERT_BIN_LABELS])
            n = 0
            for i in tqdm(range(len(rows)), desc=f"{split} image list"):
                row = rows[i]
                for dicom_id in row["dicom_id"]:
                    writer.writerow([row["patient_id"], row["study_id"], dicom_id,
                                     storage.image_relpath(row["patient_id"], row["study_id"], dicom_id),
                                     *(row[f"bin.{name}"] for name in storage.CHEXPERT_BIN_LABELS)])
                    n += 1
        written[split] = n
    return written


def _resize_one(job: tuple) -> tuple[str, str]:
    src, dst, size, quality = job
    if dst.is_file():
        return "existing", ""
    try:
        with Image.open(src) as img:
            w, h = img.size
            scale = size / min(w, h)
            if img.format == "JPEG" and scale <= 0.5:
                img.draft("L", (int(w * scale) + 1, int(h * scale) + 1))  # libjpeg's DCT scaling first
            img = img.convert("L")
            if scale < 1:
                img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_suffix(".tmp")
            img.save(tmp, format="JPEG", quality=quality)
            os.replace(tmp, dst)  # never a half-written image
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        return "unreadable", f"{src}: unreadable JPEG ({e}), not resized"
    return "written", ""


def resize_images(path, size: int = 512, quality: int = 95, num_workers: int | None = None) -> dict:
    """Copies every image of a prepared dataset into <path>/images_<size>/ with the shorter side <= size.

    Optional and not in the original: full MIMIC JPEGs (~2.5k px) cost ~50 ms each to decode, which bounds
    the loader; a 512 px copy decodes in ~2 ms. Use it with ImageTextDataset(image_root=<path>/images_512).
    The dataset statistics stay those of the full images. Existing files are kept (the job resumes).
    """
    path = Path(path)
    storage.detect_format(path)
    src_root, dst_root = storage.image_root(path), path / f"images_{size}"
    jobs = []
    for split in storage.SPLITS:
        if (path / split).is_dir():
            rows = storage.SplitRows(path, split)
            for i in range(len(rows)):
                row = rows[i]
                for dicom in row["dicom_id"]:
                    rel = storage.image_relpath(row["patient_id"], row["study_id"], dicom)
                    jobs.append((src_root / rel, dst_root / rel, size, quality))
    workers = min(os.cpu_count() or 1, 8) if num_workers is None else num_workers
    counts = {}
    pool = get_context("fork").Pool(workers) if workers > 1 and sys.platform != "win32" else None
    try:
        results = pool.imap_unordered(_resize_one, jobs, chunksize=32) if pool else map(_resize_one, jobs)
        for status, message in tqdm(results, total=len(jobs), desc=f"resizing to {size} px"):
            counts[status] = counts.get(status, 0) + 1
            if message:
                log.warning(message)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="prepare the pre-training dataset from the raw MIMIC-CXR(-JPG) files")
    create.add_argument("mimic_cxr_root_path")
    create.add_argument("--config", default="mimic-cxr", choices=sorted(BUILDER_CONFIGS),
                        help="default: all views, as the original; LoVT uses mimic-cxr_ap-pa")
    create.add_argument("--target_path", default=None, help="default: <root>/<config>_dataset")
    create.add_argument("--format", default="hf", choices=("hf", "parquet"),
                        help="hf: datasets.save_to_disk as the original; parquet: <split>/data.parquet")
    create.add_argument("--sentence_splitter", default="rules", choices=("rules", "stanza", "auto"))
    create.add_argument("--stanza_dir", default=None, help="stanza resources folder holding the 'en' model")
    create.add_argument("--reports", default=None, help="folder or mimic-cxr-reports.zip (default: searched)")
    create.add_argument("--num_workers", type=int, default=None, help="processes (default min(cpus, 8))")
    create.add_argument("--overwrite", action="store_true")
    image_list = sub.add_parser("create_image_list", help="write <split>/image_list.csv for image-only baselines")
    image_list.add_argument("--path", required=True)
    image_list.add_argument("--overwrite", action="store_true")
    resize = sub.add_parser("resize_images", help="optional: <path>/images_<size>/ copies for a fast loader")
    resize.add_argument("--path", required=True)
    resize.add_argument("--size", type=int, default=512, help="shorter side in pixels")
    resize.add_argument("--quality", type=int, default=95)
    resize.add_argument("--num_workers", type=int, default=None)
    args = parser.parse_args(argv)

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.command == "create":
        target = create_dataset(args.mimic_cxr_root_path, args.config, args.target_path, args.format,
                                args.sentence_splitter, args.stanza_dir, args.reports, args.num_workers,
                                args.overwrite)
        log.info(f"dataset stored at {target}")
    elif args.command == "create_image_list":
        written = create_image_list(args.path, args.overwrite)
        log.info(f"image lists written: {written}")
    else:
        counts = resize_images(args.path, args.size, args.quality, args.num_workers)
        log.info(f"images in {Path(args.path) / f'images_{args.size}'}: {counts}")


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one line per warning, no source line
    main()
