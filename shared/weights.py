"""Load pre-trained weights from any of the checkpoint layouts the five methods' originals write.

The originals' loaders call `load_state_dict(strict=False)` after renaming keys, which silently loads
nothing when a prefix is off. `load_pretrained` maps every checkpoint key onto the target model's keys,
never copies a tensor of the wrong shape, returns a report of what happened, and raises when too
little of the model was matched.

Key mapping, for each checkpoint key:
1. apply substring renames (`swin_vit` -> `swinViT`, MONAI research-contributions' legacy name);
2. drop it if any dotted component matches a drop pattern (heads and queues that have no place in a
   backbone: `projection_head`, `prototypes`, `queue*`, `proj_head`, `fc`);
3. take the first of [key, key minus one known leading prefix, minus two, ...] that the model has
   (prefixes: `module.` from DataParallel/DDP, `backbone.`, `encoder.`, `student.`, `teacher.`, the
   originals' misspelt `classficationNet.` ...). A key the model already has is never stripped, so an
   `smp.Unet` keeps its own `encoder.` keys while a torchvision ResNet gets them without the prefix.

Loading is safe by default: `torch.load(weights_only=True)`, which refuses any pickled object but
tensors and plain Python values. The released Semantic Genesis / TransVW checkpoints store `best_loss`
as numpy.float64 and so need `trusted=True`, which unpickles anything: only for files you trust.
"""

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shared.checkpoint import is_refusal, read_error

DEFAULT_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "student.", "teacher.", "net.",
                    "classficationNet.", "classificationNet.", "encoder_q.", "base_encoder.")
DEFAULT_RENAMES = (("swin_vit", "swinViT"),)
DEFAULT_DROP = ("projection_head", "prototypes", "queue*", "proj_head", "fc")
WRAPPER_KEYS = ("state_dict", "model", "student", "teacher", "net", "network", "model_state_dict")


class WeightLoadError(RuntimeError):
    """Raised when a checkpoint cannot be read or matches too little of the target model."""


@dataclass
class LoadReport:
    matched: list = field(default_factory=list)        # target keys loaded
    missing: list = field(default_factory=list)        # target keys left as they were
    unexpected: list = field(default_factory=list)     # checkpoint keys with no place in the target
    skipped_shape: list = field(default_factory=list)  # (target key, checkpoint shape, target shape)
    dropped: list = field(default_factory=list)        # checkpoint keys removed by the drop patterns
    source: str = ""

    @property
    def fraction(self):
        total = len(self.matched) + len(self.missing)
        return len(self.matched) / total if total else 0.0

    def __str__(self):
        lines = [f"loaded {len(self.matched)}/{len(self.matched) + len(self.missing)} tensors "
                 f"({100 * self.fraction:.1f}%) from {self.source or 'a state dict'}"]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("dropped", self.dropped)):
            if keys:
                shown = ", ".join(keys[:6]) + (f", ... (+{len(keys) - 6})" if len(keys) > 6 else "")
                lines.append(f"  {name} ({len(keys)}): {shown}")
        for key, src, dst in self.skipped_shape[:6]:
            lines.append(f"  skipped by shape: {key} checkpoint {tuple(src)} vs model {tuple(dst)}")
        if len(self.skipped_shape) > 6:
            lines.append(f"  ... {len(self.skipped_shape) - 6} more skipped by shape")
        return "\n".join(lines)


def read_checkpoint(path, trusted=False, map_location="cpu"):
    """Read a checkpoint file (.pt, .pth, .pth.tar, .ckpt, .bin or .safetensors) onto `map_location`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path), device=str(map_location))
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except Exception as err:  # UnpicklingError (refused), RuntimeError/EOFError/... (truncated or corrupt)
        # a refusal drops torch's text (colour codes, advice to pass weights_only=False): ours says what to do
        raise WeightLoadError(str(read_error(path, err))) from (None if is_refusal(err) else err)


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj, wrapper=None):
    """The tensor dict inside a checkpoint: obj[wrapper], or the first of WRAPPER_KEYS that holds one."""
    if wrapper is not None:
        if not isinstance(obj, dict) or wrapper not in obj:
            keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
            raise WeightLoadError(f"checkpoint has no {wrapper!r} entry (it has {keys})")
        obj = obj[wrapper]
        if hasattr(obj, "state_dict") and not isinstance(obj, dict):
            obj = obj.state_dict()
    elif not _is_state_dict(obj) and isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                return extract_state_dict(obj[key])
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise WeightLoadError("no state dict of tensors found in the checkpoint "
                          f"(top-level keys: {list(obj)[:10] if isinstance(obj, dict) else type(obj)})")


def strip_prefix(state_dict, prefix="module."):
    """The same dict with `prefix` removed from the keys that start with it (DataParallel/DDP's `module.`)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def _dropped(key, drop):
    return any(fnmatch.fnmatchcase(part, pattern) for part in key.split(".") for pattern in drop)


def _target_key(key, target_keys, prefixes):
    """The first of key, key minus one leading prefix, minus two, ... that the target model has."""
    candidate = key
    while True:
        if candidate in target_keys:
            return candidate
        for prefix in prefixes:
            if candidate.startswith(prefix):
                candidate = candidate[len(prefix):]
                break
        else:
            return None


def map_state_dict(state_dict, target_state, *, branch=None, prefixes=DEFAULT_PREFIXES,
                   renames=DEFAULT_RENAMES, drop=DEFAULT_DROP):
    """Map checkpoint keys onto `target_state`'s; returns (mapped dict, LoadReport without `missing`)."""
    report = LoadReport()
    if branch is not None:
        branch = branch.rstrip(".") + "."
        kept = {key[len(branch):]: value for key, value in strip_prefix(state_dict).items()
                if key.startswith(branch)}
        if not kept:
            raise WeightLoadError(f"no checkpoint key starts with {branch!r}")
        state_dict = kept
    mapped = {}
    for key, value in state_dict.items():
        renamed = key
        for old, new in renames:
            renamed = renamed.replace(old, new)
        if _dropped(renamed, drop):
            report.dropped.append(key)
            continue
        target = _target_key(renamed, target_state, prefixes)
        if target is None:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(target_state[target].shape):
            report.skipped_shape.append((target, tuple(value.shape), tuple(target_state[target].shape)))
        elif target in mapped:
            raise WeightLoadError(f"two checkpoint keys map onto {target!r}; pass branch= or prefixes=")
        else:
            mapped[target] = value
    return mapped, report


def load_pretrained(model, checkpoint, *, wrapper=None, branch=None, prefixes=DEFAULT_PREFIXES,
                    renames=DEFAULT_RENAMES, drop=DEFAULT_DROP, min_matched=0.5, trusted=False,
                    verbose=True):
    """Copy the matching tensors of `checkpoint` (a path or a loaded dict) into `model`.

    Args:
        wrapper: entry of the checkpoint dict holding the weights ('state_dict', 'student', ...);
            by default the first of WRAPPER_KEYS that holds a dict, or the dict itself.
        branch: keep only keys under this prefix and strip it (e.g. 'teacher' for a flat VoCo dict).
        prefixes, renames, drop: the key mapping described in the module docstring.
        min_matched: raise WeightLoadError when fewer than this fraction of the model's tensors match.
        trusted: unpickle arbitrary objects (only for files you trust).
    Returns the LoadReport; the model is changed in place.
    """
    source = str(checkpoint) if isinstance(checkpoint, (str, Path)) else ""
    obj = read_checkpoint(checkpoint, trusted=trusted) if source else checkpoint
    state_dict = extract_state_dict(obj, wrapper)
    target_state = model.state_dict()
    mapped, report = map_state_dict(state_dict, target_state, branch=branch, prefixes=prefixes,
                                    renames=renames, drop=drop)
    report.source = source
    report.matched = [k for k in target_state if k in mapped]
    report.missing = [k for k in target_state if k not in mapped]
    if report.fraction < min_matched or not report.matched:
        raise WeightLoadError(f"too few tensors matched (need {100 * min_matched:.0f}%):\n{report}")
    with torch.no_grad():
        for key in report.matched:
            target_state[key].copy_(mapped[key])  # state_dict() tensors share storage with the model
    if verbose:
        print(report)
    return report
