"""The release folder (shared/release.py) of a Semantic Genesis or TransVW checkpoint.

model.safetensors: the UNet3D (shared.unet3d, the Models Genesis key layout) of the checkpoint: all 106
tensors from an 'en_de' run (YNet3D) or a released file, the encoder alone from an 'en' run (the decoder is
then left as UNet3D builds it). ssl_state.safetensors: every tensor of the checkpoint (the self-classification
head `clc_out.*`; the released files' `projection_head` / `prototypes` when present); no optimizer.
Reads our `<exp_name>.pt` / `last.pt` and the originals' released `semantic_genesis_chest_ct.pt` /
`TransVW_chest_ct.pt` (with --trusted: they pickle numpy.float64 scalars), through shared.weights' mapping.
"""

import argparse
import json
from pathlib import Path

from shared.release import (
    MODEL_FILE,
    CardInfo,
    Release,
    add_release_args,
    build_library_model,
    publish,
    read_run,
)
from shared.weights import extract_state_dict, load_pretrained, read_checkpoint, strip_prefix

UNET3D = "shared.unet3d.UNet3D"


def _find(state, suffix):
    return next((v for k, v in state.items() if k.endswith(suffix)), None)


def recorded_run(checkpoint, obj):
    """The run record of a checkpoint written here: its own "run" entry (last.pt) or its folder's run record
    (the best checkpoint keeps the original's six keys). Empty for the originals' files."""
    if isinstance(obj, dict) and isinstance(obj.get("run"), dict):
        return obj["run"]
    checkpoint = Path(checkpoint)
    for name in (f"{checkpoint.stem}.run.json", "run.json"):
        path = checkpoint.with_name(name)
        try:
            record = json.loads(path.read_text()) if path.is_file() else None
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and record.get("method") == checkpoint.stem:
            return record
    return {}


def make_release(checkpoint, card, method, trusted=False, run_dir=None):
    """(Release, layout) of a Genesis-family checkpoint; `card`: the method's CardInfo fields."""
    obj = read_checkpoint(checkpoint, trusted=trusted)
    wrapper = "state_dict" if isinstance(obj, dict) and "state_dict" in obj else None
    full = strip_prefix(extract_state_dict(obj, wrapper))
    first = _find(full, "down_tr64.ops.0.conv1.weight")
    if first is None:
        raise ValueError("no UNet3D encoder tensors (down_tr64.ops.0.conv1.weight) in the checkpoint")
    recorded = recorded_run(checkpoint, obj)
    out = _find(full, "out_tr.final_conv.weight")
    kwargs = {"n_class": int(out.shape[0]) if out is not None else 1, "width": int(first.shape[0]),
              "always_batch_stats": not recorded.get("standard_bn", False)}
    model = build_library_model({"class": UNET3D, "kwargs": kwargs})
    report = load_pretrained(model, full, min_matched=0.0, verbose=False)  # module./classficationNet., heads dropped
    state = {k: v for k, v in model.state_dict().items() if k in report.matched}
    spec = {"class": UNET3D, "kwargs": kwargs, "keys_not_in_file": report.missing}
    released = not recorded
    layout = (f"{'original' if released else 'ours'}: {Path(checkpoint).name}, "
              f"{'encoder only (exp en)' if report.missing else 'encoder-decoder'}")
    config = {"method": method, "architecture": f"UNet3D width {kwargs['width']}"
                                                + (" (encoder only)" if report.missing else ""),
              "in_channels": 1,
              "input": {"intensity": "HU clipped to [-1000, 1000] and scaled to [0, 1]",
                        "cube_voxels": [recorded.get("input_rows", 64), recorded.get("input_cols", 64),
                                        recorded.get("input_deps", 32)],
                        "spacing": "native scan spacing (LUNA16 is not resampled, as the originals)",
                        "batch_norm": "batch statistics also in eval mode (the original's ContBatchNorm3d)"
                                      if kwargs["always_batch_stats"] else "standard BatchNorm3d (--standard_bn)"},
              "ssl_state": {"what": "the pre-training network (encoder, decoder, self-classification head)",
                            "epoch": obj.get("epoch") if isinstance(obj, dict) else None,
                            "best_loss": float(obj["best_loss"]) if "best_loss" in obj else None}}
    data_dir = recorded.get("data_dir")
    files = sorted(p.name for p in Path(data_dir).glob("*.npy")) if data_dir and Path(data_dir).is_dir() else None
    run = read_run(checkpoint, run_dir, config=recorded,
                   steps=obj.get("global_step") if isinstance(obj, dict) else None, provenance=files)
    return Release(models={MODEL_FILE: (state, spec)}, ssl_state=full, config=config,
                   card=CardInfo(**card, run=run)), layout


def main(argv, card, method, exp_name):
    p = argparse.ArgumentParser(description=f"Publish a {card['method']} checkpoint as a release folder "
                                            "(model.safetensors, ssl_state.safetensors, config.json, README.md)")
    p.add_argument("checkpoint", help=f"{exp_name}.pt, last.pt, or the released {exp_name}.pt (with --trusted)")
    p.add_argument("--out", required=True, help="release folder to write")
    add_release_args(p)
    args = p.parse_args(argv)
    return publish(args, lambda: make_release(args.checkpoint, card, method, args.trusted, args.run_dir))
