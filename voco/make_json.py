"""Write a VoCo pre-training list (the original jsons/*.json format) from any folder of NIfTI volumes.

    python voco/make_json.py data/TCIAcovid19 --out jsons/tcia.json [--val_fraction 0.06]

Paths are stored relative to the folder (pass it as --data_dir to train.py): {"training": [{"image":
"sub/x.nii.gz"}, ...], "validation": [...]}. Files under a `labels*` folder are left out.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import random


def find_volumes(root):
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith((".nii", ".nii.gz"))
                   and not any(part.lower().startswith("label") for part in p.relative_to(root).parts[:-1]))
    if not files:
        raise FileNotFoundError(f"{root}: no .nii or .nii.gz files")
    return [p.relative_to(root).as_posix() for p in files]


def make_json(root, out, val_fraction=0.0, seed=0):
    files = find_volumes(root)
    random.Random(seed).shuffle(files)
    n_val = int(round(val_fraction * len(files)))
    spec = {"training": [{"image": f} for f in sorted(files[n_val:])],
            "validation": [{"image": f} for f in sorted(files[:n_val])]}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(spec, indent=4) + "\n")
    return spec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="folder searched recursively for .nii/.nii.gz")
    p.add_argument("--out", required=True)
    p.add_argument("--val_fraction", default=0.0, type=float)
    p.add_argument("--seed", default=0, type=int)
    args = p.parse_args(argv)
    spec = make_json(args.root, args.out, args.val_fraction, args.seed)
    print(f"wrote {args.out}: {len(spec['training'])} training, {len(spec['validation'])} validation")


if __name__ == "__main__":
    main()
