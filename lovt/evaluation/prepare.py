"""Prepare LoVT's downstream datasets from their raw layouts.

    python -m lovt.evaluation.prepare rsna   <RSNA-Pneunomia-Detection>  [--val_percentage 0.2 --test_percentage 0.2]
    python -m lovt.evaluation.prepare covid  <.../covid_rural_annot>
    python -m lovt.evaluation.prepare siim   <siim-acr-pneumothorax-segmentation>
    python -m lovt.evaluation.prepare object <object-CXR>                [--val_percentage 0.2]
    python -m lovt.evaluation.prepare nih    <NIH_CXR_pathology_detection> [--include_no_findings 100]
        (images in images/images_XX/images/ as the original, images_XXX/images/ as Kaggle's download,
        or one flat images/ folder as NIH's tarballs; Data_Entry_2017_v2020.csv or Data_Entry_2017.csv)

Each writes train.csv, validation.csv, test.csv, dataset_statistics.json and the processed images/masks
into the dataset folder (or `--out`), as the original scripts. `--seed` (default 12345, so that two
preparations of the same data give the same split; the original drew a new split on every call) fixes the
random split;
`--splits_from <folder>` takes the split membership from the original repository's official csv files
(datasets/<name>/{train,validation,test}.csv) instead, so the published splits are reproduced while the
boxes come from the raw annotations. Unreadable images are skipped with a warning; the command line
prints how many and which at the end.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import csv
import json
import math
import shutil
import warnings
from collections import OrderedDict

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from lovt.evaluation.data import NIH_CLASSES

STATS_FILE = "dataset_statistics.json"
DEFAULT_SEED = 12345  # LoVT's seed; a fixed default so that preparing twice gives the same split
SKIPPED = []  # (file, reason) of every image skipped by this process's preparations, in order


def equalize_hist(img, nbins=256):
    """skimage.exposure.equalize_hist for a float image: 256-bin histogram over [min, max], the normalized
    cumulative histogram interpolated at each pixel (skimage is used when installed)."""
    try:
        from skimage import exposure
        return exposure.equalize_hist(img, nbins=nbins)
    except ImportError:
        pass
    hist, edges = np.histogram(img.ravel(), bins=nbins, range=(float(img.min()), float(img.max())))
    cdf = np.cumsum(hist) / float(hist.sum())
    return np.interp(img.ravel(), (edges[:-1] + edges[1:]) / 2, cdf).reshape(img.shape)


def save_equalized(img01, target, fmt):
    """Equalize a [0, 1] grey image, save it as 8-bit; returns (mean, var, shape) of the equalized floats."""
    eq = equalize_hist(img01)
    Image.fromarray((255 * eq).astype(np.uint8)).convert("L").save(target, format=fmt)
    return float(eq.mean()), float(eq.var()), eq.shape


def read_dicom(path):
    import pydicom
    return pydicom.dcmread(str(path)).pixel_array


def split_stats(means, variances, **extra):
    """num_samples and scan pixel_mean / pixel_std = sqrt(mean of variances + variance of means)."""
    means, variances = np.asarray(means, float), np.asarray(variances, float)
    mean = float(means.mean()) if len(means) else 0.0
    std = math.sqrt(float(variances.mean() + means.var())) if len(means) else 0.0
    return {"num_samples": len(means), "scan": {"pixel_mean": mean, "pixel_std": std}, **extra}


def write_detection_csv(path, samples):
    """Rows 'ID,boxes,classes'; boxes 'x;y;w;h' joined by '|', classes joined by '|'."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "boxes", "classes"])
        for sample_id, boxes, classes in samples:
            w.writerow([sample_id, "|".join(";".join(str(v) for v in b) for b in boxes),
                        "|".join(str(int(c)) for c in classes)])


def write_id_csv(path, ids):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID"])
        w.writerows([i] for i in ids)


def box_mask(boxes, shape, path):
    """Union of (x, y, w, h) boxes (rows round(y):round(y+h), cols round(x):round(x+w)) as a 0/255 GIF."""
    mask = np.zeros(shape, np.uint8)
    for x, y, w, h in boxes:
        mask[round(y):round(y + h), round(x):round(x + w)] = 1
    Image.fromarray(mask * 255).save(path, format="GIF")
    return mask


def random_split(n, val, test, rng):
    """Indices (train, validation, test) of a random permutation: first round(test n), then round(val n)."""
    perm = rng.permutation(n)
    n_test, n_val = round(test * n), round(val * n)
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def split_by_patients(by_patient, val, test, rng):
    """Patient-level split: patients in random order go to test until it holds >= round(test N) images,
    then to validation likewise; the rest is train. Returns {split: [patient ids]}."""
    patients = list(by_patient)
    counts = [len(by_patient[p]) for p in patients]
    perm, total, i = rng.permutation(len(patients)), sum(counts), 0
    out = {}
    for split, fraction in (("test", test), ("validation", val)):
        out[split], n = [], 0
        while n < round(fraction * total) and i < len(perm):
            out[split].append(patients[perm[i]])
            n += counts[perm[i]]
            i += 1
    out["train"] = [patients[j] for j in perm[i:]]
    return out


def official_splits(folder):
    """{split: [ids]} from the original repository's split csv files."""
    out = {}
    for split in ("train", "validation", "test"):
        path = Path(folder) / f"{split}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"--splits_from: {path} not found")
        out[split] = pd.read_csv(path, dtype={"ID": str})["ID"].tolist()
    return out


def assign_official(ids, folder):
    """Split membership by the official files; ids missing there are dropped (warned)."""
    official = official_splits(folder)
    known = set(ids)
    result = {s: [i for i in official[s] if i in known] for s in official}
    missing = len(known) - sum(len(v) for v in result.values())
    if missing:
        warnings.warn(f"{missing} prepared images are in no official split of {folder}; they are left out",
                      stacklevel=2)
    return result


def split_indices(ids, splits_from, val_percentage, test_percentage, seed):
    """{split: row indices of `ids`}: from the official csv files in `splits_from`, else a seeded random split."""
    if splits_from:
        members = assign_official(ids, splits_from)
        index = {key: k for k, key in enumerate(ids)}
        return {s: [index[key] for key in members[s]] for s in members}
    tr, va, te = random_split(len(ids), val_percentage, test_percentage, np.random.RandomState(seed))
    return {"train": tr, "validation": va, "test": te}


def write_json(path, stats):
    Path(path).write_text(json.dumps(stats))


def _skip(path, err):
    SKIPPED.append((str(path), str(err)))
    warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=3)  # the caller of prepare_*


# ---------------------------------------------------------------------------------------------- RSNA
def prepare_rsna(path, out=None, val_percentage=0.2, test_percentage=0.2, seed=DEFAULT_SEED, splits_from=None):
    """stage_2_train_images/<pid>.dcm + stage_2_train_labels.csv -> PNGs unchanged, box masks, 60/20/20."""
    path, out = Path(path), Path(out or path)
    labels = pd.read_csv(path / "stage_2_train_labels.csv")
    patients = OrderedDict()  # the first row of a patient decides its label
    for row in labels.itertuples(index=False):
        entry = patients.setdefault(row.patientId, {"label": int(row.Target), "boxes": []})
        if entry["label"] == 1:
            entry["boxes"].append((float(row.x), float(row.y), float(row.width), float(row.height)))
    (out / "stage_2_train_images_processed").mkdir(parents=True, exist_ok=True)
    (out / "stage_2_train_masks").mkdir(parents=True, exist_ok=True)
    samples, means, variances = [], [], []
    for pid, entry in tqdm(patients.items(), desc="RSNA images"):
        src = path / "stage_2_train_images" / f"{pid}.dcm"
        try:
            pixels = read_dicom(src)
        except Exception as e:  # noqa: BLE001 - any unreadable DICOM is skipped
            _skip(src, e)
            continue
        if pixels.dtype != np.uint8:
            warnings.warn(f"{src}: {pixels.dtype} pixels clipped to 8 bit (RSNA images are 8-bit)", stacklevel=2)
            pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / "stage_2_train_images_processed" / f"{pid}.png", format="PNG")
        box_mask(entry["boxes"], pixels.shape, out / "stage_2_train_masks" / f"{pid}.gif")
        img = pixels.astype(float) / 255.0
        samples.append((pid, entry["boxes"], [entry["label"]] * len(entry["boxes"])))
        means.append(img.mean())
        variances.append(img.var())
    ids = [s[0] for s in samples]
    parts = split_indices(ids, splits_from, val_percentage, test_percentage, seed)
    stats = {}
    for split, idx in parts.items():
        chosen = [samples[i] for i in idx]
        write_detection_csv(out / f"{split}.csv", chosen)
        stats[split] = split_stats([means[i] for i in idx], [variances[i] for i in idx],
                                   patient_ids=[s[0] for s in chosen])
    write_json(out / STATS_FILE, stats)
    return out


# ------------------------------------------------------------------------------------------- COVID
def prepare_covid(path, out=None, val_percentage=0.2, test_percentage=0.2, seed=DEFAULT_SEED, splits_from=None):
    """jpgs/COVID-19-AR-*.jpg + pngs_masks/<same>.png -> equalized JPEGs; patient-level split."""
    path, out = Path(path), Path(out or path)
    (out / "processed_images").mkdir(parents=True, exist_ok=True)
    by_patient, info = OrderedDict(), {}
    for src in tqdm(sorted((path / "jpgs").glob("*.jpg")), desc="COVID images"):
        name = src.stem
        mask_path = path / "pngs_masks" / f"{name}.png"
        if not mask_path.is_file():
            continue  # images without a mask are not part of the dataset
        if not name.startswith("COVID-19-AR-"):
            warnings.warn(f"{src}: not a COVID-19-AR-* image name", stacklevel=2)
        try:
            img = np.asarray(Image.open(src), dtype=float) / 255.0
            mask = np.asarray(Image.open(mask_path))
        except OSError as e:
            _skip(src, e)
            continue
        if img.ndim == 3:  # the JPEGs are stored as colour images
            img = img[..., :3].mean(axis=-1)
        if mask.shape != img.shape or not set(np.unique(mask)) <= {0, 1}:
            _skip(mask_path, f"mask of shape {mask.shape} with values {np.unique(mask)[:5]} for an image of "
                             f"shape {img.shape} (expected 0/1)")
            continue
        mean, var, _ = save_equalized(img, out / "processed_images" / f"{name}.jpg", "JPEG")
        if out != path:
            (out / "pngs_masks").mkdir(exist_ok=True)
            shutil.copyfile(mask_path, out / "pngs_masks" / f"{name}.png")
        by_patient.setdefault(name.split("_")[0], []).append(name)
        info[name] = (mean, var, 1.0 - float(mask.mean()))
    if splits_from:
        members = assign_official(list(info), splits_from)
        splits = {s: members[s] for s in members}
        patient_ids = {s: list(OrderedDict.fromkeys(n.split("_")[0] for n in v)) for s, v in splits.items()}
    else:
        patient_ids = split_by_patients(by_patient, val_percentage, test_percentage, np.random.RandomState(seed))
        splits = {s: [n for p in patient_ids[s] for n in by_patient[p]] for s in patient_ids}
    stats = {}
    for split in ("train", "validation", "test"):
        names = splits[split]
        write_id_csv(out / f"{split}.csv", names)
        stats[split] = split_stats([info[n][0] for n in names], [info[n][1] for n in names],
                                   segmentation_pos_weights={"opacity": float(np.mean([info[n][2] for n in names]))
                                                             if names else None},
                                   patient_ids=patient_ids[split])
    write_json(out / STATS_FILE, stats)
    return out


# -------------------------------------------------------------------------------------------- SIIM
def rle_to_mask(rle, height, width):
    """SIIM's relative RLE (pairs: start offset from the previous run's end, length) over the column-major
    image; '-1' is an empty mask."""
    flat = np.zeros(height * width, np.uint8)
    values = [int(v) for v in str(rle).split()]
    if values != [-1]:
        pos = 0
        for start, length in zip(values[0::2], values[1::2]):
            pos += start
            flat[pos:pos + length] = 1
            pos += length
    return flat.reshape(width, height).T


def prepare_siim(path, out=None, val_percentage=0.2, test_percentage=0.2, seed=DEFAULT_SEED, splits_from=None):
    """dicom-images-train/*/*/<ImageId>.dcm + train-rle.csv -> equalized PNGs, OR-ed RLE masks, 60/20/20."""
    path, out = Path(path), Path(out or path)
    rles = pd.read_csv(path / "train-rle.csv")
    rles.columns = ["ImageId", "EncodedPixels"]  # the csv's second header has a leading space
    by_image = OrderedDict()
    for row in rles.itertuples(index=False):
        by_image.setdefault(row.ImageId, []).append(str(row.EncodedPixels).strip())
    files = {p.stem: p for p in (path / "dicom-images-train").glob("*/*/*.dcm")}
    (out / "processed_images").mkdir(parents=True, exist_ok=True)
    (out / "segmentation_masks").mkdir(parents=True, exist_ok=True)
    ids, means, variances, positive, odd_sizes = [], [], [], [], set()
    for image_id, encoded in tqdm(by_image.items(), desc="SIIM images"):
        src = files.get(image_id)
        try:
            if src is None:
                raise FileNotFoundError("no DICOM with this ImageId under dicom-images-train/*/*/")
            img = read_dicom(src).astype(float) / 255.0
        except Exception as e:  # noqa: BLE001
            _skip(src or image_id, e)
            continue
        if img.shape != (1024, 1024) and img.shape not in odd_sizes:
            odd_sizes.add(img.shape)
            warnings.warn(f"{src}: {img.shape} image (SIIM images are 1024x1024); RLEs are read at the image size",
                          stacklevel=2)
        mean, var, shape = save_equalized(img, out / "processed_images" / f"{image_id}.png", "PNG")
        mask = np.zeros(shape, np.uint8)
        for rle in encoded:
            mask |= rle_to_mask(rle, *shape)
        Image.fromarray(mask * 255).save(out / "segmentation_masks" / f"{image_id}.gif", format="GIF")
        ids.append(image_id)
        means.append(mean)
        variances.append(var)
        positive.append(float(mask.mean()))
    parts = split_indices(ids, splits_from, val_percentage, test_percentage, seed)
    stats = {}
    for split, idx in parts.items():
        write_id_csv(out / f"{split}.csv", [ids[i] for i in idx])
        p = float(np.mean([positive[i] for i in idx])) if len(idx) else 0.0
        stats[split] = split_stats([means[i] for i in idx], [variances[i] for i in idx],
                                   segmentation_pos_weights={"pneumothorax": (1 - p) / p if p > 0 else None})
    write_json(out / STATS_FILE, stats)
    return out


# -------------------------------------------------------------------------------------- Object-CXR
def parse_object_annotation(annotation, original_bugs=False):
    """'type coords...' items separated by ';' (0 box, 1 ellipse: x1 y1 x2 y2; 2 polygon: x y x y ...)
    -> [(type, x1, y1, x2, y2, polygon points or None)]."""
    out = []
    for item in (annotation or "").split(";"):
        if not item.strip():
            continue
        kind, *coords = [int(float(v)) for v in item.split()]
        if kind in (0, 1):
            if len(coords) != 4:
                raise ValueError(f"annotation {item!r}: a box/ellipse needs 4 coordinates")
            out.append((kind, *coords, None))
        elif kind == 2:
            xs, ys = coords[0::2], coords[1::2]
            out.append((kind, min(xs), min(ys), max(xs), max(ys), list(zip(xs, ys))))
        else:
            raise ValueError(f"annotation {item!r}: unknown type {kind}")
    return out


def object_boxes(objects, original_bugs=False):
    """(x, y, w, h) boxes; with `original_bugs` the original's (x, y, h, w) (width and height swapped)."""
    return [(x1, y1, y2 - y1, x2 - x1) if original_bugs else (x1, y1, x2 - x1, y2 - y1)
            for _, x1, y1, x2, y2, _ in objects]


def object_mask(objects, shape, original_bugs=False):
    """Boxes and ellipses filled as their rectangles (as the original), polygons filled; with
    `original_bugs` polygon points are given to cv2 as (y, x), as the original does."""
    import cv2
    mask = np.zeros(shape, np.uint8)
    for kind, x1, y1, x2, y2, points in objects:
        if kind in (0, 1):
            mask[round(y1):round(y2), round(x1):round(x2)] = 1
        else:
            pts = [(y, x) for x, y in points] if original_bugs else points
            cv2.fillPoly(mask, [np.array(pts, dtype=np.int32)], 1)
    return mask


def prepare_object_cxr(path, out=None, val_percentage=0.2, seed=DEFAULT_SEED, splits_from=None, original_bugs=False):
    """input/{train,dev}.csv + input/{train,dev}/*.jpg -> equalized JPEGs, box csvs, masks;
    train split of the challenge -> train/validation, dev -> test."""
    from sklearn.model_selection import train_test_split

    path, out = Path(path), Path(out or path)
    train_df = pd.read_csv(path / "input" / "train.csv", dtype=str).fillna("")
    test_df = pd.read_csv(path / "input" / "dev.csv", dtype=str).fillna("")
    if splits_from:
        members = official_splits(splits_from)
        ids = train_df["image_name"].str[:-len(".jpg")]
        train_df, val_df = train_df[ids.isin(members["train"])], train_df[ids.isin(members["validation"])]
    else:
        train_df, val_df = train_test_split(train_df, test_size=val_percentage, random_state=seed)
    (out / "images_processed").mkdir(parents=True, exist_ok=True)
    (out / "segmentation_masks").mkdir(parents=True, exist_ok=True)
    stats = {}
    for split, df, folder in (("train", train_df, "train"), ("validation", val_df, "train"), ("test", test_df, "dev")):
        samples, means, variances = [], [], []
        for row in tqdm(df.itertuples(index=False), total=len(df), desc=f"object-CXR {split}"):
            image_id = row.image_name[:-len(".jpg")]
            src = path / "input" / folder / row.image_name
            try:
                img = np.asarray(Image.open(src).convert("L"), dtype=float) / 255.0
                objects = parse_object_annotation(row.annotation)
            except (OSError, ValueError) as e:
                _skip(src, e)
                continue
            mean, var, shape = save_equalized(img, out / "images_processed" / f"{image_id}.jpg", "JPEG")
            mask = object_mask(objects, shape, original_bugs)
            Image.fromarray(mask * 255).save(out / "segmentation_masks" / f"{image_id}.gif", format="GIF")
            boxes = object_boxes(objects, original_bugs)
            samples.append((image_id, boxes, [1] * len(boxes)))
            means.append(mean)
            variances.append(var)
        write_detection_csv(out / f"{split}.csv", samples)
        stats[split] = split_stats(means, variances, patient_ids=None)
    write_json(out / STATS_FILE, stats)
    return out


# -------------------------------------------------------------------------------- NIH ChestX-ray14
# Where the PNGs may sit under the NIH folder, in the order tried: the original's arrangement, Kaggle's
# nih-chest-xrays/data download (images_001/images/ ... images_012/images/), and NIH's own tarballs
# (images_001.tar.gz ... each extracts into one flat images/ folder).
NIH_IMAGE_FOLDERS = ([f"images/images_{i:02d}/images" for i in range(1, 13)],
                     [f"images_{i:03d}/images" for i in range(1, 13)],
                     ["images"])
NIH_DATA_ENTRY = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # the original's name, then Kaggle's


def find_nih_image(path, image_id):
    """The one `<image_id>.png` of the first layout of NIH_IMAGE_FOLDERS that has it."""
    for folders in NIH_IMAGE_FOLDERS:
        found = [f for folder in folders if (f := path / folder / f"{image_id}.png").is_file()]
        if len(found) > 1:
            raise FileNotFoundError(f"{image_id}.png found {len(found)} times under {path}: "
                                    + ", ".join(str(f.parent) for f in found) + " (exactly one expected)")
        if found:
            return found[0]
    raise FileNotFoundError(f"{image_id}.png not found under {path} (looked in images/images_XX/images/, "
                            "images_XXX/images/ and images/)")


def nih_data_entry(path):
    for name in NIH_DATA_ENTRY:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: neither {' nor '.join(NIH_DATA_ENTRY)} found (needed for the "
                            "'No Finding' images; or pass include_no_findings=0)")


def prepare_nih(path, out=None, val_percentage=0.2, test_percentage=0.2, include_no_findings=100, seed=DEFAULT_SEED,
                splits_from=None):
    """BBox_List_2017.csv images (+ `include_no_findings` 'No Finding' test-list images) -> equalized PNGs,
    per-class box masks; patient-level split done separately for annotated and no-finding images."""
    path, out = Path(path), Path(out or path)
    rng = np.random.RandomState(seed)
    bbox = pd.read_csv(path / "BBox_List_2017.csv")
    annotated = OrderedDict()
    for row in bbox.itertuples(index=False):
        label = row[1]
        if label not in NIH_CLASSES:
            raise ValueError(f"{path / 'BBox_List_2017.csv'}: unknown finding label {label!r}")
        entry = annotated.setdefault(row[0][:-len(".png")], ([], []))
        entry[0].append(tuple(float(v) for v in row[2:6]))
        entry[1].append(NIH_CLASSES.index(label))
    groups = [annotated]
    if include_no_findings > 0:
        test_ids = set((path / "test_list.txt").read_text().split())
        entries = pd.read_csv(nih_data_entry(path))
        pool = entries[(entries["Finding Labels"] == "No Finding") & entries["Image Index"].isin(test_ids)]
        if len(pool) < include_no_findings:
            warnings.warn(f"only {len(pool)} 'No Finding' test images, fewer than {include_no_findings}", stacklevel=2)
        chosen = pool.sample(min(include_no_findings, len(pool)), random_state=rng)["Image Index"]
        groups.append(OrderedDict((i[:-len(".png")], ([], [])) for i in chosen))
    if splits_from:
        everything = OrderedDict((k, v) for g in groups for k, v in g.items())
        members = assign_official(list(everything), splits_from)
        split_ids = {s: members[s] for s in members}
        patients = {s: list(OrderedDict.fromkeys(int(i.split("_")[0]) for i in v)) for s, v in split_ids.items()}
    else:
        split_ids = {s: [] for s in ("train", "validation", "test")}
        patients = {s: [] for s in split_ids}
        for group in groups:
            by_patient = OrderedDict()
            for image_id in group:
                pid = image_id.split("_")[0]
                if len(pid) != 8:
                    raise ValueError(f"{image_id}: NIH image names start with an 8-digit patient id")
                by_patient.setdefault(int(pid), []).append(image_id)
            parts = split_by_patients(by_patient, val_percentage, test_percentage, rng)
            for s in parts:
                patients[s] += parts[s]
                split_ids[s] += [i for p in parts[s] for i in by_patient[p]]
    targets = OrderedDict((k, v) for g in groups for k, v in g.items())
    (out / "processed_images").mkdir(parents=True, exist_ok=True)
    for c in NIH_CLASSES:
        (out / "segmentation_masks" / c).mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in ("train", "validation", "test"):
        samples, means, variances = [], [], []
        for image_id in tqdm(split_ids[split], desc=f"NIH {split}"):
            try:
                src = find_nih_image(path, image_id)
                img = np.asarray(Image.open(src).convert("L"), dtype=float) / 255.0
            except (OSError, FileNotFoundError) as e:
                _skip(image_id, e)
                continue
            mean, var, shape = save_equalized(img, out / "processed_images" / f"{image_id}.png", "PNG")
            boxes, labels = targets[image_id]
            for c, name in enumerate(NIH_CLASSES):
                box_mask([b for b, k in zip(boxes, labels) if k == c], shape,
                         out / "segmentation_masks" / name / f"{image_id}.gif")
            samples.append((image_id, boxes, labels))
            means.append(mean)
            variances.append(var)
        write_detection_csv(out / f"{split}.csv", samples)
        stats[split] = split_stats(means, variances, patient_ids=patients[split])
    write_json(out / STATS_FILE, stats)
    return out


PREPARE = {"rsna": prepare_rsna, "covid": prepare_covid, "siim": prepare_siim, "object": prepare_object_cxr,
           "nih": prepare_nih}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(PREPARE))
    p.add_argument("path", help="the raw dataset folder")
    p.add_argument("--out", default=None, help="write the prepared files here instead of into `path`")
    p.add_argument("--val_percentage", type=float, default=0.2)
    p.add_argument("--test_percentage", type=float, default=0.2, help="(not object)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"random split (default {DEFAULT_SEED}: the same split on every call)")
    p.add_argument("--splits_from", default=None, help="folder with the official train/validation/test.csv")
    p.add_argument("--include_no_findings", type=int, default=100, help="(nih)")
    p.add_argument("--original_bugs", action="store_true",
                   help="(object) reproduce the original's swapped box width/height and polygon x/y")
    a = p.parse_args(argv)
    if a.val_percentage + (0 if a.dataset == "object" else a.test_percentage) >= 1:
        p.error("val_percentage + test_percentage must be < 1")
    kwargs = dict(out=a.out, val_percentage=a.val_percentage, seed=a.seed, splits_from=a.splits_from)
    if a.dataset != "object":
        kwargs["test_percentage"] = a.test_percentage
    if a.dataset == "nih":
        kwargs["include_no_findings"] = a.include_no_findings
    if a.dataset == "object":
        kwargs["original_bugs"] = a.original_bugs
    SKIPPED.clear()
    folder = PREPARE[a.dataset](a.path, **kwargs)
    stats = json.loads((folder / STATS_FILE).read_text())
    print(f"prepared {folder}: " + ", ".join(f"{s} {v['num_samples']}" for s, v in stats.items()))
    if SKIPPED:
        print(f"skipped {len(SKIPPED)} unreadable image(s): " + ", ".join(f for f, _ in SKIPPED[:20])
              + (f" and {len(SKIPPED) - 20} more" if len(SKIPPED) > 20 else ""))


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one line per warning, no source line
    main()
