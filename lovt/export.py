"""After pre-training: best checkpoint, `backbone_weights.pt` (torchvision ResNet layout), the model store, and
the release folder (shared/release.py) a user loads in one line.

    python lovt/export.py <checkpoint.ckpt> --out release/lovt [--trusted]        # release folder
    python lovt/export.py <checkpoint.ckpt> [--out backbone_weights.pt] [--trusted]  # the earlier single file

read any LoVT/ConVIRT/CLIP Lightning checkpoint (ours, or the original's with --trusted, whose hyper-parameters
hold OmegaConf objects). The release's model.safetensors is the scan encoder's ResNet-50 (torchvision / timm keys,
no fc); ssl_state.safetensors every tensor of the Lightning module (both encoders, projection heads, cross-modal
attention; no optimizer). Without --out, or with an --out ending in .pt/.pth, the earlier single file is written.
Nothing here uses wandb: the best epoch is the ModelCheckpoint's best by val/total_loss.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import re
import shutil

from shared.checkpoint import save_atomic
from shared.release import MODEL_FILE, CardInfo, Release, add_release_args, publish, read_run
from shared.weights import extract_state_dict, read_checkpoint

# ours (model.model_a...) and the original's (model_a...) key prefixes of the ResNet layers
BACKBONE_PREFIXES = ("model.model_a.encoder.feature_extractor.backbone_layers.",
                     "model_a.encoder.feature_extractor.backbone_layers.")


def backbone_state_dict(state_dict: dict) -> dict:
    """torchvision ResNet keys (conv1.weight, layer1.0.bn1.running_mean, ...) from a full LoVT state dict."""
    for prefix in BACKBONE_PREFIXES:
        out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if out:
            return out
    raise KeyError(f"no scan-encoder backbone keys ({' or '.join(BACKBONE_PREFIXES)}*) in the checkpoint")


def export_backbone(checkpoint, out_path, trusted: bool = False) -> Path:
    """Write the ResNet of a Lightning checkpoint as a plain torchvision state dict (atomically)."""
    obj = read_checkpoint(checkpoint, trusted=trusted)
    state = backbone_state_dict(extract_state_dict(obj, wrapper="state_dict" if "state_dict" in obj else None))
    return save_atomic({k: v.clone() for k, v in state.items()}, out_path)


def rename_best(best_path: Path) -> Path:
    """pretrain-epoch=0007.ckpt -> pretrain-epoch0007.ckpt, the name downstream evaluation looks for."""
    new = best_path.with_name(re.sub(r"epoch=(\d+)", r"epoch\1", best_path.name))
    if new != best_path and (best_path.exists() or not new.exists()):  # already renamed by an earlier export
        best_path.replace(new)
    return new


def finalize_run(run_dir, name: str, best_path, best_score=None, best_epoch=None, models_base_path=None,
                 pretrained_models_folder: str = "pretraining", move: bool = True) -> Path:
    """Rename the best checkpoint, export its backbone, write run_info.json, move the run into the model store.

    Returns the final run folder (`<models_base_path>/<pretrained_models_folder>/<name>` when moved).
    """
    run_dir = Path(run_dir)
    info = {"name": name, "best_epoch": best_epoch, "best_val_total_loss": best_score}
    if best_path:
        best = rename_best(Path(best_path))
        export_backbone(best, run_dir / "checkpoints" / "backbone_weights.pt")
        info["best_checkpoint"] = str(best.resolve().relative_to(run_dir.resolve()))  # Lightning's path is absolute
        info["backbone_weights"] = "checkpoints/backbone_weights.pt"
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=2))
    if not move or models_base_path is None:
        return run_dir
    target = Path(models_base_path) / pretrained_models_folder / name
    if target.resolve() == run_dir.resolve():  # a resumed run that already lives in the model store
        return run_dir
    if target.exists():
        raise FileExistsError(f"{target} already exists; the run stays in {run_dir} (choose another name=...)")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(target))
    info["run_path"] = str(target)
    (target / "run_info.json").write_text(json.dumps(info, indent=2))
    return target


def make_release(checkpoint, trusted=False, run_dir=None):
    """(Release, layout) of a Lightning checkpoint of LoVT / ConVIRT / CLIP (ours or the original's)."""
    obj = read_checkpoint(checkpoint, trusted=trusted)
    full = extract_state_dict(obj, wrapper="state_dict" if "state_dict" in obj else None)
    backbone = backbone_state_dict(full)
    hparams = _plain(obj.get("hyper_parameters") or {})
    scan_encoder = (hparams.get("config") or {}).get("encoder_a") or {}
    ours = any(k.startswith(BACKBONE_PREFIXES[0]) for k in full)
    arch = "resnet50" if "layer1.0.conv3.weight" in backbone else "resnet18"
    spec = {"class": "torchvision.models.ResNet", "kwargs": {"arch": arch},
            "timm": {"model_name": arch, "kwargs": {"num_classes": 0}}}
    config = {"method": "lovt", "architecture": arch, "in_channels": int(backbone["conv1.weight"].shape[1]),
              "input": {"size_px": scan_encoder.get("input_size", [224, 224]),
                        "intensity": "8-bit grayscale / 255, then (x - pixel_mean) / pixel_std of the pre-training "
                                     "dataset's stats (its dataset folder), repeated on 3 channels",
                        "pixel_size": "not resampled (MIMIC-CXR-JPG resized to the crop size)"},
              "ssl_state": {"what": "the Lightning module: scan and report encoders, projection heads, attention",
                            "epoch": obj.get("epoch"), "global_step": obj.get("global_step")}}
    folder = Path(checkpoint).parent
    run_dir = run_dir or (folder.parent if folder.name == "checkpoints" else folder)
    recorded = {k: v for k, v in hparams.items() if isinstance(v, (dict, str, int, float, bool, list))}
    run = read_run(checkpoint, run_dir, config=recorded, steps=obj.get("global_step"))
    layout = f"{'ours' if ours else 'original'}: {Path(checkpoint).name}"
    from_imagenet = scan_encoder.get("backbone_pretrained", True)
    card = CardInfo(**{**CARD, "base_model": CARD["base_model"] if from_imagenet else None}, run=run)
    return Release(models={MODEL_FILE: (backbone, spec)}, ssl_state=full, config=config, card=card), layout


def _plain(hparams):
    """Hyper-parameters as plain dicts (the original's hold OmegaConf objects, read with --trusted)."""
    if not isinstance(hparams, dict):
        try:
            from omegaconf import OmegaConf
            return _plain(OmegaConf.to_container(hparams, resolve=False))
        except Exception:  # not an OmegaConf node either: nothing to read
            return {}
    return {k: _plain(v) if not isinstance(v, (str, int, float, bool, list, type(None))) else v
            for k, v in hparams.items()}


CARD = dict(
    method="LoVT",
    paper="Joint Learning of Localized Representations from Medical Images and Reports (Müller et al., ECCV 2022)",
    paper_url="https://arxiv.org/abs/2112.02889",
    license="other", license_name="physionet-credentialed-health-data-license-1.5.0",
    license_link="https://physionet.org/content/mimic-cxr/view-license/2.0.0/",
    datasets=["MIMIC-CXR-JPG"], tags=["chest-x-ray", "resnet", "vision-language", "lovt"],
    base_model="timm/resnet50.tv_in1k",
    training_data="Frontal chest radiographs with their radiology reports (the original: MIMIC-CXR-JPG 2.0.0, AP/PA "
                  "views, findings and impression sections); the image encoder starts from ImageNet weights.",
    intended_use="Initialisation of a ResNet-50 for 2D chest X-ray classification, detection or segmentation "
                 "(the localized tasks of lovt/evaluate.py).",
    limits="Trained on MIMIC-CXR: weights derived from credentialed data follow its data use agreement; adult "
           "ICU-heavy population of one hospital, frontal views only. The encoder carries no classifier (fc is "
           "Identity); the report encoder is in ssl_state.safetensors only.",
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None,
                   help="release folder; a name ending in .pt/.pth, or none, writes the earlier backbone_weights.pt")
    add_release_args(p)
    args = p.parse_args(argv)
    if args.out is None or args.out.endswith((".pt", ".pth")):
        out = args.out or str(Path(args.checkpoint).with_name("backbone_weights.pt"))
        print(f"wrote {export_backbone(args.checkpoint, out, trusted=args.trusted)}")
        print("(to publish the weights with safetensors, a model card and one-line loading: --out DIR, a folder)")
        return Path(out)
    return publish(args, lambda: make_release(args.checkpoint, args.trusted, args.run_dir))


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()
    main()
