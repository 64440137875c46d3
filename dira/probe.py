"""Frozen-feature probe of DiRA encoders on the ChestX-ray14 finding labels (14 labels, multi-label).

The probe set: the images of `Xray14_train_official.txt` (+ `Xray14_val_official.txt`) train the probe,
those of `Xray14_test_official.txt` test it (the official patient-wise split), labels from the lists;
without the lists, `Data_Entry_2017.csv`'s "Finding Labels" with a seeded held-out split. Images are
resized to --img_size and kept in [0, 1] without normalisation, as DiRA's pre-training views. Features:
the ResNet's last stage (layer4), global-average pooled; scores: mean per-label AUROC over the labels
present in both splits (see shared/probe.py).

    python dira/probe.py checkpoint/DiRA_moco/dira/checkpoint.pth --data <ChestX-ray14 root>
    python dira/probe.py --random_init --data <ChestX-ray14 root> -a resnet50
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import csv

import numpy as np
import torch
import torchvision.transforms.functional as TF

from shared.probe import (
    OnlineProbe,
    ProbeSet,
    check_offline_args,
    offline_parser,
    report,
    resnet_trunk,
    split_indices,
    subsample_indices,
)

FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
LISTS = ("Xray14_train_official.txt", "Xray14_val_official.txt", "Xray14_test_official.txt")


def _images_dir(root, images_dir):
    if images_dir is not None:
        return Path(images_dir)
    return root / "images" if (root / "images").is_dir() else root


def _data_entry_labels(csv_path):
    names, labels = [], []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if "Image Index" not in row or "Finding Labels" not in row:
                raise ValueError(f"{csv_path}: needs the columns 'Image Index' and 'Finding Labels'")
            found = set(row["Finding Labels"].split("|"))
            names.append(row["Image Index"])
            labels.append([int(f in found) for f in FINDINGS])
    return names, np.asarray(labels, dtype=np.int64)


def _load(paths, size):
    from dira.data import load_image
    # uint8 in memory (a quarter of float32); the probe's forward scales to [0, 1]
    return torch.stack([TF.pil_to_tensor(TF.resize(load_image(p), [size, size], antialias=True))
                        for p in paths])


def chestxray14_probe_set(root, images_dir=None, img_size=224, max_per_split=300, seed=0):
    """ProbeSet of ChestX-ray14 images (uint8, 3 x size x size) and their 14 finding labels."""
    from dira.data import read_image_list

    root = Path(root)
    images = _images_dir(root, images_dir)
    if (root / LISTS[0]).is_file() and (root / LISTS[2]).is_file():
        parts = [read_image_list(root / name, images) for name in LISTS if (root / name).is_file()]
        train_paths = [p for paths, _ in parts[:-1] for p in paths]
        train_y = np.concatenate([y for _, y in parts[:-1]]).astype(np.int64)
        test_paths, test_y = parts[-1][0], parts[-1][1].astype(np.int64)
        source = "official lists"
    elif (root / "Data_Entry_2017.csv").is_file():
        names, labels = _data_entry_labels(root / "Data_Entry_2017.csv")
        paths = [images / n for n in names]
        keep = [i for i, p in enumerate(paths) if p.is_file()]
        if not keep:
            raise FileNotFoundError(f"{images}: none of the images named in {root / 'Data_Entry_2017.csv'}")
        paths, labels = [paths[i] for i in keep], labels[keep]
        tr, te = split_indices(labels, 0.3, seed)
        train_paths, train_y = [paths[i] for i in tr], labels[tr]
        test_paths, test_y = [paths[i] for i in te], labels[te]
        source = "Data_Entry_2017.csv"
    else:
        raise FileNotFoundError(f"{root}: neither {LISTS[0]} + {LISTS[2]} nor Data_Entry_2017.csv")
    if train_y.shape[1] != len(FINDINGS):
        raise ValueError(f"{root}: the lists hold {train_y.shape[1]} labels per image, expected 14")
    tr, te = subsample_indices(train_y, max_per_split, seed), subsample_indices(test_y, max_per_split, seed)
    return ProbeSet(_load([train_paths[i] for i in tr], img_size), train_y[tr],
                    _load([test_paths[i] for i in te], img_size), test_y[te],
                    name=f"chestxray14 findings ({source})")


def feature_fn(net):
    """x (uint8 or [0, 1] float, N x 3 x H x W) -> the last ResNet stage, for a DiRA U-Net, an smp.Unet,
    an smp encoder or a torchvision ResNet."""
    backbone = getattr(net, "backbone", net)  # DiRAUNet -> its smp.Unet
    encoder = getattr(backbone, "encoder", None)
    if encoder is None:  # a torchvision ResNet: everything up to the global pool
        stages = resnet_trunk(net)
    else:
        def stages(x):
            return encoder(x)[-1]

    def forward(x):
        return stages(x.float() / 255.0 if x.dtype == torch.uint8 else x)
    return forward


# ------------------------------------------------------------------------------------------ online

def add_probe_args(parser):
    parser.add_argument("--probe_every", default=0, type=int,
                        help="probe the frozen query encoder every N epochs (k-NN and linear probe; 0: off)")
    parser.add_argument("--probe_data", default=None, type=str,
                        help="ChestX-ray14 root of the probe set (Xray14_*_official.txt or Data_Entry_2017.csv; "
                             "default: the folder of --train_list, images from DIR)")
    parser.add_argument("--probe_max", default=300, type=int, help="at most this many images per probe split")


def online_probe(args, model, logger, device, main_process):
    """The pre-training's OnlineProbe on the query encoder (no-op unless --probe_every > 0; rank 0)."""
    from dira.models import unet_of
    root = args.probe_data or str(Path(args.train_list).parent)
    images = None if args.probe_data else args.data
    encoder = unet_of(model)
    has_labels = (Path(root) / LISTS[2]).is_file() or (Path(root) / "Data_Entry_2017.csv").is_file()
    if args.probe_every > 0 and main_process and not has_labels:  # fail now, not after the first epoch
        raise FileNotFoundError(f"--probe_every: {root} holds neither {LISTS[0]} + {LISTS[2]} nor "
                                "Data_Entry_2017.csv; give --probe_data <ChestX-ray14 root>")

    def make():
        return chestxray14_probe_set(root, images, args.img_size, args.probe_max, args.seed or 0)
    return OnlineProbe(args.probe_every, make, feature_fn(encoder), logger, device, enabled=main_process,
                       model=encoder, seed=args.seed or 0)


# ----------------------------------------------------------------------------------------- offline

def main(argv=None):
    from dira.transfer import build_resnet, load_into_resnet

    p = offline_parser("DiRA: frozen-feature probe (ChestX-ray14 findings) of a checkpoint",
                       "ChestX-ray14 root: images/ and Xray14_*_official.txt (or Data_Entry_2017.csv)")
    p.add_argument("-a", "--arch", default="resnet50", help="torchvision ResNet of the checkpoint")
    p.add_argument("--images", default=None, help="images folder (default: <data>/images or <data>)")
    p.add_argument("--img_size", default=224, type=int)
    p.add_argument("--max_per_split", default=None, type=int, help="cap on images per probe split")
    args = check_offline_args(p, p.parse_args(argv))
    torch.manual_seed(args.seed)
    model = build_resnet(args.arch)
    if args.checkpoint:  # checkpoint.pth, best_checkpoint.pth, unet.pth, mode di files (dira/transfer.py)
        load_into_resnet(model, args.checkpoint, trusted=args.trusted)
    model.to(args.device)
    probe_set = chestxray14_probe_set(args.data, args.images, args.img_size, args.max_per_split, args.seed)
    scores = probe_set.evaluate(feature_fn(model), args.device, args.batch_size, args.k, args.seed, model=model)
    return report(args, probe_set, scores, method="DiRA", arch=args.arch)


if __name__ == "__main__":
    main()
