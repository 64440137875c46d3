"""Publish a DiRA checkpoint as a release folder (shared/release.py), loadable in one line.

    python dira/export.py checkpoint/DiRA_moco/dira/checkpoint.pth --out release/dira

model.safetensors: the query encoder as a torchvision / timm ResNet (no fc); unet.safetensors: the whole query
U-Net as smp.Unet (dir / dira modes); ssl_state.safetensors: every tensor of the checkpoint's model (query and
key networks, projection heads, MoCo queue; the patch discriminator of D_checkpoint.pth when it lies next to
it, under `discriminator.`). Reads our checkpoints and the original's (checkpoint.pth, best_checkpoint.pth,
unet.pth, mode-di files; Barlow Twins / SimSiam variants), through dira/transfer.py's converters.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse

from dira.transfer import _state, to_resnet_state_dict, to_unet_state_dict
from shared.release import MODEL_FILE, CardInfo, Release, add_release_args, publish, read_run
from shared.weights import extract_state_dict, read_checkpoint, strip_prefix

UNET_FILE = "unet.safetensors"
# blocks per stage -> torchvision arch (Bottleneck blocks have conv3)
ARCHS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34", ((3, 4, 6, 3), True): "resnet50",
         ((3, 4, 23, 3), True): "resnet101", ((3, 8, 36, 3), True): "resnet152"}

CARD = dict(
    method="DiRA",
    paper="DiRA: Discriminative, Restorative, and Adversarial Learning for Self-supervised Medical Image "
          "Analysis (Haghighi et al., CVPR 2022)",
    paper_url="https://arxiv.org/abs/2204.10437",
    license="other", license_name="asu-github-project-license",
    license_link="https://github.com/fhaghighi/DiRA/blob/main/LICENSE",
    datasets=["ChestX-ray14"], tags=["chest-x-ray", "resnet", "dira", "moco"],
    training_data="Chest radiographs (the original: NIH ChestX-ray14 official training list), 8-bit grayscale "
                  "repeated on 3 channels.",
    intended_use="Initialisation for fine-tuning on 2D chest X-ray classification (the ResNet) or segmentation "
                 "(the whole U-Net: encoder, decoder and restoration head).",
    limits="Pre-trained on adult frontal chest radiographs only; other modalities, views or paediatric images "
           "are out of distribution. The encoder carries no classification head (fc is Identity).",
)


def infer_arch(resnet_state):
    blocks = tuple(len({k.split(".")[1] for k in resnet_state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    arch = ARCHS.get((blocks, "layer1.0.conv3.weight" in resnet_state))
    if arch is None:
        raise ValueError(f"not a torchvision ResNet layout (blocks per stage {blocks})")
    return arch


def files_read(args):
    """The images of the run's --train_list, as the list names them (no path of the training machine)."""
    train_list = Path(args.get("train_list") or "")
    if not train_list.is_file():
        return []
    return [f"{train_list.name}: {line.split()[0]}" for line in train_list.read_text().splitlines() if line.strip()]


def ssl_state(checkpoint, obj, trusted=False):
    """Every tensor of the self-supervised model (`obj`, read from `checkpoint`), plus the discriminator of a
    D_checkpoint.pth next to a checkpoint.pth."""
    state = _state(obj)
    discriminator = Path(checkpoint).with_name("D_checkpoint.pth")
    if discriminator.is_file() and Path(checkpoint).name == "checkpoint.pth":
        d_state = strip_prefix(extract_state_dict(read_checkpoint(discriminator, trusted=trusted), "state_dict"))
        state.update({"discriminator." + k: v for k, v in d_state.items()})
    return state


def make_release(checkpoint, trusted=False, run_dir=None):
    obj = read_checkpoint(checkpoint, trusted=trusted)
    args = obj.get("args", {}) if isinstance(obj, dict) and isinstance(obj.get("args"), dict) else {}
    resnet = to_resnet_state_dict(obj)
    arch = infer_arch(resnet)
    unet = to_unet_state_dict(obj)
    full = ssl_state(checkpoint, obj, trusted)
    activation = args.get("activate", "sigmoid")
    models = {MODEL_FILE: (resnet, {"class": "torchvision.models.ResNet", "kwargs": {"arch": arch},
                                    "timm": {"model_name": arch, "kwargs": {"num_classes": 0}}})}
    has_decoder = any(k.startswith("decoder.") for k in unet)
    if has_decoder:
        models[UNET_FILE] = (unet, {"class": "segmentation_models_pytorch.Unet",
                                    "kwargs": {"encoder_name": arch, "encoder_weights": None, "classes": 1,
                                               "activation": activation}})
    mode = obj.get("mode") if isinstance(obj, dict) else None
    layout = ("ours" if args else "original") + f": {Path(checkpoint).name}" + (f", mode {mode}" if mode else "")
    config = {"method": "dira", "architecture": f"{arch} U-Net" if has_decoder else arch, "in_channels": 3,
              "input": {"size_px": args.get("img_size", 224),
                        "intensity": "8-bit grayscale radiograph / 255, repeated on 3 channels; no mean/std "
                                     "normalisation (as the original's pre-training)",
                        "pixel_size": "not resampled (ChestX-ray14 PNGs resized to the crop size)"},
              "ssl_state": {"what": "encoder_q / encoder_k (U-Nets and heads), queue, queue_ptr"
                                    + (", discriminator" if any(k.startswith("discriminator.") for k in full) else ""),
                            "epoch": obj.get("epoch") if isinstance(obj, dict) else None,
                            "method": obj.get("method", "moco") if isinstance(obj, dict) else None}}
    run = read_run(checkpoint, run_dir, config=args, provenance=files_read(args))
    card = CardInfo(**CARD, run=run)
    return Release(models=models, ssl_state=full, config=config, card=card), layout


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.pth, best_checkpoint.pth, unet.pth or a mode-di file")
    p.add_argument("--out", required=True, help="release folder to write")
    add_release_args(p)
    args = p.parse_args(argv)
    return publish(args, lambda: make_release(args.checkpoint, args.trusted, args.run_dir))


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()
    main()
