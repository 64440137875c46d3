"""On-disk format of a prepared MIMIC-CXR dataset folder, shared by the writer and the readers.

    <dataset>/dataset_statistics.json   per split: {"scan": {"pixel_mean", "pixel_std"},
                                                    "chexpert_bin_pos_weights": {label: 1 - prevalence}}
    <dataset>/images                    link to the MIMIC-CXR-JPG `files/` tree (or images_path.txt)
    <dataset>/preparation.json          how it was made and what was skipped, per split and reason
    hf:       dataset_dict.json, <split>/*.arrow   (`datasets.DatasetDict.save_to_disk`, as the original;
              memory-mapped on load)
    parquet:  <split>/data.parquet                 (the same Arrow schema; only the columns used are read)
    either:   <split>/image_list.csv after `create_image_list`

Both formats hold the original's nested record (patient_id, study_id, study_date, scan{...},
num_scans, scan_pixel_mean/var, report{...}, chexpert_labels{14}, chexpert_bin_labels{5}).
"""

import json
import os
from pathlib import Path

SPLITS = ("train", "validation", "test")
STATS_FILE = "dataset_statistics.json"
PREPARATION_FILE = "preparation.json"
IMAGES_LINK = "images"
IMAGES_PATH_FILE = "images_path.txt"  # fallback where links are not allowed

CHEXPERT_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "Pleural Effusion", "Pneumonia", "Pneumothorax", "Pleural Other",
    "Support Devices", "No Finding",
)
CHEXPERT_CLASSES = ("negative", "positive", "uncertain", "blank")
NO_FINDING_CLASSES = ("blank", "positive")
CHEXPERT_BIN_LABELS = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")


def features():
    """The HF `datasets.Features` of one study record (the original's schema)."""
    from datasets import ClassLabel, Features, List, Value

    labels = {name: ClassLabel(names=list(CHEXPERT_CLASSES)) for name in CHEXPERT_LABELS}
    labels["No Finding"] = ClassLabel(names=list(NO_FINDING_CLASSES))
    strings, ints, floats = List(Value("string")), List(Value("int32")), List(Value("float32"))
    return Features({
        "patient_id": Value("string"),
        "study_id": Value("string"),
        "study_date": Value("int32"),
        # one list entry per AP/PA view (the original's Sequence of dicts, stored as a struct of lists)
        "scan": {"dicom_id": strings, "view": strings, "view_name": strings, "width": ints, "height": ints,
                 "pixel_mean": floats, "pixel_var": floats},
        "num_scans": Value("int32"),
        "scan_pixel_mean": Value("float32"),
        "scan_pixel_var": Value("float32"),
        "report": {
            "full_text": Value("string"), "findings_text": Value("string"), "impression_text": Value("string"),
            "text": Value("string"), "findings_sentences": strings, "impression_sentences": strings,
            "sentences": strings, "num_findings_sentences": Value("int32"),
            "num_impression_sentences": Value("int32"), "num_sentences": Value("int32"),
            "num_findings_tokens": Value("int32"), "num_impression_tokens": Value("int32"),
            "num_tokens": Value("int32"),
        },
        "chexpert_labels": labels,
        "chexpert_bin_labels": {name: Value("int64") for name in CHEXPERT_BIN_LABELS},
    })


def write_splits(records: dict, target: Path, fmt: str) -> None:
    """records: {split: list of study dicts} -> `target` in format 'hf' or 'parquet'."""
    import datasets

    feats = features()
    data = datasets.DatasetDict({s: datasets.Dataset.from_list(r, features=feats) for s, r in records.items()})
    if fmt == "hf":
        data.save_to_disk(str(target))
    elif fmt == "parquet":
        for split, ds in data.items():
            (target / split).mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(target / split / "data.parquet"))
    else:
        raise ValueError(f"unknown format {fmt!r}: use 'hf' or 'parquet'")


def detect_format(path: Path) -> str:
    path = Path(path)
    if (path / "dataset_dict.json").is_file():
        return "hf"
    if any((path / s / "data.parquet").is_file() for s in SPLITS):
        return "parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: prepared dataset folder not found (run `python lovt/data/mimic_cxr.py "
                                f"create <root> --config mimic-cxr_ap-pa` first)")
    raise FileNotFoundError(f"{path}: neither dataset_dict.json (hf) nor <split>/data.parquet found; "
                            f"not a prepared MIMIC-CXR dataset")


def normalize_split(split: str) -> str:
    split = {"validate": "validation", "val": "validation"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    return split


# flat name -> nested column of the record, all that training reads
ROW_COLUMNS = {
    "patient_id": "patient_id",
    "study_id": "study_id",
    "dicom_id": "scan.dicom_id",
    "sentences": "report.sentences",
    **{f"bin.{name}": f"chexpert_bin_labels.{name}" for name in CHEXPERT_BIN_LABELS},
}


class SplitRows:
    """Random access to the flat ROW_COLUMNS of one split, either format. rows[i] -> dict."""

    def __init__(self, path: Path, split: str):
        path, split = Path(path), normalize_split(split)
        self.format = detect_format(path)
        if self.format == "hf":
            import datasets

            # load_from_disk memory-maps the Arrow files: opening is instant whatever the size
            ds = datasets.load_from_disk(str(path / split))
            ds = ds.flatten().select_columns(list(ROW_COLUMNS.values()))
            self._names = {v: k for k, v in ROW_COLUMNS.items()}
            self._data, self._table = ds, None
        else:
            import pyarrow.parquet as pq

            file = path / split / "data.parquet"
            if not file.is_file():
                raise FileNotFoundError(f"{file}: split {split!r} missing from the prepared dataset")
            table = pq.read_table(file, columns=list(ROW_COLUMNS.values()))
            # nested columns come back under their leaf names, which are unique here
            by_leaf = {nested.split(".")[-1]: flat for flat, nested in ROW_COLUMNS.items()}
            self._table = table.rename_columns([by_leaf[n] for n in table.column_names])
            self._data = None

    def __len__(self) -> int:
        return len(self._data) if self._data is not None else self._table.num_rows

    def __getitem__(self, i: int) -> dict:
        if self._data is not None:
            return {self._names[k]: v for k, v in self._data[i].items()}
        return self._table.slice(i, 1).to_pylist()[0]


def read_records(path: Path, split: str) -> list:
    """All nested records of one split as python dicts (for small jobs: image lists, tests)."""
    path, split = Path(path), normalize_split(split)
    if detect_format(path) == "hf":
        import datasets

        return datasets.load_from_disk(str(path / split)).to_list()
    import pyarrow.parquet as pq

    return pq.read_table(path / split / "data.parquet").to_pylist()


def read_statistics(path: Path) -> dict:
    file = Path(path) / STATS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing; it is written by `mimic_cxr.py create`")
    with open(file) as f:
        return json.load(f)


def image_root(path: Path, override: str | None = None) -> Path:
    """Folder holding p1X/p<subject>/s<study>/<dicom_id>.jpg for a prepared dataset."""
    if override is not None:
        root = Path(override)
    elif (Path(path) / IMAGES_LINK).exists():
        root = Path(path) / IMAGES_LINK
    elif (Path(path) / IMAGES_PATH_FILE).is_file():
        root = Path((Path(path) / IMAGES_PATH_FILE).read_text().strip())
    else:
        raise FileNotFoundError(f"{Path(path) / IMAGES_LINK}: image link missing (broken link or moved "
                                f"MIMIC-CXR-JPG?); pass image_root=<MIMIC-CXR-JPG>/files")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found; pass image_root=<MIMIC-CXR-JPG>/files")
    return root


def link_images(target: Path, images_dir: Path) -> None:
    try:
        os.symlink(images_dir.resolve(), target / IMAGES_LINK, target_is_directory=True)
    except OSError:  # e.g. Windows without developer mode
        (target / IMAGES_PATH_FILE).write_text(str(images_dir.resolve()))


def image_relpath(patient_id: str, study_id: str, dicom_id: str) -> str:
    return f"p{patient_id[:2]}/p{patient_id}/s{study_id}/{dicom_id}.jpg"
