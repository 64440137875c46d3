"""Write ChestX-ray14 image lists in the format DiRA and the transfer benchmark read:
`<image file> <14 labels 0/1>` per line, labels in the order of dira.data.CHESTXRAY14_LABELS.

    python dira/prepare_chestxray14.py <NIH root> --out dataset

<NIH root> holds Data_Entry_2017.csv, train_val_list.txt and test_list.txt (as downloaded). The official
test list becomes Xray14_test_official.txt; train_val is split patient-wise into train and val. The
original's split files (75,312 / 11,212 images, 12.96 % val) are not redistributed here: if you have
them, pass them to train.py directly; this script's split is seeded and patient-disjoint like theirs.

    python dira/prepare_chestxray14.py <NIH root> --out dataset --cache cache [--cache_size 512]

also decodes the train and val lists' images once into image caches under `cache/` (for
`train.py --data_path cache`; see dira/README.md). Unreadable or missing images are named and skipped.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import random

from dira.data import CHESTXRAY14_LABELS


def read_entries(csv_path):
    """{image name: (patient id, set of findings)} from Data_Entry_2017.csv."""
    entries = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            findings = {x.strip() for x in row["Finding Labels"].split("|")} - {"No Finding", ""}
            unknown = findings - set(CHESTXRAY14_LABELS)
            if unknown:
                raise ValueError(f"{csv_path}: {row['Image Index']} has unknown findings {sorted(unknown)}")
            entries[row["Image Index"]] = (row["Patient ID"], findings)
    if not entries:
        raise ValueError(f"{csv_path} has no rows")
    return entries


def line(name, findings):
    return name + " " + " ".join("1" if label in findings else "0" for label in CHESTXRAY14_LABELS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="ChestX-ray14 root with Data_Entry_2017.csv, train_val_list.txt, test_list.txt")
    p.add_argument("--out", default="dataset", help="folder for Xray14_{train,val,test}_official.txt")
    p.add_argument("--val_fraction", type=float, default=0.13, help="share of train_val patients for val")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="also write decode-once image caches of the train and val lists under DIR")
    p.add_argument("--cache_size", type=int, default=512, help="shorter side of the cached images in px")
    p.add_argument("--images", default=None, help="image folder for --cache (default <root>/images)")
    p.add_argument("--cache_workers", type=int, default=0, help="decoding processes for --cache (0: this one)")
    args = p.parse_args(argv)
    root = Path(args.root)
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        if not (root / name).is_file():
            raise SystemExit(f"{root / name} is missing")
    entries = read_entries(root / "Data_Entry_2017.csv")
    splits = {}
    for name in ("train_val_list.txt", "test_list.txt"):
        images = (root / name).read_text().split()
        missing = [i for i in images if i not in entries]
        if missing:
            raise SystemExit(f"{root / name}: {len(missing)} images not in Data_Entry_2017.csv, e.g. {missing[:3]}")
        splits[name] = images
    patients = sorted({entries[i][0] for i in splits["train_val_list.txt"]})
    random.Random(args.seed).shuffle(patients)
    val_patients = set(patients[:round(len(patients) * args.val_fraction)])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lists = {"train": [i for i in splits["train_val_list.txt"] if entries[i][0] not in val_patients],
             "val": [i for i in splits["train_val_list.txt"] if entries[i][0] in val_patients],
             "test": splits["test_list.txt"]}
    for split, images in lists.items():
        path = out / f"Xray14_{split}_official.txt"
        path.write_text("\n".join(line(i, entries[i][1]) for i in images) + "\n")
        print(f"{path}: {len(images)} images")
    if args.cache:
        from dira.cache_data import build_list_cache

        images_dir = args.images or str(root / "images")
        for split in ("train", "val"):
            build_list_cache(images_dir, out / f"Xray14_{split}_official.txt", args.cache, args.cache_size,
                             workers=args.cache_workers)


if __name__ == "__main__":
    main()
