"""Copy a MONAI / Medical Segmentation Decathlon style dataset into nnU-Net v2's raw layout.

    python -m eval3d.nnunet.dataset --json data/btcv/dataset_0.json --out $nnUNet_raw --id 501 --name BTCV

Reads the json VoCo's BTCV fine-tuning reads (`labels` {"0": "background", ...}, `training` and
`validation` lists of {"image", "label"} paths relative to the json's folder or --data_dir) and writes
  Dataset501_BTCV/imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json
with one CT channel. Every labelled case goes to imagesTr (nnU-Net makes its own 5-fold split);
`splits_final.json` beside the output records the json's training / validation split as fold 0, to copy
into $nnUNet_preprocessed/Dataset501_BTCV/ after planning when that split is wanted.
"""

import argparse
import json
import shutil
from pathlib import Path

from shared.genesis.ct_volumes import volume_id


def nnunet_labels(labels):
    """{"0": "background", "1": "spleen"} -> {"background": 0, "spleen": 1} (nnU-Net's direction)."""
    out = {}
    for value, name in sorted(labels.items(), key=lambda item: int(item[0])):
        if name in out:
            raise ValueError(f"label name {name!r} is used twice; nnU-Net needs unique names")
        out[name] = int(value)
    if out.get("background") != 0:
        raise ValueError(f"label 0 must be 'background' for nnU-Net, got {labels.get('0')!r}")
    return out


def convert_dataset(json_file, out_root, dataset_id, name, data_dir=None):
    """Write the nnU-Net raw dataset; returns its folder."""
    json_file = Path(json_file)
    spec = json.loads(json_file.read_text())
    data_dir = Path(data_dir) if data_dir else json_file.parent
    folder = Path(out_root) / f"Dataset{int(dataset_id):03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    split = {}
    for part in ("training", "validation"):
        for item in spec.get(part, []):
            image, label = data_dir / item["image"], data_dir / item["label"]
            for path in (image, label):
                if not path.is_file():
                    raise FileNotFoundError(f"{json_file}: {part} entry {path} not found")
                if not path.name.endswith(".nii.gz"):
                    raise ValueError(f"{json_file}: {path} is not a .nii.gz file (the only ending this writes)")
            case = volume_id(image)
            if case in split:
                raise ValueError(f"{json_file}: case {case!r} is listed twice")
            shutil.copyfile(image, folder / "imagesTr" / f"{case}_0000.nii.gz")
            shutil.copyfile(label, folder / "labelsTr" / f"{case}.nii.gz")
            split[case] = part
    if not split:
        raise ValueError(f"{json_file} lists no training or validation cases")
    dataset = {"channel_names": {"0": "CT"}, "labels": nnunet_labels(spec["labels"]),
               "numTraining": len(split), "file_ending": ".nii.gz", "converted_from": json_file.name}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    fold0 = {"train": [c for c, p in split.items() if p == "training"],
             "val": [c for c, p in split.items() if p == "validation"]}
    (folder / "splits_final.json").write_text(json.dumps([fold0], indent=2))
    return folder


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eval3d.nnunet.dataset", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, help="MONAI / MSD dataset json (VoCo's dataset_0.json)")
    p.add_argument("--out", required=True, help="nnU-Net raw root ($nnUNet_raw)")
    p.add_argument("--id", type=int, required=True, help="nnU-Net dataset id (e.g. 501)")
    p.add_argument("--name", required=True, help="dataset name (e.g. BTCV)")
    p.add_argument("--data_dir", help="folder the json's paths are relative to (default: the json's folder)")
    args = p.parse_args(argv)
    try:
        folder = convert_dataset(args.json, args.out, args.id, args.name, args.data_dir)
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"error: {err}") from err
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
