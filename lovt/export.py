"""After pre-training: best checkpoint, `backbone_weights.pt` (torchvision ResNet layout) and the model store.

    python lovt/export.py <checkpoint.ckpt> [--out backbone_weights.pt] [--trusted]

exports the image backbone of any LoVT/ConVIRT/CLIP Lightning checkpoint (ours, or the original's with --trusted,
whose hyper-parameters hold OmegaConf objects). Nothing here uses wandb: the best epoch is the ModelCheckpoint's
best by val/total_loss.
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="default: backbone_weights.pt next to the checkpoint")
    p.add_argument("--trusted", action="store_true", help="allow full unpickling (original LoVT checkpoints)")
    args = p.parse_args(argv)
    out = args.out or str(Path(args.checkpoint).with_name("backbone_weights.pt"))
    print(f"wrote {export_backbone(args.checkpoint, out, trusted=args.trusted)}")


if __name__ == "__main__":
    main()
