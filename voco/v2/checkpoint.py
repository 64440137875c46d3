"""VoCo v2 checkpoints in Large-Scale-Medical's layout, both ways.

The original's `voco_train.py` saves `{"global_step", "state_dict"}` with the VoCoHead keys
`backbone.*` (SwinUNETR encoder), `student.*`, `teacher.*` (heads), `module.`-prefixed under DDP; its
resume loads `state_dict` strictly. Our checkpoints (voco.engine.checkpoint) are a superset: the same two
entries plus optimizer, scheduler, scaler and RNG state, so its code resumes from ours and ours from its.
The released VoCo_{B,L,H}_SSL_head files may be a bare state dict or wrap it; both are read here.
"""

from shared.weights import WeightLoadError, extract_state_dict, read_checkpoint

BRANCHES = ("backbone.", "student.", "teacher.")


def ssl_head_state(obj):
    """The VoCoHead state dict of a checkpoint (path or loaded object), `module.` stripped."""
    obj = read_checkpoint(obj) if not isinstance(obj, dict) else obj
    state = extract_state_dict(obj, "state_dict" if "state_dict" in obj else None)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def is_ssl_head(state):
    return any(k.startswith("backbone.") for k in state) and any(k.startswith("student.") for k in state)


def load_ssl_head(model, checkpoint, where=""):
    """Load a v2 SSL_head checkpoint (path or dict) into a VoCoV2 `model`; every key must match by name
    and shape (as the original's strict load). Returns the checkpoint's global_step (0 when absent)."""
    where = where or (f"{checkpoint}" if not isinstance(checkpoint, dict) else "checkpoint")
    state = ssl_head_state(checkpoint)
    if not is_ssl_head(state):
        raise WeightLoadError(f"{where}: not a VoCo v2 SSL_head checkpoint (no backbone.*/student.* keys; "
                              f"first keys {list(state)[:3]})")
    target = model.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = [(k, tuple(state[k].shape), tuple(target[k].shape)) for k in set(state) & set(target)
              if tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        raise WeightLoadError(
            f"{where}: does not fit this model (another --size / --feature_size / --window_size?): "
            f"{len(missing)} missing e.g. {missing[:3]}, {len(unexpected)} unexpected e.g. {unexpected[:3]}, "
            f"{len(shapes)} of another shape e.g. {shapes[:2]}")
    model.load_state_dict(state, strict=True)
    obj = checkpoint if isinstance(checkpoint, dict) else None
    return int(obj.get("global_step", 0)) if obj is not None else 0
