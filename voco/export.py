"""Publish a VoCo checkpoint as a release folder (shared/release.py), or export one branch as a .pt file.

    python voco/export.py runs/voco/model_final_epoch.pt --out release/voco          # release folder
    python voco/export.py runs/voco/model_final_epoch.pt --branch teacher --out voco_teacher.pt   # one .pt

The release folder's model.safetensors holds the encoder of `--branch` under MONAI SwinUNETR's keys (the
decoders are not pre-trained: they stay as SwinUNETR builds them); ssl_state.safetensors every tensor of
the checkpoint (student, teacher, projection heads), so pre-training can continue from a release. It reads
ours (model_*.pt, final_model.pth), the original's training checkpoints (with --trusted: they pickle the
optimizer object), the released VoCo_10k.pt (bare SwinUNETR keys: its ssl_state is that backbone alone)
and the v2 SSL_head files of Luffy03/Large-Scale-Medical (`backbone.*` encoder, `student.*` / `teacher.*`
projection heads).

An `--out` ending in .pt / .pth keeps the earlier behaviour: a single file with only the 145 encoder tensors
(swinViT.*, encoder1/2/3/4/10.*) under SwinUNETR's own names: no `student.`/`teacher.`/`module.` prefixes, no
projection head. `load_voco_encoder` puts such a file -- or a raw VoCo checkpoint, or the released VoCo_10k.pt --
into a SwinUNETR and fails unless every encoder tensor was matched (the original's strict=False loaded nothing
without a word).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `voco` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json

from shared.checkpoint import save_atomic
from shared.release import MODEL_FILE, CardInfo, Release, add_release_args, publish, read_run
from shared.weights import WeightLoadError, extract_state_dict, load_pretrained, read_checkpoint, strip_prefix
from voco.models import ENCODER_PREFIXES, encoder_keys


def branch_state_dict(checkpoint, branch="teacher"):
    """The encoder tensors of `branch` ('teacher' = EMA, or 'student') of a VoCo checkpoint (path or
    dict: a training checkpoint, a bare VoCo state dict, or an already plain encoder dict)."""
    out = {}
    for key, value in full_state_dict(checkpoint).items():
        if key.startswith(("student.", "teacher.")):
            head, _, rest = key.partition(".")
            if head != branch:
                continue
            key = rest
        key = key.removeprefix("module.").removeprefix("backbone.")  # DDP inside the branch; v2's shared backbone
        key = key.replace("swin_vit", "swinViT")  # legacy MONAI research-contributions spelling
        if key.startswith(ENCODER_PREFIXES):
            out[key] = value
    if not out:
        raise WeightLoadError(f"no {branch!r} encoder tensors in the checkpoint")
    return out


def full_state_dict(checkpoint, trusted=False):
    """Every tensor of a VoCo checkpoint (path or dict), without the DDP `module.` prefix."""
    obj = read_checkpoint(checkpoint, trusted=trusted) if isinstance(checkpoint, (str, Path)) else checkpoint
    wrapper = next((k for k in ("state_dict", "network_weights", "net") if isinstance(obj, dict) and k in obj), None)
    return strip_prefix(extract_state_dict(obj, wrapper))


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


def make_release(checkpoint, branch="teacher", trusted=False, run_dir=None):
    """The release of a VoCo checkpoint (any layout above) and how it was read."""
    obj = read_checkpoint(checkpoint, trusted=trusted)
    full = full_state_dict(obj)
    encoder = branch_state_dict(full, branch)
    args = obj.get("args") if isinstance(obj, dict) and isinstance(obj.get("args"), dict) else {}
    if any(k.startswith("backbone.") for k in full):
        layout, what = "v2 SSL_head (shared backbone.*, student/teacher heads)", "backbone, student and teacher heads"
    elif any(k.startswith(("student.", "teacher.")) for k in full):
        layout = ("ours" if args else "original") + f": {Path(checkpoint).name}, {branch} branch"
        what = "student and teacher branches (encoders and projection heads)"
    else:
        layout, what = "released backbone (bare SwinUNETR encoder keys)", "the backbone only: the file held no heads"
    patch = encoder["swinViT.patch_embed.proj.weight"]
    kwargs = {"in_channels": int(patch.shape[1]), "out_channels": 14, "feature_size": int(patch.shape[0]),
              "use_v2": any(".layers1c." in f".{k}" for k in encoder), "window_size": infer_window_size(encoder)}
    from shared.release import build_library_model
    library_keys = build_library_model({"class": SWINUNETR, "kwargs": kwargs}).state_dict()
    spec = {"class": SWINUNETR, "kwargs": kwargs,
            "keys_not_in_file": [k for k in library_keys if not k.startswith(ENCODER_PREFIXES)]}
    config = {"method": "voco", "architecture": f"SwinUNETR{' v2' if kwargs['use_v2'] else ''} encoder, "
                                                f"feature_size {kwargs['feature_size']}",
              "in_channels": kwargs["in_channels"],
              "input": {"intensity": f"HU clipped to [{args.get('a_min', -175.0)}, {args.get('a_max', 250.0)}] and "
                                     f"scaled to [{args.get('b_min', 0.0)}, {args.get('b_max', 1.0)}]",
                        "crop_voxels": args.get("roi_x", 64),
                        "double_input": "each crop concatenated with itself along the first spatial axis "
                                        "(--double_input, the CVPR-era variant)" if args.get("double_input") else "no",
                        "spacing": "not resampled in pre-training (--space_x/y/z unused, as the original); "
                                   "fine-tuning resamples to 1.5 mm"},
              "ssl_state": {"what": what, "branch_in_model_file": branch,
                            "global_step": obj.get("global_step") if isinstance(obj, dict) else None},
              "decoders": "not pre-trained: keys_not_in_file stay as SwinUNETR builds them"}
    run = read_run(checkpoint, run_dir, config=args,
                   steps=obj.get("global_step") if isinstance(obj, dict) else None, provenance=files_read(args))
    card = CardInfo(**CARD, run=run)
    return Release(models={MODEL_FILE: (encoder, spec)}, ssl_state=full, config=config, card=card), layout


def files_read(args):
    """The images of the run's decathlon lists (--json_list), as the lists name them (relative to their data
    root: no path of the training machine), when the lists are still there."""
    files = []
    for json_path in args.get("json_list") or []:
        path = Path(json_path)
        if path.is_file():
            entries = json.loads(path.read_text()).get("training", [])
            files += [f"{path.name}: {e if isinstance(e, str) else e.get('image', '')}" for e in entries]
    return files


SWINUNETR = "monai.networks.nets.SwinUNETR"
CARD = dict(
    method="VoCo",
    paper="VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D Medical Image Analysis "
          "(Wu et al., CVPR 2024)",
    paper_url="https://arxiv.org/abs/2402.17300",
    license="other", license_name="check-training-data-terms",  # set --license for the data you trained on
    datasets=["BTCV"], tags=["ct", "3d", "swin-unetr", "monai", "voco"],
    base_model=None,
    training_data="CT volumes (the original: 10k CTs of public datasets, BTCV among them), HU-windowed.",
    intended_use="Initialisation of a MONAI SwinUNETR encoder for 3D CT segmentation or classification.",
    limits="Pre-trained on CT only (MRI and other modalities are out of distribution); the SwinUNETR decoders "
           "are not pre-trained. The original's released 10k file may have been trained with the input-doubling "
           "variant (voco/README.md).",
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint",
                   help="VoCo checkpoint (model_*.pt, final_model.pth), VoCo_10k.pt or a v2 SSL_head file")
    p.add_argument("--branch", default="teacher", choices=["teacher", "student"],
                   help="teacher = EMA weights (the released file's loader says 'voco ema')")
    p.add_argument("--out", required=True,
                   help="release folder; a name ending in .pt/.pth writes the plain encoder state dict instead")
    p.add_argument("--feature_size", default=None, type=int, help=".pt output: checked against (default: inferred)")
    p.add_argument("--window_size", default=None, type=int, help=".pt output: checked against (default: inferred)")
    add_release_args(p)
    args = p.parse_args(argv)
    if args.out.endswith((".pt", ".pth")):
        return export_encoder_file(args)
    return publish(args, lambda: make_release(args.checkpoint, args.branch, args.trusted, args.run_dir))


def export_encoder_file(args):
    """The earlier export: the encoder of one branch as a plain SwinUNETR state dict in a .pt file."""
    state = branch_state_dict(full_state_dict(args.checkpoint, args.trusted), args.branch)
    feature_size = args.feature_size or int(state["swinViT.patch_embed.proj.weight"].shape[0])
    window_size = args.window_size or infer_window_size(state)
    from voco.models import swinunetr
    check = swinunetr(feature_size=feature_size, window_size=window_size)
    report = load_voco_encoder(check, state, verbose=False)  # the all-matched check
    save_atomic({k: v.detach().cpu().contiguous() for k, v in state.items()}, args.out)
    print(f"wrote {args.out}: {len(state)} tensors of the {args.branch} branch "
          f"(feature_size {feature_size}); {len(report.matched)} load into SwinUNETR")
    print("(to publish them with safetensors, a model card and one-line loading: --out DIR, a folder)")


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    main()
