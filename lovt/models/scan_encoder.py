"""Image side: torchvision ResNet feature extractor, region features and the global (pooled) vector."""
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from lovt.models.components import AttentionPool
from lovt.models.config import ScanEncoderConfig

# name -> (index of the last torchvision child to run, channels for ResNet-50, downscale factor)
RESNET_LAYERS = {"input": (-1, 3, 1), "conv1": (2, 64, 2), "conv2": (4, 256, 4), "conv3": (5, 512, 8),
                 "conv4": (6, 1024, 16), "conv5": (7, 2048, 32)}
BACKBONE_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
IMAGENET_V1_FILES = {"resnet50": "resnet50-0676ba61.pth", "resnet18": "resnet18-f37072fd.pth"}


def _cached_imagenet_weights(arch: str) -> Path:
    """The ImageNet-1k V1 file in the local torch hub cache; never downloaded at run time."""
    name = IMAGENET_V1_FILES.get(arch)
    path = Path(torch.hub.get_dir()) / "checkpoints" / (name or f"{arch}-?.pth")
    if name is None or not path.is_file():
        raise FileNotFoundError(
            f"backbone_pretrained=true needs the torchvision ImageNet-1k V1 weights of {arch} at {path}. Fetch them "
            f"once (e.g. `python -c \"import torchvision; torchvision.models.{arch}(weights='IMAGENET1K_V1')\"` on a "
            f"machine with internet, then copy the file), or set pretrain_model.encoder_a.backbone_pretrained=false.")
    return path


def resolve_backbone_checkpoint(spec: str, models_base_path: str | None = None) -> Path:
    if spec.startswith("baseline:"):
        base = models_base_path or os.environ.get("LOVT_MODELS_BASE_PATH", "models")
        return Path(base) / "baselines" / spec.split(":", 1)[1] / "checkpoints" / "backbone_weights.pt"
    return Path(spec)


def build_resnet(config: ScanEncoderConfig, models_base_path: str | None = None) -> nn.Module:
    if config.backbone_architecture != "resnet":
        raise ValueError(f"backbone_architecture {config.backbone_architecture!r} is not supported (only 'resnet')")
    arch = config.backbone_model[-1]
    resnet = getattr(torchvision.models, arch)(weights=None, **config.backbone_args)
    path = None
    if config.backbone_checkpoint:
        path = resolve_backbone_checkpoint(config.backbone_checkpoint, models_base_path)
    elif config.backbone_pretrained:
        path = _cached_imagenet_weights(arch)
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"backbone checkpoint {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        # the freshly initialised fc is kept, as in the original
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        state.update({k: v for k, v in resnet.state_dict().items() if k.startswith("fc.")})
        resnet.load_state_dict(state, strict=True)
    return resnet


class ResNetFeatureExtractor(nn.Module):
    """Runs the first 8 children of a torchvision ResNet (no avgpool/fc), only as deep as needed.
    Keys are `backbone_layers.<torchvision key>`, so stripping the prefix gives a torchvision state dict."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.backbone_layers = nn.ModuleDict({name: getattr(resnet, name) for name in BACKBONE_CHILDREN})

    def forward(self, x, layers=("conv5",)):
        deepest = max(RESNET_LAYERS[name][0] for name in layers)
        wanted = {RESNET_LAYERS[name][0]: name for name in layers}
        out = {"input": x} if "input" in layers else {}
        for i, name in enumerate(BACKBONE_CHILDREN[: deepest + 1]):
            x = self.backbone_layers[name](x)
            if i in wanted:
                out[wanted[i]] = x
        return out


class ScanEncoder(nn.Module):
    """ResNet regions (conv5: B x 2048 x h x w -> B x hw x 2048) and a global vector pooled from them.

    global_aggregator: 'avg' (ConVIRT, = ResNet average pooling), 'max', or 'avgpool_attention' (LoVT, CLIP:
    8-head attention with the mean region as query; its head-averaged weights are the region weights).
    """

    def __init__(self, config: ScanEncoderConfig, models_base_path: str | None = None):
        super().__init__()
        if config.global_feature_layer != "local":
            raise ValueError("only global_feature_layer='local' is implemented (used by all experiments)")
        if config.add_region_pos_encodings or config.concat_global_with_regions:
            raise ValueError("add_region_pos_encodings / concat_global_with_regions are not implemented (unused)")
        self.config = config
        self.channels_last = False  # set by use_channels_last(): faster convolutions under mixed precision on GPUs
        resnet = build_resnet(config, models_base_path)
        self.feature_extractor = ResNetFeatureExtractor(resnet)
        self.region_layer = config.region_feature_layer
        if self.region_layer not in RESNET_LAYERS:
            raise ValueError(f"region_feature_layer {self.region_layer!r}: one of {sorted(RESNET_LAYERS)}")
        scale = RESNET_LAYERS[self.region_layer][2]
        # ResNet-50 channels scaled by the block expansion (ResNet-18/34: 512 at conv5 instead of 2048)
        expansion = resnet.fc.in_features // 512
        channels = RESNET_LAYERS[self.region_layer][1]
        self.d_l = self.d_g = channels if self.region_layer in ("input", "conv1") else channels * expansion // 4
        self.max_region_size = (config.input_size[0] // scale, config.input_size[1] // scale)
        if config.global_aggregator == "avgpool_attention":
            self.global_aggregator = AttentionPool(self.d_l, config.attention_heads)
        elif config.global_aggregator not in ("avg", "max"):
            raise ValueError(f"unknown global_aggregator {config.global_aggregator!r}")

    def use_channels_last(self, enabled: bool = True):
        self.channels_last = enabled
        self.feature_extractor.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    def forward(self, scan):
        # scan: Bx3xHxW
        if self.channels_last:
            scan = scan.contiguous(memory_format=torch.channels_last)
        regions = self.feature_extractor(scan, (self.region_layer,))[self.region_layer]  # Bxdxhxw
        structure = tuple(regions.shape[2:])
        local = regions.flatten(2).transpose(1, 2).contiguous()  # Bx(h*w)xd, row-major regions
        weights = None
        if self.config.global_aggregator == "avg":
            global_ = local.mean(1)
        elif self.config.global_aggregator == "max":
            global_ = local.max(1).values
        else:
            global_, att = self.global_aggregator(local)
            weights = att if self.config.local_weights_from_aggregator else None
        return {"local": local, "global": global_, "mask": None, "weights": weights, "structure": structure}
