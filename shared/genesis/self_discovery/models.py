"""The self-discovery autoencoders, in PyTorch, shaped like the originals' Keras models.

`arch="Unet"` is the original's `unet_model_3d` (skip connections, the default since April 2021);
`arch="Vnet"` is its `vnet_model_3d`, which despite the name is the same network with the skip
concatenations removed (the default before). Both: depth 4, conv 3x3x3 + BatchNorm + ReLU twice per
level, max-pool 2, nearest-neighbour up-sampling, 1x1x1 conv + sigmoid.

Layers are named like the Keras ones (`depth_0` ... `depth_13`, `final_conv`) so a Keras .h5 can be
mapped name by name. Keras numerics are kept: BatchNorm momentum 0.99 (PyTorch 0.01), eps 1e-3,
moving statistics at inference; Glorot-uniform kernels and zero biases.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("Unet", "Vnet")


class ConvBlock(nn.Sequential):
    """Conv3d 3x3x3 'same' -> BatchNorm (Keras numerics) -> ReLU."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.bn = nn.BatchNorm3d(out_ch, eps=1e-3, momentum=0.01)
        self.relu = nn.ReLU(inplace=True)


class Autoencoder3D(nn.Module):
    def __init__(self, arch="Unet", width=32, depth=4, n_labels=1):
        """
        arch:  "Unet" (with skips) or "Vnet" (the skip-less encoder-decoder).
        width: filters of the first convolution (n_base_filters, 32 in the original); level l has
               width*2^l then width*2^(l+1) channels, so the bottleneck has width*2^depth (512).
        depth: number of levels (4); inputs must be divisible by 2^(depth-1) along every axis.
        """
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.arch, self.width, self.depth = arch, width, depth
        self.skips = arch == "Unet"
        layers, in_ch, n = {}, 1, 0
        for level in range(depth):
            for out_ch in (width * 2 ** level, width * 2 ** (level + 1)):
                layers[f"depth_{n}"] = ConvBlock(in_ch, out_ch)
                in_ch, n = out_ch, n + 1
        self.n_encoder = n
        for level in range(depth - 2, -1, -1):
            skip_ch = width * 2 ** (level + 1)  # channels of that encoder level's output
            cat_ch = in_ch + skip_ch if self.skips else in_ch
            layers[f"depth_{n}"] = ConvBlock(cat_ch, skip_ch)
            layers[f"depth_{n + 1}"] = ConvBlock(skip_ch, skip_ch)
            in_ch, n = skip_ch, n + 2
        self.layers = nn.ModuleDict(layers)
        self.final_conv = nn.Conv3d(in_ch, n_labels, 1)
        self.feature_dim = width * 2 ** depth
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _encode(self, x):
        skips = []
        for level in range(self.depth):
            x = self.layers[f"depth_{2 * level + 1}"](self.layers[f"depth_{2 * level}"](x))
            if level < self.depth - 1:
                skips.append(x)
                x = F.max_pool3d(x, 2)
        return x, skips

    def encode(self, x):
        """N x 1 x X x Y x Z -> the deepest encoder output (Keras `depth_7_relu`), N x 16w x X/8 x Y/8 x Z/8."""
        return self._encode(x)[0]

    def features(self, x):
        """Global-average-pooled bottleneck: N x 16w (512-d with the default width)."""
        return self.encode(x).mean(dim=(2, 3, 4))

    def forward(self, x):
        x, skips = self._encode(x)
        n = self.n_encoder
        for skip in reversed(skips):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if self.skips:
                x = torch.cat([x, skip], dim=1)  # [up, skip], the Keras order
            x = self.layers[f"depth_{n + 1}"](self.layers[f"depth_{n}"](x))
            n += 2
        return torch.sigmoid(self.final_conv(x))
