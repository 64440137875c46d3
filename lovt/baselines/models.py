"""The baselines' learners, written from their definitions (the original used lucidrains'
byol-pytorch and pixel-level-contrastive-learning and Spijkervet's simclr). Each holds a torchvision
ResNet-50 as `resnet` (its state dict is the exported backbone_weights.pt) and returns its loss from
`forward(batch)`; BYOL and PixelPro also have `update_target()` (EMA after each optimizer step).
"""

import copy
import math
import random

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

CHEXPERT_LABELS = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")


def resnet50(init_weights=None):
    """torchvision ResNet-50; `init_weights` a torchvision-layout file (the original starts from ImageNet,
    which is given as a file here since nothing is downloaded), None = random init."""
    net = torchvision.models.resnet50(weights=None)
    if init_weights:
        from shared.weights import load_pretrained
        load_pretrained(net, init_weights, drop=(), min_matched=1.0, verbose=False)
    return net


def pooled(resnet, x):
    """Bx2048x1x1: the ResNet up to avgpool (the layer the original's learners hook)."""
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"):
        x = getattr(resnet, name)(x)
    return x


def mlp(dim, hidden, out):
    """Linear -> BatchNorm1d -> ReLU -> Linear (BYOL's projector/predictor)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


def byol_loss(p, z):
    """2 - 2 cos(p, z) per sample."""
    return 2 - 2 * (F.normalize(p, dim=-1) * F.normalize(z, dim=-1)).sum(-1)


@torch.no_grad()
def ema_update(target, online, decay):
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(decay).add_(o.detach(), alpha=1 - decay)


class SupervisedClassifier(nn.Module):
    """CheXpert-supervised: ResNet-50 with fc -> Linear(2048, 5), multi-label BCE with logits."""

    def __init__(self, init_weights=None, num_labels=5):
        super().__init__()
        self.resnet = resnet50(init_weights)
        self.resnet.fc = nn.Linear(2048, num_labels)

    def logits(self, x):
        return self.resnet(x)

    def forward(self, batch):
        return F.binary_cross_entropy_with_logits(self.logits(batch["scan"]), batch["target"].float())


class BYOL(nn.Module):
    """BYOL (Grill et al.): online = ResNet avgpool -> projector MLP(2048-4096-128) -> predictor
    MLP(128-4096-128); target = EMA (decay 0.99) of ResNet + projector; loss = mean over the batch of
    byol_loss(pred(v1), target(v2)) + byol_loss(pred(v2), target(v1))."""

    def __init__(self, init_weights=None, projection_size=128, projection_hidden_size=4096, decay=0.99):
        super().__init__()
        self.resnet = resnet50(init_weights)
        self.projector = mlp(2048, projection_hidden_size, projection_size)
        self.predictor = mlp(projection_size, projection_hidden_size, projection_size)
        self.target = copy.deepcopy(nn.ModuleDict({"resnet": self.resnet, "projector": self.projector}))
        self.target.requires_grad_(False)
        self.decay = decay

    def forward(self, batch):
        v1, v2 = batch["view1"], batch["view2"]  # Bx3xSxS each
        x = torch.cat([v1, v2])
        pred = self.predictor(self.projector(pooled(self.resnet, x).flatten(1)))
        with torch.no_grad():
            z = self.target["projector"](pooled(self.target["resnet"], x).flatten(1))
        p1, p2 = pred.chunk(2)
        z1, z2 = z.chunk(2)
        return (byol_loss(p1, z2.detach()) + byol_loss(p2, z1.detach())).mean()

    def update_target(self):
        ema_update(self.target["resnet"], self.resnet, self.decay)
        ema_update(self.target["projector"], self.projector, self.decay)


def nt_xent(z_i, z_j, temperature=0.1):
    """SimCLR's NT-Xent: cosine similarities / tau over the 2N views; for each view the other view of its
    image is the positive and the remaining 2N - 2 views the negatives; cross-entropy summed over the 2N
    views / 2N."""
    z = F.normalize(torch.cat([z_i, z_j]), dim=1)
    n = z_i.shape[0]
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, targets, reduction="sum") / (2 * n)


class SimCLR(nn.Module):
    """SimCLR: ResNet-50 (fc = identity) -> projector Linear(2048, 2048, no bias) -> ReLU -> Linear(2048, 128,
    no bias); NT-Xent with temperature 0.1."""

    def __init__(self, init_weights=None, projection_dim=128, temperature=0.1):
        super().__init__()
        self.resnet = resnet50(init_weights)
        self.resnet.fc = nn.Identity()
        self.projector = nn.Sequential(nn.Linear(2048, 2048, bias=False), nn.ReLU(),
                                       nn.Linear(2048, projection_dim, bias=False))
        self.temperature = temperature

    def forward(self, batch):
        h = self.resnet(torch.cat([batch["view1"], batch["view2"]]))
        z_i, z_j = self.projector(h).chunk(2)
        return nt_xent(z_i, z_j, self.temperature)


class ConvMLP(nn.Sequential):
    def __init__(self, dim, hidden, out):
        super().__init__(nn.Conv2d(dim, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(), nn.Conv2d(hidden, out, 1))


class PPM(nn.Module):
    """Pixel propagation: y_i = sum_j relu(cos(x_i, x_j))^gamma * g(x_j), g a 1x1 conv."""

    def __init__(self, dim, gamma=2):
        super().__init__()
        self.gamma, self.transform = gamma, nn.Conv2d(dim, dim, 1)

    def forward(self, x):  # BxCxHxW
        flat = F.normalize(x.flatten(2), dim=1)  # BxCxN
        sim = F.relu(flat.transpose(1, 2) @ flat) ** self.gamma  # BxNxN (i, j)
        g = self.transform(x).flatten(2)  # BxCxN
        return (g @ sim.transpose(1, 2)).view_as(x)


class PixelPro(nn.Module):
    """PixPro as lucidrains' PixelCL with the original's settings: pixel and instance features both from
    avgpool (so the "pixel" map is 1x1), projectors to 512 (hidden 2048), BYOL instance
    predictor, PPM (1 layer, gamma 2), EMA 0.99 target. Two random cutouts (side ratio 0.6-0.8, shared by
    the batch, nearest-resized back), each flipped with p 0.25, then `augment` per view. Pixel pairs whose
    cutout-frame coordinates (scaled by the feature size over the image diagonal) are closer than 0.7 are
    positives; loss = alpha * PixPro loss (-cos(PPM(online), target) over positives, both directions
    averaged) + instance BYOL loss."""

    def __init__(self, init_weights=None, projection_size=512, projection_hidden_size=2048, decay=0.99,
                 distance_thres=0.7, alpha=1.0, cutout_ratio_range=(0.6, 0.8), prob_flip=0.25, augment=None):
        super().__init__()
        self.resnet = resnet50(init_weights)
        self.pixel_projector = ConvMLP(2048, projection_hidden_size, projection_size)
        self.instance_projector = mlp(2048, projection_hidden_size, projection_size)
        self.predictor = mlp(projection_size, projection_hidden_size, projection_size)
        self.ppm = PPM(projection_size)
        self.target = copy.deepcopy(nn.ModuleDict({"resnet": self.resnet, "pixel": self.pixel_projector,
                                                   "instance": self.instance_projector}))
        self.target.requires_grad_(False)
        self.decay, self.distance_thres, self.alpha = decay, distance_thres, alpha
        self.cutout_ratio_range, self.prob_flip = cutout_ratio_range, prob_flip
        self.augment = augment or (lambda x: x)

    def _cutout(self, h, w):
        lo, hi = self.cutout_ratio_range
        r = lo + random.random() * (hi - lo)
        ch, cw = math.floor(r * h), math.floor(r * w)
        y, x = math.floor((h - ch) * random.random()), math.floor((w - cw) * random.random())
        return (y, y + ch, x, x + cw), random.random() < self.prob_flip

    @staticmethod
    def _crop(t, box, flip, size, mode):
        y0, y1, x0, x1 = box
        out = F.interpolate(t[:, :, y0:y1, x0:x1], size=size, mode=mode)
        return out.flip(-1) if flip else out

    def _encode(self, nets, x):
        h = pooled(nets["resnet"], x)  # Bx2048x1x1 (pixel and instance layer)
        return nets["pixel"](h), nets["instance"](h.flatten(1))

    def forward(self, batch):
        x = batch["scan"]  # Bx3xSxS
        h, w = x.shape[2:]
        (box1, flip1), (box2, flip2) = self._cutout(h, w), self._cutout(h, w)
        v1 = self.augment(self._crop(x, box1, flip1, (h, w), "nearest"))
        v2 = self.augment(self._crop(x, box2, flip2, (h, w), "nearest"))
        online = {"resnet": self.resnet, "pixel": self.pixel_projector, "instance": self.instance_projector}
        pix1, inst1 = self._encode(online, v1)
        pix2, inst2 = self._encode(online, v2)
        with torch.no_grad():
            tpix1, tinst1 = self._encode(self.target, v1)
            tpix2, tinst2 = self._encode(self.target, v2)
        instance = (byol_loss(self.predictor(inst1), tinst2) + byol_loss(self.predictor(inst2), tinst1)).mean()
        # positives: pixel pairs close in the original image frame
        grid = torch.stack(torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device),
                                          indexing="ij")).unsqueeze(0).float() / math.hypot(h, w)
        fh, fw = pix1.shape[2:]
        grid[:, 0] *= fh
        grid[:, 1] *= fw
        c1 = self._crop(grid, box1, flip1, (fh, fw), "bilinear").flatten(2)[0].t()  # Nx2
        c2 = self._crop(grid, box2, flip2, (fh, fw), "bilinear").flatten(2)[0].t()
        positive = torch.cdist(c1, c2) < self.distance_thres  # NxN
        if not positive.any():
            return instance
        sim12 = F.cosine_similarity(self.ppm(pix1).flatten(2)[..., :, None], tpix2.flatten(2)[..., None, :], dim=1)
        sim21 = F.cosine_similarity(self.ppm(pix2).flatten(2)[..., :, None], tpix1.flatten(2)[..., None, :], dim=1)
        pixpro = -(sim12.masked_select(positive[None]).mean() + sim21.masked_select(positive.t()[None]).mean()) / 2
        return self.alpha * pixpro + instance

    def update_target(self):
        ema_update(self.target["resnet"], self.resnet, self.decay)
        ema_update(self.target["pixel"], self.pixel_projector, self.decay)
        ema_update(self.target["instance"], self.instance_projector, self.decay)


def warmup_cosine_lr(epoch, base_lr, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=0.0,
                     original_zero_warmup_bug=False):
    """Per-epoch lr of pl_bolts' LinearWarmupCosineAnnealingLR (closed form): linear from warmup_start_lr
    over `warmup_epochs`, then cosine to eta_min at max_epochs. With warmup_epochs = 0 the original's
    chainable implementation starts at warmup_start_lr = 0 and multiplies it ever after, i.e. lr = 0 in
    every epoch (PixelPro): `original_zero_warmup_bug=True` reproduces that."""
    if original_zero_warmup_bug and warmup_epochs == 0:
        return warmup_start_lr
    if epoch < warmup_epochs:
        return warmup_start_lr + epoch * (base_lr - warmup_start_lr) / max(1, warmup_epochs - 1)
    progress = (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs)
    return eta_min + 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * progress))
