"""Frozen-feature probe of VoCo encoders: organ-patch classification from the BTCV labels.

Each labelled volume of a decathlon json (BTCV's `dataset_0.json`: "training" cases train the probe,
"validation" cases test it, so no volume is on both sides) goes through the pre-training geometry:
RAS, HU window [a_min, a_max] -> [0, 1], the box of voxels > 0.3, resized to the working volume
(num_crops*base_roi, num_crops*base_roi, base_roi), label by nearest neighbour. For every organ
present, `per_organ` base_roi^3 patches centred on seeded random voxels of that organ are cut and
resized to roi_x^3, as VoCo's crops; the class is the organ (13 BTCV organs: multi-class, macro
AUROC). Features: the branch's five pooled SwinUNETR maps (`Swin.forward_encs`, 24*F dims), the
vector VoCo's projection head reads.

    python voco/probe.py logs/model_final_epoch.pt --data <BTCV root with dataset_0.json>
    python voco/probe.py --random_init --data <BTCV root> --feature_size 48
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import functools

import numpy as np
import torch
import torch.nn.functional as F

from shared.probe import OnlineProbe, ProbeSet, check_offline_args, offline_parser, report, subsample_indices


def _volume_transform(size, a_min, a_max):
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        Resized,
        ScaleIntensityRanged,
    )

    from voco.data import above
    keys = ["image", "label"]
    return Compose([
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS"),
        ScaleIntensityRanged(keys="image", a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys=keys, source_key="image", select_fn=functools.partial(above, threshold=0.3)),
        Resized(keys=keys, spatial_size=tuple(size), mode=("trilinear", "nearest"), align_corners=(True, None)),
    ])


def organ_patches(image, label, base_roi, roi, per_organ, rng, organs=None):
    """(patches uint8 N x 1 x roi^3, organ ids) from one working volume (1 x X x Y x Z each); only the
    label values in `organs` when given."""
    image, label = torch.as_tensor(image).float(), torch.as_tensor(label)[0].long()
    shape = np.array(label.shape)
    r = np.minimum(base_roi, shape)
    xs, ys = [], []
    for organ in [int(o) for o in torch.unique(label) if o > 0 and (organs is None or int(o) in organs)]:
        where = torch.nonzero(label == organ).numpy()
        for i in rng.choice(len(where), min(per_organ, len(where)), replace=False):
            start = np.clip(where[i] - r // 2, 0, shape - r)
            cube = image[:, start[0]:start[0] + r[0], start[1]:start[1] + r[1], start[2]:start[2] + r[2]]
            cube = F.interpolate(cube[None], size=(roi,) * 3, mode="trilinear", align_corners=True)[0]
            xs.append((cube.clamp(0, 1) * 255).round().to(torch.uint8))  # a quarter of float32 in memory
            ys.append(organ)
    return xs, ys


def btcv_probe_set(json_path, data_dir=None, base_roi=96, num_crops=4, roi=64, per_organ=2, a_min=-175.0,
                   a_max=250.0, seed=0, train_key="training", test_key="validation", max_per_split=None,
                   organs=None, with_cases=False):
    """ProbeSet of organ patches of the labelled volumes of a decathlon json (train / test by case); with
    `with_cases`, also the case (image path) of every patch, train then test patches: (ProbeSet, cases)."""
    from voco.data import load_datalist

    json_path = Path(json_path)
    if json_path.is_dir():
        json_path = json_path / "dataset_0.json"
    transform = _volume_transform((num_crops * base_roi, num_crops * base_roi, base_roi), a_min, a_max)
    rng = np.random.default_rng(seed)
    splits, cases = {}, []
    for key in (train_key, test_key):
        xs, ys, of = [], [], []
        for item in load_datalist(json_path, data_dir, key=key, keys=("image", "label")):
            d = transform(item)
            x, y = organ_patches(d["image"], d["label"], base_roi, roi, per_organ, rng, organs)
            xs += x
            ys += y
            of += [str(item["image"])] * len(x)
        if len(set(ys)) < 2:
            raise ValueError(f"{json_path}: the {key!r} cases give patches of {len(set(ys))} organ(s); "
                             "a probe needs labelled volumes with at least two organs")
        keep = subsample_indices(np.asarray(ys), max_per_split, seed)  # stratified by organ
        splits[key] = (torch.stack([xs[i] for i in keep]), np.asarray(ys, dtype=np.int64)[keep])
        cases += [of[i] for i in keep]
    probe_set = ProbeSet(*splits[train_key], *splits[test_key], name=f"btcv organ patches ({json_path.name})")
    return (probe_set, cases) if with_cases else probe_set


def feature_fn(branch):
    """uint8 or [0, 1] float patches -> the branch's pooled multi-scale encoder vector."""
    def forward(x):
        return branch.forward_encs(x.float() / 255.0 if x.dtype == torch.uint8 else x)
    return forward


# ------------------------------------------------------------------------------------------ online

def add_probe_args(parser):
    parser.add_argument("--probe_every", default=0, type=int,
                        help="probe the frozen teacher (student with --single_network) every N steps (0: off)")
    parser.add_argument("--probe_data", default=None, type=str,
                        help="labelled decathlon json (or a folder holding dataset_0.json) of the organ-patch "
                             "probe (default: dataset_0.json next to the first --json_list)")
    parser.add_argument("--probe_per_organ", default=2, type=int, help="patches per organ and volume")
    parser.add_argument("--probe_max", default=300, type=int, help="at most this many patches per probe split")
    parser.add_argument("--probe_organs", default=None, type=int, nargs="+",
                        help="label values of the organs to classify (default: every organ)")


def online_probe(args, model, logger, device, is_main):
    """The pre-training's OnlineProbe (no-op unless --probe_every > 0; rank 0 only)."""
    branch = model.student if args.single_network else model.teacher
    data = args.probe_data or str(Path(args.json_list[0]).parent / "dataset_0.json")
    if args.probe_every > 0 and is_main and not Path(data).exists():  # fail now, not at the first probe
        raise FileNotFoundError(f"--probe_every: no labelled list {data}; give --probe_data <BTCV root or json>")

    def make():
        return btcv_probe_set(data, None, args.base_roi, args.num_crops, args.roi_x, args.probe_per_organ,
                              args.a_min, args.a_max, args.seed, max_per_split=args.probe_max,
                              organs=args.probe_organs)
    return OnlineProbe(args.probe_every, make, feature_fn(branch), logger, device, enabled=is_main,
                       model=branch, seed=args.seed)


# ----------------------------------------------------------------------------------------- offline

def main(argv=None):
    from voco.export import branch_state_dict, infer_window_size, load_voco_encoder
    from voco.models import Swin

    p = offline_parser("VoCo: frozen-feature probe (BTCV organ patches) of a checkpoint",
                       "labelled decathlon json, or a BTCV root holding dataset_0.json (image + label entries)")
    p.add_argument("--data_dir", default=None, help="root the json paths are relative to (default: its folder)")
    p.add_argument("--branch", default="teacher", choices=["teacher", "student"])
    p.add_argument("--feature_size", default=None, type=int, help="default: from the checkpoint (48 random)")
    p.add_argument("--window_size", default=None, type=int, help="default: from the checkpoint (7 random)")
    p.add_argument("--base_roi", default=96, type=int)
    p.add_argument("--num_crops", default=4, type=int)
    p.add_argument("--roi_x", default=64, type=int)
    p.add_argument("--per_organ", default=2, type=int)
    p.add_argument("--max_per_split", default=None, type=int, help="cap on patches per probe split")
    p.add_argument("--organs", default=None, type=int, nargs="+", help="label values to classify (default: all)")
    p.add_argument("--a_min", default=-175.0, type=float)
    p.add_argument("--a_max", default=250.0, type=float)
    args = check_offline_args(p, p.parse_args(argv))
    feature_size, window = args.feature_size or 48, args.window_size or 7
    state = None
    if args.checkpoint:
        state = branch_state_dict(args.checkpoint, args.branch)
        if args.feature_size is None:
            feature_size = int(state["swinViT.patch_embed.proj.weight"].shape[0])
        window = args.window_size or infer_window_size(state)
    torch.manual_seed(args.seed)
    branch = Swin(feature_size=feature_size, hidden_dim=8, out_dim=8, window_size=window)
    if state is not None:
        load_voco_encoder(branch, state)
    branch.to(args.device)
    probe_set = btcv_probe_set(args.data, args.data_dir, args.base_roi, args.num_crops, args.roi_x,
                               args.per_organ, args.a_min, args.a_max, args.seed,
                               max_per_split=args.max_per_split, organs=args.organs)
    scores = probe_set.evaluate(feature_fn(branch), args.device, args.batch_size, args.k, args.seed, model=branch)
    return report(args, probe_set, scores, method="VoCo", branch=args.branch, feature_size=feature_size)


if __name__ == "__main__":
    main()
