"""Export one branch of a VoCo checkpoint as a plain SwinUNETR encoder state dict, and load one.

    python voco/export.py runs/voco/model_final_epoch.pt --branch teacher --out voco_teacher.pt

The file holds only the 145 encoder tensors (swinViT.*, encoder1/2/3/4/10.*) under SwinUNETR's own
names: no `student.`/`teacher.`/`module.` prefixes, no projection head. `load_voco_encoder` puts such a
file -- or a raw VoCo checkpoint (v1 `student.`/`teacher.` branches, or v2's shared `backbone.`), or the
released VoCo_10k.pt / VoCo_{B,L,H}_SSL_head -- into a SwinUNETR and fails unless
every encoder tensor was matched (the original's strict=False loaded nothing without a word).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse

from shared.checkpoint import save_atomic
from shared.weights import WeightLoadError, extract_state_dict, load_pretrained, read_checkpoint
from voco.models import ENCODER_PREFIXES, encoder_keys


def branch_state_dict(checkpoint, branch="teacher"):
    """The encoder tensors of `branch` ('teacher' = EMA, or 'student') of a VoCo checkpoint (path or
    dict: a training checkpoint, a bare VoCo state dict, or an already plain encoder dict)."""
    obj = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    state = extract_state_dict(obj, "state_dict" if isinstance(obj, dict) and "state_dict" in obj else None)
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(("student.", "teacher.")):
            head, _, rest = key.partition(".")
            if head != branch:
                continue
            key = rest
        key = key[len("module."):] if key.startswith("module.") else key  # DDP inside the branch
        key = key[len("backbone."):] if key.startswith("backbone.") else key  # v2: one shared encoder
        key = key.replace("swin_vit", "swinViT")  # legacy MONAI research-contributions spelling
        if key.startswith(ENCODER_PREFIXES):
            out[key] = value
    if not out:
        raise WeightLoadError(f"no {branch!r} encoder tensors in the checkpoint")
    return out


def load_voco_encoder(model, checkpoint, branch="teacher", verbose=True):
    """Load VoCo weights into a SwinUNETR `model`; raise unless all its encoder tensors matched."""
    target = encoder_keys(model.state_dict())
    where = f"{checkpoint}: " if isinstance(checkpoint, (str, Path)) else ""
    try:
        report = load_pretrained(model, branch_state_dict(checkpoint, branch), min_matched=0.0, verbose=verbose)
    except WeightLoadError as err:
        raise WeightLoadError(str(err) if where and str(checkpoint) in str(err) else f"{where}{err}") from err
    report.source = str(checkpoint) if where else report.source
    missing = sorted(set(target) - set(report.matched))
    if missing:
        raise WeightLoadError(f"{where}only {len(target) - len(missing)}/{len(target)} encoder tensors matched "
                              f"(another feature_size or window_size?); missing e.g. {missing[:5]}\n{report}")
    return report


def infer_window_size(state, default=7):
    """Swin window side from a relative-position table of (2w - 1)^3 rows (7 -> 2197)."""
    table = state.get("swinViT.layers1.0.blocks.0.attn.relative_position_bias_table")
    if table is None:
        return default
    return (round(table.shape[0] ** (1 / 3)) + 1) // 2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="VoCo checkpoint (model_*.pt, final_model.pth) or VoCo_10k.pt")
    p.add_argument("--branch", default="teacher", choices=["teacher", "student"],
                   help="teacher = EMA weights (the released file's loader says 'voco ema')")
    p.add_argument("--out", required=True, help="output .pt (plain SwinUNETR encoder state dict)")
    p.add_argument("--feature_size", default=None, type=int, help="checked against (default: inferred)")
    p.add_argument("--window_size", default=None, type=int, help="checked against (default: inferred)")
    args = p.parse_args(argv)
    state = branch_state_dict(args.checkpoint, args.branch)
    feature_size = args.feature_size or int(state["swinViT.patch_embed.proj.weight"].shape[0])
    window_size = args.window_size or infer_window_size(state)
    from voco.models import swinunetr
    check = swinunetr(feature_size=feature_size, window_size=window_size)
    report = load_voco_encoder(check, state, verbose=False)  # the all-matched check
    save_atomic({k: v.detach().cpu().contiguous() for k, v in state.items()}, args.out)
    print(f"wrote {args.out}: {len(state)} tensors of the {args.branch} branch "
          f"(feature_size {feature_size}); {len(report.matched)} load into SwinUNETR")


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
