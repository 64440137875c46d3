"""Frozen-feature probe of Semantic Genesis / TransVW encoders: nodule vs non-nodule cubes of LUNA16.

The probe set comes from a LUNA16 tree (`subset*/*.mhd`, `candidates.csv`, `annotations.csv`): every
class-1 candidate and `neg_per_pos` class-0 candidates per nodule, cut as cubes of the pre-training
input size (HU clipped to [-1000, 1000] and scaled to [0, 1], as the pre-training cubes), split by
patient (the fine-tuning split's train patients train the probe, its val + test patients test it).
Features: the encoder bottleneck (`down_tr512`), global-average pooled. The original's BatchNorm uses
batch statistics in eval mode too, so features are taken in fixed batches of --batch_size.

    python semantic_genesis/probe.py Checkpoints/en_de/Semantic_Genesis_Chest_CT.pt --data <LUNA16 root>
    python semantic_genesis/probe.py --random_init --data <LUNA16 root>
"""

import numpy as np
import torch

from shared.probe import OnlineProbe, ProbeSet, check_offline_args, offline_parser, report, subsample_indices
from shared.unet3d import _Encoder
from shared.weights import DEFAULT_PREFIXES, load_pretrained, read_checkpoint

GENESIS_PREFIXES = DEFAULT_PREFIXES + ("base_model.",)  # fine-tuned TargetNet checkpoints


class Encoder3D(_Encoder):
    """The Models Genesis encoder alone (same keys as in UNet3D / YNet3D); forward -> bottleneck."""

    def __init__(self, width=32, act="relu", always_batch_stats=True):
        super().__init__()
        self._build_encoder(act, width, always_batch_stats)

    def forward(self, x):
        return self.encode(x)


def nodule_probe_set(root, size=(64, 64, 32), neg_per_pos=3, seed=0, max_per_split=None):
    """ProbeSet of LUNA16 candidate cubes (label 1: nodule, 0: not), split by patient."""
    from shared.genesis.finetune import luna16_nodule_cubes

    splits = luna16_nodule_cubes(root, size=tuple(size), neg_per_pos=neg_per_pos, seed=seed)
    train_x, train_y = splits["train"]
    test_x = np.concatenate([splits["val"][0], splits["test"][0]])
    test_y = np.concatenate([splits["val"][1], splits["test"][1]])

    def cap(x, y):
        keep = subsample_indices(y.astype(np.int64), max_per_split, seed)  # stratified by class
        x, y = x[keep], y[keep]
        return torch.from_numpy(np.ascontiguousarray(x[:, None], dtype=np.float32)), y.astype(np.int64)

    (train_x, train_y), (test_x, test_y) = cap(train_x, train_y), cap(test_x, test_y)
    for name, y in (("train", train_y), ("test", test_y)):
        if len(np.unique(y)) < 2:
            raise ValueError(f"{root}: the probe's {name} patients hold only class {y[0]} candidates; "
                             "use more scans")
    return ProbeSet(train_x, train_y, test_x, test_y, name="luna16 nodule vs non-nodule")


def grouped_nodule_probe_set(root, size=(64, 64, 32), neg_per_pos=3, seed=0):
    """(ProbeSet, patient of every cube): the cubes of nodule_probe_set from every scan, with the series uid
    of each (train then test cubes), for a patient-grouped K-fold over all scans instead of one split."""
    from shared.genesis.finetune import luna16_nodule_cubes

    splits = luna16_nodule_cubes(root, size=tuple(size), neg_per_pos=neg_per_pos, seed=seed, with_series=True)

    def tensors(x):
        return torch.from_numpy(np.ascontiguousarray(x[:, None], dtype=np.float32))
    test = [np.concatenate([splits["val"][i], splits["test"][i]]) for i in range(3)]
    probe_set = ProbeSet(tensors(splits["train"][0]), splits["train"][1].astype(np.int64), tensors(test[0]),
                         test[1].astype(np.int64), name="luna16 nodule vs non-nodule, all scans")
    return probe_set, np.concatenate([splits["train"][2], test[2]])


# ------------------------------------------------------------------------------------------ online

def add_probe_args(parser):
    g = parser.add_argument_group("frozen-feature probe (off by default)")
    g.add_argument("--probe_every", type=int, default=0,
                   help="probe the frozen encoder every N epochs (k-NN and linear probe; 0: off)")
    g.add_argument("--probe_data", default=None,
                   help="LUNA16 root of the probe set (subset*/, candidates.csv, annotations.csv)")
    g.add_argument("--probe_max", type=int, default=400, help="at most this many cubes per probe split")


def online_probe(args, model, logger, device, is_main):
    """The pre-training's OnlineProbe (a no-op unless --probe_every > 0; rank 0 only)."""
    every = getattr(args, "probe_every", 0)
    if every and not getattr(args, "probe_data", None):
        raise ValueError("--probe_every needs --probe_data <LUNA16 root> (the pattern files hold no labels)")
    size = (args.input_rows, args.input_cols, args.input_deps)
    return OnlineProbe(every, lambda: nodule_probe_set(args.probe_data, size, seed=args.seed,
                                                       max_per_split=args.probe_max),
                       model.encode, logger, device, enabled=is_main, model=model, seed=args.seed)


# ----------------------------------------------------------------------------------------- offline

def infer_width(checkpoint, trusted=False, default=32):
    """The first conv's channels, read from the checkpoint (so --width need not be given)."""
    from shared.weights import extract_state_dict
    state = extract_state_dict(read_checkpoint(checkpoint, trusted=trusted), None)
    for key, value in state.items():
        if key.endswith("down_tr64.ops.0.conv1.weight") and hasattr(value, "shape"):
            return int(value.shape[0])
    return default


def main(argv=None, method="Semantic Genesis"):
    p = offline_parser(f"{method}: frozen-feature probe (nodule vs non-nodule LUNA16 cubes) of a checkpoint",
                       "LUNA16 root: subset*/<seriesuid>.mhd, candidates.csv, annotations.csv")
    p.add_argument("--width", type=int, default=None, help="first conv's channels (default: from the "
                                                          "checkpoint; 32 with --random_init)")
    p.add_argument("--input_rows", type=int, default=64)
    p.add_argument("--input_cols", type=int, default=64)
    p.add_argument("--input_deps", type=int, default=32)
    p.add_argument("--neg_per_pos", type=int, default=3, help="non-nodule candidates per nodule")
    p.add_argument("--max_per_split", type=int, default=None, help="cap on cubes per probe split")
    args = check_offline_args(p, p.parse_args(argv))
    width = args.width or (infer_width(args.checkpoint, args.trusted) if args.checkpoint else 32)
    torch.manual_seed(args.seed)
    model = Encoder3D(width).to(args.device)
    if args.checkpoint:
        load_pretrained(model, args.checkpoint, prefixes=GENESIS_PREFIXES, trusted=args.trusted)
    probe_set = nodule_probe_set(args.data, (args.input_rows, args.input_cols, args.input_deps),
                                 args.neg_per_pos, args.seed, args.max_per_split)
    scores = probe_set.evaluate(model, args.device, args.batch_size, args.k, args.seed)
    return report(args, probe_set, scores, method=method, width=width)


if __name__ == "__main__":
    main()
