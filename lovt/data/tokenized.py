"""Reports tokenised once at preparation, so that training never runs the tokenizer per step.

    python lovt/data/prepare_cache.py --path <dataset> --tokenizer emilyalsentzer/Bio_ClinicalBERT --max_length 512

writes, per split, the token ids of every report sentence exactly as `ReportTokenizer` would produce them (each
sentence tokenised alone, no special tokens, truncated to max_length - 2), memory-mappable:

    <dataset>/tokenized/<key>/meta.json               tokenizer name, key, max_length, studies per split
    <dataset>/tokenized/<key>/<split>/ids.npy         int32, all sentences' tokens one after the other
    <dataset>/tokenized/<key>/<split>/sentences.npy   int64 (num_sentences + 1,): token offsets of the sentences
    <dataset>/tokenized/<key>/<split>/studies.npy     int64 (num_studies + 1,): sentence offsets of the studies

<key> = <tokenizer folder name>-L<max_length>-<hash of the tokenizer's vocabulary, normaliser and model>, so a
changed tokenizer or max_length finds no stored ids (and says how to write them) instead of reusing stale ones.
The packing into [CLS] s_1 s_2 ... [SEP] (whole-sentence truncation) happens per batch (`ReportTokenizer.pack`),
after the sentence-level augmentation, which works on sentence indices.
"""
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from lovt.data import storage

TOKENIZED_DIR = "tokenized"
META_FILE = "meta.json"


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of what decides the ids: vocabulary, added tokens, normaliser (lower-casing), pre-tokeniser, model.

    Fast tokenizers hash their serialised pipeline minus the truncation/padding state (which the tokenizer's own
    calls change); slow ones their class, vocabulary and lower-casing.
    """
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:
        h.update(type(tokenizer).__name__.encode())
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        h.update(str(getattr(tokenizer, "do_lower_case", None)).encode())
    return h.hexdigest()[:16]


def tokenized_key(tokenizer, max_length: int) -> str:
    name = Path(str(getattr(tokenizer, "name_or_path", "") or "tokenizer").rstrip("/")).name or "tokenizer"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return f"{name}-L{int(max_length)}-{tokenizer_fingerprint(tokenizer)}"


def tokenized_folder(dataset_path, tokenizer, max_length: int) -> Path:
    return Path(dataset_path) / TOKENIZED_DIR / tokenized_key(tokenizer, max_length)


def read_split_columns(path, split: str, columns: list) -> dict:
    """{flat name: python list} of some storage.ROW_COLUMNS of one split, read column-wise (fast on 200k studies)."""
    path, split = Path(path), storage.normalize_split(split)
    nested = [storage.ROW_COLUMNS[c] for c in columns]
    if storage.detect_format(path) == "hf":
        import datasets

        table = datasets.load_from_disk(str(path / split)).flatten().select_columns(nested).with_format("arrow")[:]
        return {c: table.column(n).to_pylist() for c, n in zip(columns, nested)}
    import pyarrow.parquet as pq

    file = path / split / "data.parquet"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: split {split!r} missing from the prepared dataset")
    table = pq.read_table(file, columns=nested)  # nested columns come back under their leaf names
    return {c: table.column(n.split(".")[-1]).to_pylist() for c, n in zip(columns, nested)}


def _save_npy(file: Path, array: np.ndarray) -> None:
    tmp = file.with_name(file.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, file)  # never a half-written array


def write_tokenized(dataset_path, tokenizer, max_length: int = 512, chunk: int = 4096, overwrite: bool = False) -> Path:
    """Tokenises every sentence of every split once; returns the folder. Existing complete output is kept."""
    dataset_path = Path(dataset_path)
    storage.detect_format(dataset_path)
    folder = tokenized_folder(dataset_path, tokenizer, max_length)
    if (folder / META_FILE).is_file() and not overwrite:
        return folder
    max_content = int(max_length) - 2
    meta = {"tokenizer": str(getattr(tokenizer, "name_or_path", "")), "key": folder.name,
            "max_length": int(max_length), "fingerprint": tokenizer_fingerprint(tokenizer),
            "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id, "splits": {}}
    for split in storage.SPLITS:
        if not (dataset_path / split).is_dir():
            continue
        cols = read_split_columns(dataset_path, split, ["study_id", "sentences"])
        flat = [s for sentences in cols["sentences"] for s in sentences]
        ids = []
        for start in range(0, len(flat), chunk):
            ids += tokenizer(flat[start: start + chunk], add_special_tokens=False, truncation=True,
                             max_length=max_content)["input_ids"]
        sentence_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in ids], out=sentence_offsets[1:])
        study_offsets = np.zeros(len(cols["sentences"]) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in cols["sentences"]], out=study_offsets[1:])
        (folder / split).mkdir(parents=True, exist_ok=True)
        all_ids = np.fromiter((t for s in ids for t in s), dtype=np.int32, count=int(sentence_offsets[-1]))
        _save_npy(folder / split / "ids.npy", all_ids)
        _save_npy(folder / split / "sentences.npy", sentence_offsets)
        _save_npy(folder / split / "studies.npy", study_offsets)
        meta["splits"][split] = {"studies": len(cols["study_id"]), "sentences": len(ids),
                                 "tokens": int(sentence_offsets[-1]), "study_ids": _ids_digest(cols["study_id"])}
    tmp = folder / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / META_FILE)  # written last: its presence means the folder is complete
    return folder


def _ids_digest(study_ids: list) -> str:
    return hashlib.sha256("\n".join(map(str, study_ids)).encode()).hexdigest()[:16]


class TokenizedReports:
    """The stored sentence token ids of one split: reports[i] -> list of int32 arrays (one per sentence).

    Raises FileNotFoundError (with the command that writes them) when nothing is stored for this tokenizer and
    max_length, and ValueError when the stored ids belong to another version of the dataset.
    """

    def __init__(self, dataset_path, split: str, tokenizer, max_length: int = 512, study_ids: list | None = None):
        split = storage.normalize_split(split)
        folder = tokenized_folder(dataset_path, tokenizer, max_length)
        if not (folder / META_FILE).is_file():
            name = getattr(tokenizer, "name_or_path", "<tokenizer>")
            raise FileNotFoundError(
                f"{folder}: no reports tokenised for this tokenizer and max_length={max_length}; write them with "
                f"`python lovt/data/prepare_cache.py --path {dataset_path} --tokenizer {name} "
                f"--max_length {max_length}` (or use data_path=files)")
        meta = json.loads((folder / META_FILE).read_text())
        if split not in meta["splits"]:
            raise FileNotFoundError(f"{folder}: split {split!r} was not tokenised (rerun prepare_cache.py)")
        self.folder, self.meta = folder, meta
        self.ids = np.load(folder / split / "ids.npy", mmap_mode="r")
        self.sentence_offsets = np.load(folder / split / "sentences.npy")
        self.study_offsets = np.load(folder / split / "studies.npy")
        if study_ids is not None and (len(study_ids) != len(self)
                                      or _ids_digest(study_ids) != meta["splits"][split]["study_ids"]):
            raise ValueError(f"{folder / split}: the stored token ids belong to another version of the dataset "
                             f"({len(self)} studies stored, {len(study_ids)} now); rerun prepare_cache.py "
                             f"with --overwrite")

    def __len__(self) -> int:
        return len(self.study_offsets) - 1

    def num_sentences(self, i: int) -> int:
        return int(self.study_offsets[i + 1] - self.study_offsets[i])

    def __getitem__(self, i: int) -> list:
        first, last = self.study_offsets[i], self.study_offsets[i + 1]
        bounds = self.sentence_offsets[first: last + 1]
        return [np.asarray(self.ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
