"""torch.hub entry points: the release folders `<method>/export.py` writes, each loaded in one line.

    model = torch.hub.load("<path to this repository>", "voco_backbone", source="local", weights="release/voco")

`weights`: a release folder (every file's sha256 is checked against its config.json before it is read; only
safetensors are read, so loading runs no code). Without `weights` the same architecture at the original's
size comes back untrained. Each entry returns the library model itself: a torchvision ResNet (fc = Identity),
an smp.Unet, a MONAI SwinUNETR or a shared.unet3d.UNet3D.
"""

dependencies = ["torch", "safetensors", "huggingface_hub"]

from shared.release import MODEL_FILE, ReleaseError, build_library_model, from_pretrained, read_config

UNTRAINED = {
    "dira": {"class": "torchvision.models.ResNet", "kwargs": {"arch": "resnet50"}},
    "dira_unet": {"class": "segmentation_models_pytorch.Unet",
                  "kwargs": {"encoder_name": "resnet50", "classes": 1, "activation": "sigmoid"}},
    "lovt": {"class": "torchvision.models.ResNet", "kwargs": {"arch": "resnet50"}},
    "voco": {"class": "monai.networks.nets.SwinUNETR",
             "kwargs": {"in_channels": 1, "out_channels": 14, "feature_size": 48, "use_v2": True}},
    "semantic_genesis": {"class": "shared.unet3d.UNet3D", "kwargs": {}},
    "transvw": {"class": "shared.unet3d.UNet3D", "kwargs": {}},
}


def _load(method, weights, file=MODEL_FILE, untrained=None):
    if weights is None:
        return build_library_model(UNTRAINED[untrained or method])
    found = read_config(weights).get("method")
    if found != method:
        raise ReleaseError(f"{weights}: a {found} release, not {method} (use {found}_backbone)")
    return from_pretrained(weights, file=file)


def dira_backbone(weights=None):
    """DiRA's query encoder: torchvision ResNet (fc = Identity)."""
    return _load("dira", weights)


def dira_unet(weights=None):
    """DiRA's whole query U-Net: smp.Unet (encoder, decoder, restoration head)."""
    return _load("dira", weights, "unet.safetensors", untrained="dira_unet")


def lovt_backbone(weights=None):
    """LoVT's scan encoder: torchvision ResNet-50 (fc = Identity)."""
    return _load("lovt", weights)


def voco_backbone(weights=None):
    """VoCo's encoder in a MONAI SwinUNETR (the decoders as built: they are not pre-trained)."""
    return _load("voco", weights)


def semantic_genesis_backbone(weights=None):
    """Semantic Genesis: shared.unet3d.UNet3D (the Models Genesis layout)."""
    return _load("semantic_genesis", weights)


def transvw_backbone(weights=None):
    """TransVW: shared.unet3d.UNet3D (the Models Genesis layout)."""
    return _load("transvw", weights)
