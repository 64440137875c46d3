"""VoCo networks: a SwinUNETR-v2 encoder with a projection head, and the student/teacher pair.

Each branch is cut out of MONAI's own `SwinUNETR(use_v2=True)` (its `swinViT` and `encoder1/2/3/4/10`
submodules; the decoders are thrown away), so the saved keys are exactly a downstream SwinUNETR's and
load into one with nothing renamed (145 tensors at any feature size).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR

from voco.losses import voco_losses

ENCODER_PREFIXES = ("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")


def swinunetr(in_channels=1, out_channels=14, feature_size=48, use_checkpoint=False,
              dropout_path_rate=0.0, spatial_dims=3, use_flash_attention=False, window_size=7):
    """The MONAI SwinUNETR v2 both pre-training and fine-tuning use (MONAI >= 1.5 takes no img_size)."""
    kwargs = dict(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                  drop_rate=0.0, attn_drop_rate=0.0, dropout_path_rate=dropout_path_rate,
                  use_checkpoint=use_checkpoint, spatial_dims=spatial_dims, use_v2=True,
                  window_size=window_size)
    if use_flash_attention:
        kwargs["use_flash_attention"] = True
    return SwinUNETR(**kwargs)


def encoder_keys(state_dict):
    """The keys of a SwinUNETR state dict that VoCo pre-trains (145 at any feature size)."""
    return [k for k in state_dict if k.startswith(ENCODER_PREFIXES)]


class ProjectionHead(nn.Module):
    """Linear-BN-ReLU, Linear-BN-ReLU, Linear. The BNs have no affine and no running statistics, so
    they always normalise with the current batch (all crops of all volumes of the step), also in eval."""

    def __init__(self, in_dim=1152, hidden_dim=2048, out_dim=2048):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(in_dim, hidden_dim),
                                    nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False),
                                    nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(nn.Linear(hidden_dim, hidden_dim),
                                    nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False),
                                    nn.ReLU(inplace=True))
        self.layer3 = nn.Sequential(nn.Linear(hidden_dim, out_dim))

    def forward(self, x):  # NxC -> NxD
        return self.layer3(self.layer2(self.layer1(x)))


class Swin(nn.Module):
    """One VoCo branch: SwinUNETR-v2 encoder -> 5 pooled maps (24*F = 1152-d at F=48) -> head.

    Args:
        feature_size: SwinUNETR embedding width F (48 in VoCo; tests use 12).
        hidden_dim, out_dim: projection-head widths (2048, 2048).
        use_checkpoint: activation checkpointing of the Swin blocks (original: True).
        window_size: Swin attention window (7; smaller only to make CPU tests fast).
        double_input: the CVPR-era variant that concatenates each crop with itself along the
            first spatial axis before the backbone (64^3 -> 128x64x64).
    """

    def __init__(self, in_channels=1, feature_size=48, hidden_dim=2048, out_dim=2048,
                 use_checkpoint=False, dropout_path_rate=0.0, spatial_dims=3, double_input=False,
                 use_flash_attention=False, window_size=7):
        super().__init__()
        net = swinunetr(in_channels, 1, feature_size, use_checkpoint, dropout_path_rate, spatial_dims,
                        use_flash_attention, window_size)
        self.swinViT = net.swinViT
        self.encoder1, self.encoder2, self.encoder3 = net.encoder1, net.encoder2, net.encoder3
        self.encoder4, self.encoder10 = net.encoder4, net.encoder10
        self.normalize = net.normalize
        self.double_input = double_input
        # the original hard-codes 1152, which only fits F=48; 24*F is the same number there
        self.proj_head = ProjectionHead(24 * feature_size, hidden_dim, out_dim)

    def forward_encs(self, x):  # Nx1xXxYxZ -> Nx(24F)
        if self.double_input:
            x = torch.cat([x, x], dim=2)
        hs = self.swinViT(x, self.normalize)  # 5 maps; hs[3] is computed but unused, as in the original
        maps = [self.encoder1(x), self.encoder2(hs[0]), self.encoder3(hs[1]), self.encoder4(hs[2]),
                self.encoder10(hs[4])]
        return torch.cat([F.adaptive_avg_pool3d(m, 1).flatten(1) for m in maps], dim=1)

    def forward(self, x):  # Nx1xXxYxZ -> NxD
        return self.proj_head(self.forward_encs(x))


class VoCo(nn.Module):
    """VoCo pre-training: a student and an EMA teacher, each a full `Swin` branch.

    State-dict keys are `student.*` and `teacher.*` (151 each), as the original's VoCoHead.

    Args:
        ema_momentum: teacher <- m*teacher + (1-m)*student once per step, between the student and the
            teacher forward (original: 0.9, constant).
        teacher_init: 'random' (original: built independently) or 'student' (copied at construction).
        single_network: the CVPR paper's version: no teacher; logits ReLU-cos(random, base) of the one
            network, with gradient into both the random-crop and the base-crop features.
        other args: see `Swin`.
    """

    def __init__(self, in_channels=1, feature_size=48, hidden_dim=2048, out_dim=2048,
                 use_checkpoint=False, dropout_path_rate=0.0, spatial_dims=3, ema_momentum=0.9,
                 teacher_init="random", single_network=False, double_input=False,
                 use_flash_attention=False, window_size=7):
        super().__init__()
        branch = dict(in_channels=in_channels, feature_size=feature_size, hidden_dim=hidden_dim,
                      out_dim=out_dim, use_checkpoint=use_checkpoint,
                      dropout_path_rate=dropout_path_rate, spatial_dims=spatial_dims,
                      double_input=double_input, use_flash_attention=use_flash_attention,
                      window_size=window_size)
        self.ema_momentum = ema_momentum
        self.single_network = single_network
        self.student = Swin(**branch)
        if not single_network:
            self.teacher = Swin(**branch)
            if teacher_init == "student":
                self.teacher.load_state_dict(self.student.state_dict())
            elif teacher_init != "random":
                raise ValueError(f"teacher_init must be 'random' or 'student', got {teacher_init!r}")
            # the original left the teacher in the optimizer (no grads ever reached it); here it has
            # no grads at all, so neither the optimizer nor DDP sees it
            self.teacher.requires_grad_(False)

    @torch.no_grad()
    def ema_update(self):
        m = self.ema_momentum
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.lerp_(s.detach().to(t.dtype), 1.0 - m)  # t = m*t + (1-m)*s, in place

    def forward(self, img, crops, labels, student=None):
        """img: (B*sw)x1xR^3 random crops, crops: (B*n)x1xR^3 base crops, both sample-major;
        labels: Bxswxn. `student` may be the DDP-wrapped student. Returns (pos, neg, reg, logits)."""
        student = student if student is not None else self.student
        batch = labels.shape[0]
        inputs = torch.cat([img, crops], dim=0)
        out_s = student(inputs)  # (B*sw + B*n)xD, one batch so the head's BN sees all crops
        n_rand = img.shape[0]
        if self.single_network:
            return voco_losses(out_s[:n_rand], out_s[n_rand:], None, None, labels, batch)
        self.ema_update()  # the original's point in the step: after the student forward
        with torch.no_grad():
            self.teacher.train(student.training)
            out_t = self.teacher(inputs).detach()
        return voco_losses(out_s[:n_rand], out_s[n_rand:], out_t[:n_rand], out_t[n_rand:], labels,
                           batch)
