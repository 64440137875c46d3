"""The evaluated backbone: a torchvision ResNet-50 read at named layers.

Any ResNet-50 in torchvision's key layout can be evaluated: LoVT's/ConVIRT's/CLIP's exported
`backbone_weights.pt`, the baselines' exports, DiRA's exported encoder, ImageNet weights given as a file,
or LoVT Lightning checkpoints (the ResNet keys are found under their prefixes). Nothing is downloaded.
"""

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn

from shared.weights import DEFAULT_PREFIXES, WeightLoadError, load_pretrained

# name: (torchvision child after which it is read, channels, downscale factor)
LAYERS = OrderedDict(input=(None, 3, 1), conv1=("relu", 64, 2), conv2=("layer1", 256, 4), conv3=("layer2", 512, 8),
                     conv4=("layer3", 1024, 16), conv5=("layer4", 2048, 32))
CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
# prefixes under which a ResNet sits in the checkpoints we know (LoVT's Lightning module, BYOL/SimCLR wrappers)
BACKBONE_PREFIXES = tuple(DEFAULT_PREFIXES) + ("model_a.", "feature_extractor.", "backbone_layers.",
                                               "online_encoder.", "learner.")


class ResNetFeatureExtractor(nn.Module):
    """The first 8 children of a torchvision ResNet-50 (`backbone_layers.<torchvision key>`), run only as
    deep as the deepest requested layer; returns {layer name: map}."""

    d = {name: ch for name, (_, ch, _) in LAYERS.items()}

    def __init__(self, resnet=None):
        super().__init__()
        resnet = resnet if resnet is not None else torchvision.models.resnet50(weights=None)
        self.backbone_layers = nn.ModuleDict((name, getattr(resnet, name)) for name in CHILDREN)

    def forward(self, x, layers=("conv5",)):  # x: Bx3xHxW
        wanted = {LAYERS[name][0]: name for name in layers if name != "input"}
        out = {"input": x} if "input" in layers else {}
        for child, module in self.backbone_layers.items():
            if not wanted:
                break
            x = module(x)
            if child in wanted:
                out[wanted.pop(child)] = x
        return out


def load_resnet50(weights="random", verbose=False):
    """A torchvision ResNet-50 (fc removed) from 'random' (torchvision's init), or a weights file in
    torchvision layout (ImageNet's resnet50-*.pth, any backbone_weights.pt, a checkpoint holding one).
    Every ResNet tensor must be matched (an `fc` in the file is ignored); otherwise WeightLoadError."""
    resnet = torchvision.models.resnet50(weights=None)
    resnet.fc = nn.Identity()  # heads never use it; a checkpoint's fc is dropped by the loader
    if weights in (None, "random"):
        return resnet
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} not found (give 'random' or a file)")
    report = load_pretrained(resnet, path, prefixes=BACKBONE_PREFIXES, min_matched=1.0, verbose=verbose)
    if report.missing or report.skipped_shape:
        raise WeightLoadError(f"{path} is not a complete ResNet-50:\n{report}")
    return resnet


def build_backbone(weights="random", verbose=False):
    return ResNetFeatureExtractor(load_resnet50(weights, verbose=verbose))


def backbone_state_dict(extractor: ResNetFeatureExtractor):
    """torchvision-layout state dict of an extractor (the `backbone_weights.pt` format)."""
    prefix = "backbone_layers."
    return {k[len(prefix):]: v.detach().clone() for k, v in extractor.state_dict().items()}


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def output_sizes(input_size):
    """Spatial size of each named layer for a square input (torchvision's convs: ceil-halving)."""
    sizes, s = {"input": input_size}, input_size
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        s = (s + 1) // 2
        sizes[name] = s
    return sizes
