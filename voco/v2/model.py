"""VoCo v2 network: one SwinUNETR-v2 encoder shared by a student and an EMA-teacher projection head.

State-dict keys follow the original's `VoCoHead` exactly: `backbone.swinViT.*`,
`backbone.encoder{1,2,3,4,10}.*`, `student.layer{1,2,3}.0.*`, `teacher.layer{1,2,3}.0.*`, so a
checkpoint of ours loads into Large-Scale-Medical's code and the released VoCo_{B,L,H}_SSL_head into ours.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from voco.models import ProjectionHead, swinunetr
from voco.v2.loss import v2_losses

SIZES = {"B": 48, "L": 96, "H": 192}  # --size -> SwinUNETR feature_size (dist_B/L/H.sh)
HEAD_WIDTH = 1024  # hidden and output width of both heads in v2 (v1: 2048)


def head_in_dim(feature_size):
    """Width of the pooled multi-scale features the heads take: 24F (1152 / 2304 / 4608 for B / L / H)."""
    return 24 * feature_size


class Encoder(nn.Module):
    """SwinUNETR-v2 encoder -> the five globally pooled maps, concatenated: Nx1xR^3 -> Nx(24F).

    The maps are encoder1(x), encoder2(hs0), encoder3(hs1), encoder4(hs2), encoder10(hs4):
    F + F + 2F + 4F + 16F = 24F (1152 / 2304 / 4608 for B / L / H). Built from MONAI's own SwinUNETR
    (decoders dropped), so the keys are a downstream SwinUNETR's under `backbone.`.

    With `out_channels` (the omni recipe) the decoders and output block are kept too: the module is then
    a whole SwinUNETR under the same names (`decode` gives its segmentation logits)."""

    DECODERS = ("decoder5", "decoder4", "decoder3", "decoder2", "decoder1", "out")

    def __init__(self, in_channels=1, feature_size=48, use_checkpoint=False, dropout_path_rate=0.0,
                 spatial_dims=3, use_flash_attention=False, window_size=7, out_channels=None):
        super().__init__()
        net = swinunetr(in_channels, out_channels or 1, feature_size, use_checkpoint, dropout_path_rate,
                        spatial_dims, use_flash_attention, window_size)
        self.swinViT = net.swinViT
        self.encoder1, self.encoder2, self.encoder3 = net.encoder1, net.encoder2, net.encoder3
        self.encoder4, self.encoder10 = net.encoder4, net.encoder10
        if out_channels:
            for name in self.DECODERS:
                setattr(self, name, getattr(net, name))
        self.out_dim = head_in_dim(feature_size)

    def encode(self, x):
        """(the five encoder maps, the Swin stage-4 output the first decoder also reads)."""
        hs = self.swinViT(x)  # normalize=True, MONAI's default, as the original calls it
        maps = [self.encoder1(x), self.encoder2(hs[0]), self.encoder3(hs[1]), self.encoder4(hs[2]),
                self.encoder10(hs[4])]
        return maps, hs[3]

    @staticmethod
    def pool(maps):
        return torch.cat([F.adaptive_avg_pool3d(m, 1).flatten(1) for m in maps], dim=1)

    def decode(self, maps, hs3):
        """SwinUNETR's decoder path on the encoder maps: segmentation logits N x out_channels x R^3."""
        enc0, enc1, enc2, enc3, dec4 = maps
        dec = self.decoder5(dec4, hs3)
        for block, skip in ((self.decoder4, enc3), (self.decoder3, enc2), (self.decoder2, enc1),
                            (self.decoder1, enc0)):
            dec = block(dec, skip)
        return self.out(dec)

    def segment(self, x):
        """The whole SwinUNETR's forward: segmentation logits (needs `out_channels`)."""
        return self.decode(*self.encode(x))

    def forward(self, x):
        return self.pool(self.encode(x)[0])

    forward_encs = forward  # the name the frozen-feature probe (voco.probe.feature_fn) calls


def feature_dropout(x, p, training, generator=None):
    """Dropout1d on an N x C matrix: whole rows (crops) zeroed with probability p, the rest scaled by
    1/(1-p). Without a generator it is torch's own `F.dropout1d` on the global stream (the original's
    draw); with one, the same distribution from that generator (the training step seeds it per step, so
    a resumed run draws what an uninterrupted one would, whatever else used the global stream)."""
    if not training or p == 0:
        return x
    if generator is None:
        return F.dropout1d(x, p, True)
    keep = torch.empty(x.shape[0], 1, device=x.device, dtype=x.dtype).bernoulli_(1 - p, generator=generator)
    return x * keep / (1 - p)


class VoCoV2(nn.Module):
    """VoCo v2 pre-training model.

    Per step (as the original's forward): backbone on all crops of the step as one batch ->
    Dropout1d(feature_dropout) -> student head (with gradient); EMA of the head parameters; teacher head
    on the clean embeddings (no gradient). The backbone learns only through the student head.

    Args:
        feature_size: SwinUNETR width F (48 / 96 / 192 for B / L / H; tests use 12).
        hidden_dim, out_dim: widths of the heads (1024, 1024).
        ema_momentum: teacher <- m*teacher + (1-m)*student, once per step before the teacher forward (0.9).
        feature_dropout: `Dropout1d` rate on the student's input (0.2). On an N x C matrix torch's
            Dropout1d sees one unbatched C=N-channel signal, so it zeroes whole crops' embeddings (and
            scales the rest by 1/(1-p)), not single features: the original's behaviour, kept.
        teacher_init: 'random' (original: the two heads are initialised independently) or 'student'.
        other args: see `Encoder`.
    """

    def __init__(self, in_channels=1, feature_size=48, hidden_dim=HEAD_WIDTH, out_dim=HEAD_WIDTH, use_checkpoint=False,
                 dropout_path_rate=0.0, spatial_dims=3, ema_momentum=0.9, feature_dropout=0.2,
                 teacher_init="random", use_flash_attention=False, window_size=7, out_channels=None):
        super().__init__()
        self.backbone = Encoder(in_channels, feature_size, use_checkpoint, dropout_path_rate, spatial_dims,
                                use_flash_attention, window_size, out_channels)
        in_dim = self.backbone.out_dim  # the original picks 1152/2304/4608 by F; 24F is the same there
        self.student = ProjectionHead(in_dim, hidden_dim, out_dim)
        self.teacher = ProjectionHead(in_dim, hidden_dim, out_dim)
        if teacher_init == "student":
            self.teacher.load_state_dict(self.student.state_dict())
        elif teacher_init != "random":
            raise ValueError(f"teacher_init must be 'random' or 'student', got {teacher_init!r}")
        # the original keeps the teacher in the optimizer, where it never gets a gradient (AdamW skips
        # it: same numbers); here it has none at all, so neither the optimizer nor DDP sees it
        self.teacher.requires_grad_(False)
        self.ema_momentum, self.feature_dropout = ema_momentum, feature_dropout
        self.seed = 0  # with a step number, the dropout generator is seeded from (seed, step)

    @torch.no_grad()
    def ema_update(self):
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.lerp_(s.detach().to(t.dtype), 1.0 - self.ema_momentum)  # t = m*t + (1-m)*s, in place

    def embed(self, img, crops, step=None):
        """(student, teacher) head outputs for cat([img, crops]): (B*S + B*K) x out_dim each."""
        return self.heads(self.backbone(torch.cat([img, crops], dim=0)), step)  # one batch: BN sees all

    def heads(self, embeddings, step=None):
        """Feature dropout -> student head (with gradient); EMA; teacher head on the clean embeddings."""
        generator = None
        if step is not None:
            generator = torch.Generator(embeddings.device).manual_seed(self.seed * 1_000_003 + int(step))
        # the original builds a fresh nn.Dropout1d each step, always in training mode; here it follows
        # the module's mode (training is the only place the loss is computed)
        student = self.student(feature_dropout(embeddings, self.feature_dropout, self.training, generator))
        self.ema_update()
        with torch.no_grad():
            teacher = self.teacher(embeddings.detach())
        return student, teacher

    def forward(self, img, crops, labels, step=None):
        """img: (B*S)x1xR^3 random crops, crops: (B*K)x1xR^3 base crops (both sample-major), labels: BxSxK;
        step: seeds the feature dropout (None: the global stream). Returns (intra, inter, reg, logits
        BxSxK); the training loss is intra + inter + reg."""
        student, teacher = self.embed(img, crops, step)
        n = img.shape[0]
        return v2_losses(student[:n], student[n:], teacher[:n], teacher[n:], labels)
