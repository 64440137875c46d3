"""Frozen-feature probes: does the encoder's representation separate a labelled set?

One building block for 2D and 3D encoders alike:

- `pooled_features(forward_fn, batches, device)`: global average pool over every spatial dim of the
  encoder's feature map -> an N x C array, under `torch.no_grad()` with the module in eval mode
  (its training mode is restored afterwards, so it can run in the middle of pre-training).
- `probe_scores(train_x, train_y, test_x, test_y, k=20, seed=0)`: a cosine k-NN classifier
  (similarity-weighted vote of the k nearest training features) and a linear probe (scikit-learn
  LogisticRegression on standardized features, lbfgs: deterministic), each scored by accuracy and
  AUROC on the test set.
- `split_indices(labels, test_fraction, seed)`: a stratified, seeded held-out split for when only one
  labelled set exists.
- `subsample_indices(labels, n, seed)`: a seeded cap on a probe split that keeps every class it can.
- `ProbeSet`: inputs and labels of both splits in memory, `.evaluate(forward_fn, device)` gives the
  `probe_*` scalars a training loop logs.
- `OnlineProbe`: every N steps/epochs during training (rank 0), the set built on first use only.
- `offline_parser` / `check_offline_args` / `report`: the common part of every `<method>/probe.py`.

Labels are either integer classes (shape N; binary or multi-class, AUROC macro over one-vs-rest
classes present in the test set) or a multi-label 0/1 matrix (N x L; AUROC and accuracy are means
over the labels whose test column holds both classes and whose train column holds both classes).
An AUROC that is undefined (one class only) is NaN, never a made-up 0.5.
"""

import os
from dataclasses import dataclass

import numpy as np
import torch

PREFIX = "probe_"


# ----------------------------------------------------------------------------------------------
# features

def _owning_module(forward_fn, model):
    if model is not None:
        return model
    if isinstance(forward_fn, torch.nn.Module):
        return forward_fn
    owner = getattr(forward_fn, "__self__", None)  # a bound method such as `net.encode`
    return owner if isinstance(owner, torch.nn.Module) else None


def global_pool(feature_map):
    """(B, C, *spatial) -> (B, C) by averaging every spatial dim; (B, C) passes through.

    A list/tuple (an encoder that returns its skip features) is pooled at its last, deepest map.
    """
    if isinstance(feature_map, (list, tuple)):
        feature_map = feature_map[-1]
    if feature_map.dim() < 2:
        raise ValueError(f"feature map of shape {tuple(feature_map.shape)}: expected (B, C, ...)")
    return feature_map.flatten(2).mean(-1) if feature_map.dim() > 2 else feature_map


def resnet_trunk(resnet):
    """A torchvision ResNet without its global pool and classifier: images -> the last stage's feature map
    (the modules are shared, not copied)."""
    return torch.nn.Sequential(*[m for name, m in resnet.named_children() if name not in ("avgpool", "fc")])


def pooled_features(forward_fn, batches, device=None, model=None):
    """Pooled features of every batch, stacked: an (N, C) float32 numpy array.

    `forward_fn` maps an input batch to a feature map (a module, a bound method, or any callable; pass
    `model` when the callable is not itself a module or bound method of one, so it is put in eval
    mode). `batches` yields input tensors, or tuples/lists whose first element is the input (a
    DataLoader of (x, y) pairs works as is).
    """
    module = _owning_module(forward_fn, model)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    out = []
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                if device is not None:
                    x = x.to(device, non_blocking=True)
                out.append(global_pool(forward_fn(x)).float().cpu())
    finally:
        if module is not None:
            module.train(was_training)
    if not out:
        raise ValueError("pooled_features: no batches")
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------------------------
# scores

def _as_labels(y, name):
    y = np.asarray(y)
    if y.ndim not in (1, 2):
        raise ValueError(f"{name}: labels must be a vector of classes (N,) or a 0/1 matrix (N, L), "
                         f"got shape {y.shape}")
    if y.ndim == 2 and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name}: a multi-label matrix must hold only 0 and 1")
    if y.ndim == 1 and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{name}: class labels must be integers")
    return y.astype(np.int64)


def _check(x, y, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: features must be (N, C), got shape {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} feature rows but {len(y)} labels")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features hold NaN or inf (a diverged encoder?)")
    return x


def _auroc(y_true, score):
    from sklearn.metrics import roc_auc_score
    y_true = np.asarray(y_true)
    if y_true.min() == y_true.max():
        return float("nan")
    return float(roc_auc_score(y_true, score))


def _class_metrics(y_test, scores, classes):
    """Accuracy of the argmax class and macro one-vs-rest AUROC (binary: AUROC of class 1)."""
    acc = float(np.mean(classes[scores.argmax(1)] == y_test))
    if len(classes) == 2:
        return acc, _auroc(y_test == classes[1], scores[:, 1])
    aurocs = [_auroc(y_test == c, scores[:, i]) for i, c in enumerate(classes)]
    aurocs = [a for a in aurocs if not np.isnan(a)]
    return acc, float(np.mean(aurocs)) if aurocs else float("nan")


def _multilabel_metrics(y_test, prob, usable):
    """Mean per-label accuracy (threshold 0.5) and AUROC over the usable labels."""
    accs, aurocs = [], []
    for j in np.flatnonzero(usable):
        auroc = _auroc(y_test[:, j], prob[:, j])
        if np.isnan(auroc):
            continue
        aurocs.append(auroc)
        accs.append(float(np.mean((prob[:, j] >= 0.5) == y_test[:, j])))
    if not aurocs:
        return float("nan"), float("nan")
    return float(np.mean(accs)), float(np.mean(aurocs))


def _knn_votes(train_x, train_targets, test_x, k):
    """Similarity-weighted mean of the k nearest (cosine) training rows' targets, per test row."""
    def unit(a):
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    sim = unit(test_x) @ unit(train_x).T
    k = min(k, len(train_x))
    # stable sort on (-sim) so ties break by training index: deterministic
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    weights = np.maximum(np.take_along_axis(sim, nearest, 1), 0.0) + 1e-6
    votes = np.einsum("nk,nkc->nc", weights, train_targets[nearest])
    return votes / weights.sum(1, keepdims=True)


def _logistic(seed):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(max_iter=1000, C=1.0, random_state=seed)


def probe_scores(train_x, train_y, test_x, test_y, k=20, seed=0):
    """k-NN (cosine) and linear-probe accuracy / AUROC of frozen features.

    Returns {"knn_acc", "knn_auroc", "linear_acc", "linear_auroc", "n_train", "n_test"}; an AUROC
    is NaN where the test labels hold a single class.
    """
    from sklearn.preprocessing import StandardScaler

    train_y, test_y = _as_labels(train_y, "train labels"), _as_labels(test_y, "test labels")
    if train_y.ndim != test_y.ndim:
        raise ValueError("train and test labels must both be classes (N,) or both 0/1 matrices (N, L)")
    train_x, test_x = _check(train_x, train_y, "train"), _check(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train features have {train_x.shape[1]} channels, test {test_x.shape[1]}")
    out = {"n_train": len(train_x), "n_test": len(test_x)}

    scaler = StandardScaler().fit(train_x)
    train_s, test_s = scaler.transform(train_x), scaler.transform(test_x)

    if train_y.ndim == 1:
        classes = np.unique(train_y)
        if len(classes) < 2:
            raise ValueError(f"train labels hold a single class ({classes[0]}): nothing to probe")
        onehot = (train_y[:, None] == classes[None, :]).astype(np.float64)
        votes = _knn_votes(train_x, onehot, test_x, k)
        out["knn_acc"], out["knn_auroc"] = _class_metrics(test_y, votes, classes)
        clf = _logistic(seed).fit(train_s, train_y)
        out["linear_acc"], out["linear_auroc"] = _class_metrics(
            test_y, clf.predict_proba(test_s), clf.classes_)
        return out

    if train_y.shape[1] != test_y.shape[1]:
        raise ValueError(f"train labels have {train_y.shape[1]} columns, test {test_y.shape[1]}")
    usable = (train_y.min(0) != train_y.max(0))  # a label needs both classes to train on
    if not usable.any():
        raise ValueError("no label column holds both 0 and 1 in the training split: nothing to probe")
    votes = _knn_votes(train_x, train_y.astype(np.float64), test_x, k)
    out["knn_acc"], out["knn_auroc"] = _multilabel_metrics(test_y, votes, usable)
    prob = np.zeros(test_y.shape, dtype=np.float64)
    for j in np.flatnonzero(usable):
        prob[:, j] = _logistic(seed).fit(train_s, train_y[:, j]).predict_proba(test_s)[:, 1]
    out["linear_acc"], out["linear_auroc"] = _multilabel_metrics(test_y, prob, usable)
    return out


# ----------------------------------------------------------------------------------------------
# splits and sets

def split_indices(labels, test_fraction=0.3, seed=0):
    """(train_idx, test_idx): a seeded held-out split, stratified where the labels allow it.

    Class labels stratify by class; a multi-label matrix by its most frequent positive label per row
    (or "none"). Falls back to an unstratified split when a stratum has a single member.
    """
    n_test = max(1, int(round(test_fraction * len(labels))))
    return _stratified_split(labels, n_test, seed)


def _strata(labels):
    labels = _as_labels(labels, "labels")
    if labels.ndim == 1:
        return labels
    freq = labels.sum(0)  # a row's stratum: its most frequent positive label, or -1 for none
    return np.where(labels.any(1), np.argmax(labels * (freq + 1)[None, :], axis=1), -1)


def _stratified_split(labels, n_test, seed):
    from sklearn.model_selection import train_test_split

    strata = _strata(labels)
    counts = np.unique(strata, return_counts=True)[1]
    n_rest = len(strata) - n_test
    stratify = strata if counts.min() >= 2 and min(n_test, n_rest) >= len(counts) else None
    rest, test = train_test_split(np.arange(len(strata)), test_size=n_test, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(test)


def subsample_indices(labels, n, seed=0):
    """Sorted indices of a seeded subset of `n` rows (all rows when n is None or >= N): one row of every
    stratum first (class, or a multi-label row's most frequent positive label) while n allows, then a
    random draw of the rest, so a capped probe split keeps every class it can."""
    total = len(labels)
    if not n or n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    strata = _strata(labels)
    groups = np.unique(strata)
    first = [rng.choice(np.flatnonzero(strata == g)) for g in rng.permutation(groups)][:n]
    rest = np.setdiff1d(np.arange(total), first)
    fill = rng.choice(rest, n - len(first), replace=False)
    return np.sort(np.concatenate([np.asarray(first, dtype=np.int64), fill]))


@dataclass
class ProbeSet:
    """A labelled probe set in memory: inputs (tensors) and labels (numpy) of both splits."""

    train_x: torch.Tensor
    train_y: np.ndarray
    test_x: torch.Tensor
    test_y: np.ndarray
    name: str = ""

    @classmethod
    def from_labelled(cls, x, y, test_fraction=0.3, seed=0, name=""):
        """Split one labelled set (stratified, seeded) into probe train and test."""
        x, y = torch.as_tensor(x), np.asarray(y)
        train_idx, test_idx = split_indices(y, test_fraction, seed)
        return cls(x[train_idx], y[train_idx], x[test_idx], y[test_idx], name)

    def __len__(self):
        return len(self.train_x) + len(self.test_x)

    def features(self, forward_fn, device=None, batch_size=32, model=None):
        def batches(x):
            return (x[i:i + batch_size] for i in range(0, len(x), batch_size))
        return (pooled_features(forward_fn, batches(self.train_x), device, model),
                pooled_features(forward_fn, batches(self.test_x), device, model))

    def evaluate(self, forward_fn, device=None, batch_size=32, k=20, seed=0, model=None):
        """{"probe_knn_acc", "probe_knn_auroc", "probe_linear_acc", "probe_linear_auroc"}."""
        train_f, test_f = self.features(forward_fn, device, batch_size, model)
        scores = probe_scores(train_f, self.train_y, test_f, self.test_y, k=k, seed=seed)
        return {PREFIX + key: float(v) for key, v in scores.items() if not key.startswith("n_")}

    def save(self, path):
        """Write the set as one .pt file of tensors (weights_only-loadable)."""
        from shared.checkpoint import save_atomic
        save_atomic({"train_x": self.train_x, "train_y": torch.as_tensor(self.train_y),
                         "test_x": self.test_x, "test_y": torch.as_tensor(self.test_y),
                         "name": self.name}, path)

    @classmethod
    def load(cls, path):
        d = torch.load(path, map_location="cpu", weights_only=True)
        return cls(d["train_x"], d["train_y"].numpy(), d["test_x"], d["test_y"].numpy(), d.get("name", ""))


def should_probe(step, every):
    """True when `every` > 0 and `step` (1-based count of steps/epochs done) is a multiple of it."""
    return every > 0 and step > 0 and step % every == 0


PROBE_COLUMNS = tuple(PREFIX + k for k in ("knn_acc", "knn_auroc", "linear_acc", "linear_auroc"))


class OnlineProbe:
    """Probe the frozen encoder every `every` steps (or epochs) of a training run and log `probe_*`.

    `make_set()` builds the ProbeSet on first use only, so a run without probing (every == 0, the
    default) or a rank other than 0 (enabled=False) reads nothing and costs nothing. `forward_fn(x)`
    gives the encoder's feature map; pass `model` so it is put in eval mode for the probe (and back).
    """

    def __init__(self, every, make_set, forward_fn, logger=None, device=None, enabled=True, model=None,
                 batch_size=16, k=20, seed=0):
        self.every, self.make_set, self.forward_fn = int(every or 0), make_set, forward_fn
        self.logger, self.device, self.enabled, self.model = logger, device, enabled, model
        self.batch_size, self.k, self.seed = batch_size, k, seed
        self.probe_set = None

    @property
    def active(self):
        return self.enabled and self.every > 0

    def __call__(self, count, log_step=None, force=False):
        """Probe when `count` (steps or epochs done, from 1) is a multiple of `every`; returns the scores."""
        if not self.active or not (force or should_probe(count, self.every)):
            return None
        if self.probe_set is None:
            self.probe_set = self.make_set()
        scores = self.probe_set.evaluate(self.forward_fn, self.device, self.batch_size, self.k, self.seed,
                                         self.model)
        if self.logger is not None:
            self.logger.log(count if log_step is None else log_step, **scores)
        print("probe " + " ".join(f"{k[len(PREFIX):]} {v:.3f}" for k, v in scores.items())
              + f" ({self.probe_set.name}, {len(self.probe_set)} samples)")
        return scores


# ----------------------------------------------------------------------------------------------
# offline: `python <method>/probe.py <checkpoint> --data <root>`

def offline_parser(description, data_help):
    """The flags every method's probe.py shares; each method adds its model's flags."""
    import argparse
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="any checkpoint the method's loaders read (omit with --random_init)")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--random_init", action="store_true", help="probe a randomly initialised encoder")
    p.add_argument("--out", default=None, help="JSON file for the scores (default: <checkpoint>.probe.json, "
                                               "or probe_random_init.json)")
    p.add_argument("--k", type=int, default=20, help="neighbours of the k-NN probe")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init, split and probe")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--trusted", action="store_true",
                   help="unpickle the checkpoint with weights_only=False (only files you trust)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    return p


def check_offline_args(parser, args):
    if args.checkpoint is None and not args.random_init:
        parser.error("give a checkpoint, or --random_init for the random-init baseline")
    if args.checkpoint is not None and args.random_init:
        parser.error("a checkpoint and --random_init exclude each other")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        parser.error(f"{args.checkpoint}: no such checkpoint file")
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return args


def report(args, probe_set, scores, **extra):
    """Print the scores and write them (with what was probed) as JSON; returns the record."""
    import json
    from pathlib import Path
    record = {"checkpoint": args.checkpoint, "random_init": bool(args.random_init), "data": str(args.data),
              "probe_set": probe_set.name, "n_train": len(probe_set.train_x), "n_test": len(probe_set.test_x),
              "k": args.k, "seed": args.seed, **extra, **scores}
    out = Path(args.out) if args.out else (Path(args.checkpoint + ".probe.json") if args.checkpoint
                                           else Path("probe_random_init.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"{'random init' if args.random_init else args.checkpoint} on {probe_set.name} "
          f"({record['n_train']} train / {record['n_test']} test):")
    for key in PROBE_COLUMNS:
        print(f"  {key:20s} {scores[key]:.4f}")
    print(f"-> {out}")
    return record
