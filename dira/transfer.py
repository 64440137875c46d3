"""Turn any DiRA checkpoint into a torchvision ResNet or an smp.Unet state dict, and load it.

Accepted inputs: `checkpoint.pth` (full, `module.encoder_q.backbone.*`), `best_checkpoint.pth` /
`unet.pth` (the 380 U-Net keys), mode `di` files (torchvision keys, with or without `encoder_q.`), and the
Barlow Twins / SimSiam variants (same `encoder_q.backbone.*` layout). The README recipes of the original
load nothing from `checkpoint.pth`; these converters select the query U-Net explicitly.

    python dira/transfer.py checkpoint/DiRA_moco/dira/checkpoint.pth --to resnet --out resnet50_dira.pth
    python dira/transfer.py checkpoint/DiRA_moco/dira/best_checkpoint.pth --to unet --out unet_dira.pth

To publish weights (safetensors, model card, one-line loading), use `python dira/export.py <checkpoint> --out DIR`
instead: its model.safetensors is this file's `--to resnet` output and its unet.safetensors the `--to unet` one
(with the head); this command stays for the single-file .pth the fine-tuning recipes read.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse

import segmentation_models_pytorch as smp
import torch
import torchvision

from shared.checkpoint import save_atomic
from shared.weights import WeightLoadError, extract_state_dict, load_pretrained, read_checkpoint, strip_prefix

UNET_PARTS = ("encoder.", "decoder.", "segmentation_head.")


def _state(checkpoint, trusted=False):
    obj = read_checkpoint(checkpoint, trusted=trusted) if isinstance(checkpoint, (str, Path)) else checkpoint
    wrapper = "state_dict" if isinstance(obj, dict) and "state_dict" in obj else None
    return strip_prefix(extract_state_dict(obj, wrapper))


def to_unet_state_dict(checkpoint, trusted=False):
    """The query U-Net as smp.Unet keys (encoder.*, decoder.*, segmentation_head.*).

    From a mode `di` file only `encoder.*` comes back (there is no decoder).
    """
    sd = _state(checkpoint, trusted)
    if any(k.startswith("encoder_q.backbone.") for k in sd):
        return {k[len("encoder_q.backbone."):]: v for k, v in sd.items() if k.startswith("encoder_q.backbone.")}
    if any(k.startswith("encoder_q.") for k in sd):  # mode di: a torchvision ResNet per encoder
        sd = {k[len("encoder_q."):]: v for k, v in sd.items() if k.startswith("encoder_q.")}
    if any(k.startswith(UNET_PARTS) for k in sd):
        return {k: v for k, v in sd.items() if k.startswith(UNET_PARTS)}
    return {"encoder." + k: v for k, v in sd.items() if not k.startswith("fc.")}


def to_resnet_state_dict(checkpoint, trusted=False):
    """The query encoder as torchvision ResNet keys (conv1.*, bn1.*, layer1-4.*; no fc)."""
    unet = to_unet_state_dict(checkpoint, trusted)
    return {k[len("encoder."):]: v for k, v in unet.items() if k.startswith("encoder.")}


def load_into_resnet(model, checkpoint, min_matched=0.95, trusted=False, verbose=True):
    """Load the encoder into a torchvision ResNet; the task head `fc` stays as built. Returns the LoadReport
    (its fraction counts the tensors other than fc)."""
    state = to_resnet_state_dict(checkpoint, trusted)
    return _load(model, state, skip=("fc.",), min_matched=min_matched, verbose=verbose, source=checkpoint)


def load_into_unet(model, checkpoint, keep_head=False, min_matched=0.95, trusted=False, verbose=True):
    """Load encoder and decoder into an smp.Unet (the head too with keep_head; the README drops it)."""
    state = to_unet_state_dict(checkpoint, trusted)
    skip = () if keep_head else ("segmentation_head.",)
    return _load(model, state, skip=skip, min_matched=min_matched, verbose=verbose, source=checkpoint)


class _Without(torch.nn.Module):
    """A view of `model`'s state dict without the keys under `skip`, for honest match counts."""

    def __init__(self, model, skip):
        super().__init__()
        self.model, self.skip = model, skip

    def state_dict(self, *a, **k):
        return {key: v for key, v in self.model.state_dict().items() if not key.startswith(self.skip)}


def _load(model, state, skip, min_matched, verbose, source=None):
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    try:
        return load_pretrained(_Without(model, skip), state, prefixes=(), drop=(), min_matched=min_matched,
                               verbose=verbose)
    except WeightLoadError as e:  # the converted dict has no name: say which file it came from
        if isinstance(source, (str, Path)):
            raise WeightLoadError(f"{source} does not fit this {type(model).__name__} (another --arch?): {e}") from None
        raise


def build_resnet(arch="resnet50", num_classes=1000):
    return torchvision.models.__dict__[arch](weights=None, num_classes=num_classes)


def build_unet(arch="resnet50", classes=1, activation="sigmoid"):
    return smp.Unet(arch, encoder_weights=None, classes=classes, activation=activation)


def main(argv=None):
    p = argparse.ArgumentParser(description="Convert a DiRA checkpoint for transfer learning")
    p.add_argument("checkpoint", help="checkpoint.pth, best_checkpoint.pth, unet.pth or a mode-di file")
    p.add_argument("--to", choices=["resnet", "unet"], required=True,
                   help="torchvision ResNet (classification) or smp.Unet (segmentation)")
    p.add_argument("--out", required=True, help="where to write the converted state dict")
    p.add_argument("-a", "--arch", default="resnet50")
    p.add_argument("--keep_head", action="store_true", help="unet: keep the restoration head")
    p.add_argument("--trusted", action="store_true", help="allow full unpickling (only for files you trust)")
    args = p.parse_args(argv)
    try:
        if args.to == "resnet":
            model = build_resnet(args.arch)
            report = load_into_resnet(model, args.checkpoint, trusted=args.trusted)
            state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
        else:
            model = build_unet(args.arch)
            report = load_into_unet(model, args.checkpoint, args.keep_head, trusted=args.trusted)
            state = {k: v for k, v in model.state_dict().items()
                     if args.keep_head or not k.startswith("segmentation_head.")}
    except WeightLoadError as e:
        raise SystemExit(f"{args.checkpoint}: {e}") from None
    save_atomic(state, args.out)
    print(f"matched {len(report.matched)}/{len(report.matched) + len(report.missing)} tensors; "
          f"wrote {len(state)} tensors to {args.out}")
    print("(to publish these weights with safetensors, a model card and one-line loading: "
          f"python dira/export.py {args.checkpoint} --out DIR)")
    return report


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one line per warning, no source line
    main()
