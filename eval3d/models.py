"""Task networks around an encoder: the two modes of every task.

- full: the whole network trains. Classification: encoder -> global average pool of the deepest map ->
  Linear (the Genesis family's TargetNet); segmentation: the architecture's own U-shaped network
  (UNet3D, or SwinUNETR with its decoder), logits out.
- frozen: the encoder's weights stay as loaded (no gradient, eval mode) and only a head trains.
  Classification: the same Linear head (a linear probe trained by the same optimiser); segmentation: a
  light decoder: every encoder scale -> 1x1x1 conv to 16 channels -> trilinear upsampling to the input ->
  sum -> ReLU -> 1x1x1 conv to the classes.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from eval3d.encoders import encoder_prefixes

LIGHT_CHANNELS = 16


def encoder_maps(network, arch, x):
    """The encoder's feature maps, shallow to deep (the last one is what classification pools)."""
    if arch == "unet3d":
        bottleneck, skips = network._encode_with_skips(x)
        return [*skips, bottleneck]
    hs = network.swinViT(x, network.normalize)
    return [network.encoder1(x), network.encoder2(hs[0]), network.encoder3(hs[1]), network.encoder4(hs[2]),
            network.encoder10(hs[4])]


def map_channels(arch, config):
    if arch == "unet3d":
        w = config["width"]
        return [2 * w, 4 * w, 8 * w, 16 * w]
    f = config["feature_size"]
    return [f, f, 2 * f, 4 * f, 16 * f]


class TaskNet(nn.Module):
    """network: the library UNet3D / SwinUNETR (weights loaded or not); task 'classification' or 'segmentation'."""

    def __init__(self, network, arch, config, task, n_class, frozen):
        super().__init__()
        self.network, self.arch, self.task, self.frozen = network, arch, task, frozen
        channels = map_channels(arch, config)
        if task == "classification":
            self.head = nn.Linear(channels[-1], n_class)
        elif frozen:
            self.head = nn.ModuleList(nn.Conv3d(c, LIGHT_CHANNELS, 1) for c in channels)
            self.out = nn.Conv3d(LIGHT_CHANNELS, n_class, 1)
        if frozen:
            for name, p in network.named_parameters():
                if name.startswith(encoder_prefixes(arch)):
                    p.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            self.network.eval()  # a frozen encoder keeps its statistics (UNet3D's BatchNorm uses the batch's anyway)
        return self

    def _maps(self, x):
        if self.frozen:
            with torch.no_grad():
                return encoder_maps(self.network, self.arch, x)
        return encoder_maps(self.network, self.arch, x)

    def forward(self, x):
        """Logits: N x n_class (classification) or N x n_class x X x Y x Z (segmentation)."""
        if self.task == "classification":
            return self.head(F.adaptive_avg_pool3d(self._maps(x)[-1], 1).flatten(1))
        if self.frozen:
            size = x.shape[2:]
            summed = sum(F.interpolate(conv(m), size=size, mode="trilinear", align_corners=False)
                         for conv, m in zip(self.head, self._maps(x)))
            return self.out(F.relu(summed))
        if self.arch == "unet3d":  # the U-Net without its final sigmoid
            net = self.network
            bottleneck, (s64, s128, s256) = net._encode_with_skips(x)
            y = net.up_tr64(net.up_tr128(net.up_tr256(bottleneck, s256), s128), s64)
            return net.out_tr.final_conv(y)
        return self.network(x)
