"""Our two 3D architectures in the form nnU-Net v2 builds networks from its plans.

nnU-Net instantiates `plans["configurations"][c]["architecture"]["network_class_name"]` as
`cls(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)` and expects logits
(it applies its own softmax). These are thin subclasses of `shared.unet3d.UNet3D` (Models Genesis,
Semantic Genesis, TransVW) and MONAI's `SwinUNETR` (VoCo): no module is added or renamed, so their
state-dict keys are exactly those our checkpoints hold.

The adapter gives the encoder what it was pre-trained on. nnU-Net hands the network the raw HU values
(the plans configuration asks for `NoNormalization`) in the axis order of its preprocessed arrays:
SimpleITK's (z, y, x), permuted by the plans' `transpose_forward`. Our encoders were pre-trained on
(x, y, z) arrays with HU clipped to a window and scaled to [0, 1]:
  Genesis family  [-1000, 1000] -> [0, 1]   (shared/genesis/ct_volumes.py: normalize_hu)
  VoCo            [-175, 250]   -> [0, 1]   (voco/data.py: ScaleIntensityRanged)
So `forward` windows and scales the intensities, permutes the spatial axes to (x, y, z), runs the
network, and permutes the logits back. Neither step has weights.
"""

import torch
from monai.networks.nets import SwinUNETR

from shared.unet3d import UNet3D

GENESIS_HU_WINDOW = (-1000.0, 1000.0)
VOCO_HU_WINDOW = (-175.0, 250.0)
XYZ_FROM_ZYX = (2, 1, 0)  # original axis of SimpleITK's (z, y, x) array that holds x, y, z


def spatial_permutation(transpose_forward):
    """Which axis of nnU-Net's preprocessed array holds x, y and z, given the plans' `transpose_forward`.

    nnU-Net's array axis j is SimpleITK axis transpose_forward[j] of the (z, y, x) image.
    """
    transpose_forward = [int(a) for a in transpose_forward]
    if sorted(transpose_forward) != [0, 1, 2]:
        raise ValueError(f"transpose_forward must be a permutation of (0, 1, 2), got {transpose_forward}")
    return [transpose_forward.index(axis) for axis in XYZ_FROM_ZYX]


class PretrainingInput:
    """HU window -> [0, 1] and the (x, y, z) axis order, applied in `forward` around the wrapped network."""

    def _set_input(self, input_channels, hu_window, axes_xyz):
        if input_channels != 1:
            raise ValueError(f"our encoders take one CT channel, the plans give input_channels={input_channels}")
        low, high = (float(v) for v in hu_window)
        if not high > low:
            raise ValueError(f"hu_window must be (low, high) with high > low, got {hu_window}")
        if sorted(axes_xyz) != [0, 1, 2]:
            raise ValueError(f"axes_xyz must be a permutation of (0, 1, 2), got {axes_xyz}")
        self.hu_window = (low, high)
        self.axes_xyz = [int(a) for a in axes_xyz]
        self._inverse = [self.axes_xyz.index(a) for a in range(3)]

    def to_pretraining_input(self, x):
        """nnU-Net's (N, 1, *spatial) HU tensor -> the (N, 1, X, Y, Z) [0, 1] tensor the encoder saw."""
        low, high = self.hu_window
        x = (x.clamp(low, high) - low) / (high - low)
        return x.permute(0, 1, *(2 + a for a in self.axes_xyz))

    def to_nnunet_axes(self, logits):
        return logits.permute(0, 1, *(2 + a for a in self._inverse))


def _no_deep_supervision(deep_supervision, name):
    if deep_supervision:
        raise ValueError(f"{name} has no deep-supervision outputs: train it with eval3d.nnunet's trainer "
                         "(-tr nnUNetTrainerOurs), which turns deep supervision off")


class GenesisUNet3D(PretrainingInput, UNet3D):
    """`shared.unet3d.UNet3D` with nnU-Net's constructor; returns logits (no sigmoid).

    arch_kwargs: width (32 as released), act, always_batch_stats (the original's BatchNorm that uses
    batch statistics in eval too), hu_window, axes_xyz (from `spatial_permutation`).
    """

    def __init__(self, input_channels=1, num_classes=2, deep_supervision=False, width=32, act="relu",
                 always_batch_stats=True, hu_window=GENESIS_HU_WINDOW, axes_xyz=(2, 1, 0)):
        _no_deep_supervision(deep_supervision, type(self).__name__)
        super().__init__(n_class=num_classes, act=act, width=width, always_batch_stats=always_batch_stats)
        self._set_input(input_channels, hu_window, axes_xyz)

    def forward(self, x):
        bottleneck, (skip64, skip128, skip256) = self._encode_with_skips(self.to_pretraining_input(x))
        y = self.up_tr256(bottleneck, skip256)
        y = self.up_tr128(y, skip128)
        y = self.up_tr64(y, skip64)
        return self.to_nnunet_axes(self.out_tr.final_conv(y))  # logits: the released head's sigmoid left out


class VoCoSwinUNETR(PretrainingInput, SwinUNETR):
    """MONAI's `SwinUNETR(use_v2=True)` as VoCo builds it, with nnU-Net's constructor (it returns logits).

    arch_kwargs: feature_size (48 in VoCo), window_size, dropout_path_rate, use_checkpoint, hu_window,
    axes_xyz. Every spatial patch size must be a multiple of 32.
    """

    def __init__(self, input_channels=1, num_classes=2, deep_supervision=False, feature_size=48, window_size=7,
                 dropout_path_rate=0.0, use_checkpoint=False, hu_window=VOCO_HU_WINDOW, axes_xyz=(2, 1, 0)):
        _no_deep_supervision(deep_supervision, type(self).__name__)
        super().__init__(in_channels=input_channels, out_channels=num_classes, feature_size=feature_size,
                         drop_rate=0.0, attn_drop_rate=0.0, dropout_path_rate=dropout_path_rate,
                         use_checkpoint=use_checkpoint, spatial_dims=3, use_v2=True, window_size=window_size)
        self._set_input(input_channels, hu_window, axes_xyz)

    def forward(self, x):
        return self.to_nnunet_axes(super().forward(self.to_pretraining_input(x)))


NETWORKS = {"genesis": GenesisUNet3D, "voco": VoCoSwinUNETR}


def network_class_path(cls):
    """The dotted name nnU-Net's plans use to find `cls` (pydoc.locate)."""
    return f"{cls.__module__}.{cls.__qualname__}"


@torch.no_grad()
def first_layer_input(network, x):
    """The tensor `network`'s first convolution receives for input `x` (what the adapter hands the encoder)."""
    first = network.down_tr64.ops[0].conv1 if isinstance(network, UNet3D) else network.swinViT.patch_embed.proj
    seen = []
    handle = first.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        network.eval()
        network(x)
    finally:
        handle.remove()
    return seen[0]
