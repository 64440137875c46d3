"""Frozen-feature probe of LoVT / ConVIRT / CLIP scan encoders on the 5 binary CheXpert labels of MIMIC-CXR.

This is extra: LoVT's own online CheXpert probes (lovt/online_eval.py) stay as the original has them. The frozen
probe fits a k-NN and a logistic regression on the pooled ResNet feature map of a fixed set of studies:
up to `max_per_split` (seeded) studies of the pre-training TRAIN split train it, the validation + test studies
test it (patient-disjoint splits of MIMIC-CXR). Every image goes through the validation transform (pad, resize,
normalise with the train statistics) and the first AP/PA view, so the set is the same at every probe and drawing
it consumes none of the training's random numbers. Score: mean per-label AUROC over the labels with both classes.

Online: `probe_every: N` (epochs; 0 = off) in lovt/configs/train_representation.yaml, or `probe_every=N` on the
command line, logs probe_* into metrics.csv and TensorBoard (rank 0). Offline:

    python lovt/probe.py models/pretraining/<name>/checkpoints/backbone_weights.pt --data <prepared MIMIC-CXR>
    python lovt/probe.py <run>/checkpoints/last.ckpt --data <prepared MIMIC-CXR>   # any Lightning checkpoint
    python lovt/probe.py --random_init --data <prepared MIMIC-CXR>
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import copy

import numpy as np
import torch
from pytorch_lightning import Callback

from shared.probe import OnlineProbe, ProbeSet, check_offline_args, offline_parser, report, resnet_trunk


def _deterministic(dataset, image_transform=None):
    """A shallow copy that always takes the first view (no RNG draw), optionally with another transform."""
    out = copy.copy(dataset)
    if hasattr(out, "view_selection"):
        out.view_selection = "first"
    if image_transform is not None and hasattr(out, "image_transform"):
        out.image_transform = image_transform
    return out


def _stack(dataset, indices):
    xs, ys = [], []
    for i in indices:
        item = dataset[int(i)]
        xs.append(item["scan"][:1].to(torch.float16))  # the 3 channels repeat one: keep one, in half precision
        ys.append(item["chexpert"].numpy())
    return torch.stack(xs), np.asarray(ys, dtype=np.int64)


def chexpert_probe_set(datasets, max_per_split=300, seed=0):
    """ProbeSet from {"train", "validation"[, "test"]} image-text datasets (items with "scan" and "chexpert")."""
    rng = np.random.default_rng(seed)
    val = datasets["validation"]
    train = _deterministic(datasets["train"], getattr(val, "image_transform", None))
    tests = [_deterministic(datasets[s]) for s in ("validation", "test") if s in datasets and len(datasets[s])]

    def pick(n):
        return np.arange(n) if not max_per_split or n <= max_per_split else np.sort(
            rng.choice(n, max_per_split, replace=False))
    train_x, train_y = _stack(train, pick(len(train)))
    parts = [_stack(d, np.arange(len(d))) for d in tests]
    test_x, test_y = torch.cat([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if max_per_split and len(test_y) > max_per_split:
        keep = pick(len(test_y))
        test_x, test_y = test_x[keep], test_y[keep]
    return ProbeSet(train_x, train_y, test_x, test_y, name="mimic-cxr chexpert (5 binary labels)")


def feature_fn(stages):
    """1-channel (half) scans -> `stages(3-channel float scan)`, the ResNet's last feature map."""
    def forward(x):
        return stages(x.float().expand(-1, 3, -1, -1))
    return forward


def scan_encoder_fn(encoder):
    """The feature map a lovt ScanEncoder's regions come from (conv5 in every experiment)."""
    layer = encoder.region_layer
    return feature_fn(lambda x: encoder.feature_extractor(x, (layer,))[layer])


class FrozenProbeCallback(Callback):
    """Every `every` epochs, on rank 0: the frozen probe of the scan encoder, logged as probe_* to all loggers."""

    def __init__(self, every: int, max_per_split: int = 300, k: int = 20, seed: int = 0):
        self.every, self.max_per_split, self.k, self.seed = every, max_per_split, k, seed
        self.probe = None

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        if self.probe is None:
            encoder = pl_module.model.model_a.encoder
            datamodule = trainer.datamodule
            self.probe = OnlineProbe(self.every, lambda: chexpert_probe_set(datamodule.datasets, self.max_per_split,
                                                                            self.seed),
                                     scan_encoder_fn(encoder), None, pl_module.device, model=encoder, k=self.k,
                                     seed=self.seed)
        scores = self.probe(trainer.current_epoch + 1)
        if scores:
            for lg in trainer.loggers:
                lg.log_metrics(scores, step=trainer.global_step)


def build_probe_callbacks(cfg) -> list:
    """[FrozenProbeCallback] when the config's `probe_every` > 0, else []."""
    every = int(cfg.get("probe_every") or 0)
    if every <= 0:
        return []
    return [FrozenProbeCallback(every, int(cfg.get("probe_max") or 300), seed=int(cfg.get("seed") or 0))]


# ----------------------------------------------------------------------------------------- offline

def load_backbone(resnet, checkpoint, trusted=False):
    """A Lightning checkpoint (ours or the original's) or a torchvision-layout file into `resnet`."""
    from lovt.export import backbone_state_dict
    from shared.weights import extract_state_dict, load_pretrained, read_checkpoint

    obj = read_checkpoint(checkpoint, trusted=trusted)
    state = extract_state_dict(obj, "state_dict" if isinstance(obj, dict) and "state_dict" in obj else None)
    try:
        state = backbone_state_dict(state)
    except KeyError:
        pass  # already torchvision keys (backbone_weights.pt, a baseline)
    return load_pretrained(resnet, state, min_matched=0.9)


def main(argv=None):
    import torchvision

    from lovt.data import ScanTransform
    from lovt.data.dataset import ImageTextDataset

    p = offline_parser("LoVT: frozen-feature probe (MIMIC-CXR CheXpert labels) of a checkpoint",
                       "prepared MIMIC-CXR dataset (lovt/data/mimic_cxr.py create ...)")
    p.add_argument("--arch", default="resnet50", help="torchvision ResNet of the checkpoint")
    p.add_argument("--image_size", default=224, type=int)
    p.add_argument("--max_per_split", default=300, type=int, help="at most this many studies per probe split")
    args = check_offline_args(p, p.parse_args(argv))
    torch.manual_seed(args.seed)
    resnet = torchvision.models.__dict__[args.arch](weights=None)
    if args.checkpoint:
        load_backbone(resnet, args.checkpoint, args.trusted)
    stages = resnet_trunk(resnet)
    stages.to(args.device)
    stats = ImageTextDataset(args.data, "train").stats  # normalise with the TRAIN statistics, as pre-training
    transform = ScanTransform(image_size=(args.image_size,) * 2, dataset_stats=stats, val=True)
    datasets = {s: ImageTextDataset(args.data, s, image_transform=transform, view_selection="first")
                for s in ("train", "validation", "test")}
    probe_set = chexpert_probe_set(datasets, args.max_per_split, args.seed)
    scores = probe_set.evaluate(feature_fn(stages), args.device, args.batch_size, args.k, args.seed, model=stages)
    return report(args, probe_set, scores, method="LoVT", arch=args.arch)


if __name__ == "__main__":
    main()
