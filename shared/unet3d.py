"""The Models Genesis 3D U-Net family, as used by Models Genesis, Semantic Genesis and TransVW.

Parameter names, registration order and shapes are those of the original `ynet3d.py`, so the released
checkpoints (`Genesis_Chest_CT.pt`, `semantic_genesis_chest_ct.pt`, `TransVW_chest_ct.pt`) load key for
key (see `shared.weights.load_pretrained`). Module names refer to channel widths at the original
width (`down_tr64` holds 64 channels when `width=32`); they stay the same at other widths so that keys
never change.

Input: N x 1 x X x Y x Z with every spatial size divisible by 8 (three poolings).

Two deliberate departures from the original's interface, neither changing any weight:
- the classification head returns logits (the original ends in a softmax); apply softmax/sigmoid in the
  loss or with `predict_proba`;
- the bottleneck comes from `encode(x)` instead of the `out512` attribute the original caches.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class ContBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d that, like the original, normalises with batch statistics even in eval mode.

    The original bypasses the running statistics entirely (its forward always passes training=True), so
    outputs depend on batch composition at inference and the running buffers are updated on every
    forward pass, validation included; `num_batches_tracked` never moves. `always_batch_stats=False`
    gives standard BatchNorm3d behaviour with the same parameter and buffer names.
    """

    def __init__(self, num_features, always_batch_stats=True, **kwargs):
        super().__init__(num_features, **kwargs)
        self.always_batch_stats = always_batch_stats

    def forward(self, x):
        if x.dim() != 5:
            raise ValueError(f"expected a 5-D input (N, C, X, Y, Z), got {x.dim()}-D")
        if not self.always_batch_stats:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            True, self.momentum, self.eps)


def _activation(act, channels):
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "prelu":
        return nn.PReLU(channels)
    if act == "elu":
        return nn.ELU(inplace=True)
    raise ValueError(f"unknown activation {act!r}: expected 'relu', 'prelu' or 'elu'")


class LUConv(nn.Module):
    """conv3x3x3 -> BN -> activation."""

    def __init__(self, in_ch, out_ch, act, always_batch_stats=True):
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.bn1 = ContBatchNorm3d(out_ch, always_batch_stats=always_batch_stats)
        self.activation = _activation(act, out_ch)

    def forward(self, x):
        return self.activation(self.bn1(self.conv1(x)))


def _make_nconv(in_ch, depth, act, width, double_channel, always_batch_stats):
    # encoder: in -> w*2^d -> 2w*2^d; decoder (double_channel): in -> 2w*2^d -> 2w*2^d
    if double_channel:
        mid = out = width * 2 ** (depth + 1)
    else:
        mid, out = width * 2 ** depth, width * 2 ** (depth + 1)
    return nn.Sequential(LUConv(in_ch, mid, act, always_batch_stats),
                         LUConv(mid, out, act, always_batch_stats))


class DownTransition(nn.Module):
    def __init__(self, in_ch, depth, act, width=32, always_batch_stats=True):
        super().__init__()
        self.ops = _make_nconv(in_ch, depth, act, width, False, always_batch_stats)
        self.maxpool = nn.MaxPool3d(2)
        self.pools = depth != 3  # the deepest block keeps its resolution

    def forward(self, x):
        skip = self.ops(x)
        return (self.maxpool(skip) if self.pools else skip), skip


class UpTransition(nn.Module):
    def __init__(self, in_ch, out_ch, depth, act, width=32, always_batch_stats=True):
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(in_ch, out_ch, kernel_size=2, stride=2)
        self.ops = _make_nconv(in_ch + out_ch // 2, depth, act, width, True, always_batch_stats)

    def forward(self, x, skip):
        return self.ops(torch.cat((self.up_conv(x), skip), dim=1))  # [upsampled, skip], as the original


class OutputTransition(nn.Module):
    def __init__(self, in_ch, n_labels):
        super().__init__()
        self.final_conv = nn.Conv3d(in_ch, n_labels, kernel_size=1)

    def forward(self, x):
        return torch.sigmoid(self.final_conv(x))


class ClassificationHead(nn.Module):
    """conv3x3x3 (16w -> 32w) -> BN -> ReLU -> global average pool -> Linear(32w -> C). Returns logits."""

    def __init__(self, in_ch=512, n_classes=44, width=32, always_batch_stats=True):
        super().__init__()
        hidden = width * 32
        self.conv1 = nn.Conv3d(in_ch, hidden, kernel_size=3, padding=1)
        self.bn1 = ContBatchNorm3d(hidden, always_batch_stats=always_batch_stats)
        self.fc1 = nn.Linear(hidden, n_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.fc1(torch.flatten(F.adaptive_avg_pool3d(x, 1), 1))  # N x C logits


class _Encoder(nn.Module):
    """The four down transitions; registered on the subclasses directly so keys stay unprefixed."""

    def _build_encoder(self, act, width, always_batch_stats):
        self.down_tr64 = DownTransition(1, 0, act, width, always_batch_stats)
        self.down_tr128 = DownTransition(2 * width, 1, act, width, always_batch_stats)
        self.down_tr256 = DownTransition(4 * width, 2, act, width, always_batch_stats)
        self.down_tr512 = DownTransition(8 * width, 3, act, width, always_batch_stats)

    def _encode_with_skips(self, x):
        _check_input(x)
        out64, skip64 = self.down_tr64(x)
        out128, skip128 = self.down_tr128(out64)
        out256, skip256 = self.down_tr256(out128)
        bottleneck, _ = self.down_tr512(out256)
        return bottleneck, (skip64, skip128, skip256)

    def encode(self, x):
        """N x 1 x X x Y x Z -> the N x 16w x X/8 x Y/8 x Z/8 bottleneck (`out512` in the original)."""
        return self._encode_with_skips(x)[0]


def _check_input(x):
    if x.dim() != 5 or x.shape[1] != 1:
        raise ValueError(f"expected input of shape (N, 1, X, Y, Z), got {tuple(x.shape)}")
    if any(s % 8 for s in x.shape[2:]):
        raise ValueError(f"every spatial size must be divisible by 8, got {tuple(x.shape[2:])}")


class UNet3D(_Encoder):
    """Encoder-decoder; returns the sigmoid volume N x n_class x X x Y x Z.

    Args:
        n_class: output channels of the final 1x1x1 conv (1 in every original checkpoint).
        act: 'relu' (the original's only used choice), 'prelu' or 'elu'.
        width: channels of the first conv; 32 is the original. Narrower widths are for tests and demos.
        always_batch_stats: the original's BatchNorm that uses batch statistics in eval mode too.
    """

    def __init__(self, n_class=1, act="relu", width=32, always_batch_stats=True):
        super().__init__()
        self._build_encoder(act, width, always_batch_stats)
        self._build_decoder(n_class, act, width, always_batch_stats)

    def _build_decoder(self, n_class, act, width, always_batch_stats):
        self.up_tr256 = UpTransition(16 * width, 16 * width, 2, act, width, always_batch_stats)
        self.up_tr128 = UpTransition(8 * width, 8 * width, 1, act, width, always_batch_stats)
        self.up_tr64 = UpTransition(4 * width, 4 * width, 0, act, width, always_batch_stats)
        self.out_tr = OutputTransition(2 * width, n_class)

    def _decode(self, bottleneck, skips):
        skip64, skip128, skip256 = skips
        x = self.up_tr256(bottleneck, skip256)
        x = self.up_tr128(x, skip128)
        x = self.up_tr64(x, skip64)
        return self.out_tr(x)

    def forward(self, x):
        return self._decode(*self._encode_with_skips(x))


class YNet3D(UNet3D):
    """U-Net plus a classification head on the bottleneck; forward returns (seg_sigmoid, cls_logits)."""

    def __init__(self, n_class=1, act="relu", cls_classes=44, width=32, always_batch_stats=True):
        super().__init__(n_class, act, width, always_batch_stats)
        self.clc_out = ClassificationHead(16 * width, cls_classes, width, always_batch_stats)

    def forward(self, x):
        bottleneck, skips = self._encode_with_skips(x)
        return self._decode(bottleneck, skips), self.clc_out(bottleneck)


class ClassificationNet3D(_Encoder):
    """Encoder plus the classification head, no decoder; forward returns N x cls_classes logits."""

    def __init__(self, act="relu", cls_classes=44, width=32, always_batch_stats=True):
        super().__init__()
        self._build_encoder(act, width, always_batch_stats)
        self.clc_out = ClassificationHead(16 * width, cls_classes, width, always_batch_stats)

    def forward(self, x):
        return self.clc_out(self.encode(x))


def predict_proba(logits):
    """Softmax over classes: what the original head returned."""
    return torch.softmax(logits, dim=1)
