"""DiRA networks: the U-Net generator, the three discriminative wrappers and the patch discriminator.

Key layout is the original's: `encoder_q.backbone.{encoder,decoder,segmentation_head}.*`,
`encoder_q.fc.{0,2}.*` with --mlp, `encoder_k.*`, `queue`, `queue_ptr`, and `model.{0,2,5,8,11}.*` for
the discriminator. smp 0.6 `Unet('resnet50')` already has the vendored smp's 380 keys; only the decoder
call changed (a list instead of varargs).
"""

import segmentation_models_pytorch as smp
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def dist_world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def build_unet(arch="resnet50", encoder_weights=None, activation="sigmoid"):
    """The generator: smp.Unet with every argument at smp's default except these three.

    encoder_weights: None, a registered smp name ('imagenet' downloads, so not at run time here), or a
    checkpoint path whose encoder tensors are loaded as the vendored smp did.
    """
    is_file = encoder_weights is not None and encoder_weights not in ("imagenet", "ssl", "swsl")
    unet = smp.Unet(encoder_name=arch, encoder_weights=None if is_file else encoder_weights,
                    activation=activation, classes=1)
    if is_file:
        from shared.weights import load_pretrained
        # The vendored smp loaded encoder-only files with strict=True; a low match is an error here too.
        load_pretrained(unet.encoder, encoder_weights, min_matched=0.99)
    return unet


def add_mlp(encoder):
    """MoCo v2 head: fc -> Linear(d, d), ReLU, fc (keys fc.0.*, fc.2.*)."""
    dim_mlp = encoder.fc.weight.shape[1]
    encoder.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), encoder.fc)


class DiRAUNet(nn.Module):
    """U-Net whose encoder also feeds a global-pool + fc embedding (the original `DiRA_UNet`).

    forward(x: Nx3xHxW) -> (embedding NxD, restoration Nx1xHxW or None when decode=False).
    The original hard-codes 2048 latent channels; we read it from the encoder so resnet18/34 work too.
    """

    def __init__(self, arch="resnet50", num_classes=128, encoder_weights=None, activation="sigmoid"):
        super().__init__()
        self.backbone = build_unet(arch, encoder_weights, activation)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.backbone.encoder.out_channels[-1], num_classes)

    def forward(self, x, decode=True):
        features = self.backbone.encoder(x)
        restored = None
        if decode:
            restored = self.backbone.segmentation_head(self.backbone.decoder(features))
        f = self.fc(torch.flatten(self.avgpool(features[-1]), 1))
        return f, restored


def build_base_encoder(mode, arch, dim, encoder_weights=None, activation="sigmoid"):
    """`di`: a torchvision ResNet (no decoder, no restoration); `dir`/`dira`: the DiRA U-Net."""
    if mode == "di":
        return torchvision.models.__dict__[arch](num_classes=dim)
    return DiRAUNet(arch, dim, encoder_weights, activation)


def _split(out):
    return out if isinstance(out, tuple) else (out, None)


@torch.no_grad()
def concat_all_gather(x):
    """All-gather without gradient (identity for one process)."""
    if dist_world_size() == 1:
        return x
    gathered = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, x.contiguous())
    return torch.cat(gathered, 0)


class DiRAMoCo(nn.Module):
    """DiRA with a MoCo v2 discriminative branch (the original `DiRA_MoCo`; `MoCo` in mode `di`).

    Args:
        mode: 'di' (plain MoCo v2 on torchvision `arch`), 'dir' or 'dira' (U-Net generator).
        arch: smp encoder / torchvision model name (default resnet50).
        dim: feature dimension (128).
        K: queue size, must be a multiple of the global batch (65536).
        m: momentum of the key encoder (0.999).
        T: softmax temperature (0.2 in DiRA; MoCo's own default is 0.07).
        mlp: MoCo v2 two-layer head.
        key_decoder: run the key U-Net's decoder and head as the original does (output discarded);
            False skips them (same logits and queue, less compute; key-encoder BN buffers of the
            unused decoder then stay at their initial values).
    """

    def __init__(self, mode="dira", arch="resnet50", dim=128, K=65536, m=0.999, T=0.2, mlp=False,
                 encoder_weights=None, activation="sigmoid", key_decoder=True):
        super().__init__()
        self.K, self.m, self.T, self.key_decoder = K, m, T, key_decoder
        self.encoder_q = build_base_encoder(mode, arch, dim, encoder_weights, activation)
        self.encoder_k = build_base_encoder(mode, arch, dim, encoder_weights, activation)
        if mlp:
            add_mlp(self.encoder_q)
            add_mlp(self.encoder_k)
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))  # DxK, unit columns
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update_key_encoder(self):
        """theta_k <- m * theta_k + (1 - m) * theta_q, fused over all parameters."""
        k = [p.data for p in self.encoder_k.parameters()]
        q = [p.data for p in self.encoder_q.parameters()]
        torch._foreach_mul_(k, self.m)
        torch._foreach_add_(k, q, alpha=1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys):
        keys = concat_all_gather(keys)
        batch_size = keys.shape[0]
        ptr = int(self.queue_ptr)
        assert self.K % batch_size == 0, f"queue size {self.K} must be a multiple of the global batch {batch_size}"
        self.queue[:, ptr:ptr + batch_size] = keys.T
        self.queue_ptr[0] = (ptr + batch_size) % self.K

    @torch.no_grad()
    def _batch_shuffle_ddp(self, x):
        """Shuffle-BN: permute the global key batch so BN statistics mix ranks. No-op for one process."""
        if dist_world_size() == 1:
            return x, None
        batch_size_this = x.shape[0]
        x_gather = concat_all_gather(x)
        num_gpus = x_gather.shape[0] // batch_size_this
        idx_shuffle = torch.randperm(x_gather.shape[0], device=x.device)
        dist.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        idx_this = idx_shuffle.view(num_gpus, -1)[dist.get_rank()]
        return x_gather[idx_this], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_ddp(self, x, idx_unshuffle):
        if idx_unshuffle is None:
            return x
        batch_size_this = x.shape[0]
        x_gather = concat_all_gather(x)
        num_gpus = x_gather.shape[0] // batch_size_this
        return x_gather[idx_unshuffle.view(num_gpus, -1)[dist.get_rank()]]

    def _encode_key(self, im_k):
        if isinstance(self.encoder_k, DiRAUNet):
            return self.encoder_k(im_k, decode=self.key_decoder)[0]
        return _split(self.encoder_k(im_k))[0]

    def forward(self, im_q, im_k, update=True):
        """im_q, im_k: Nx3xHxW. Returns logits Nx(1+K), labels N (zeros), restoration Nx1xHxW or None.

        update=False leaves the key encoder and the queue untouched (for side-effect-free validation).
        """
        q, restored = _split(self.encoder_q(im_q))
        q = F.normalize(q, dim=1)  # NxC
        with torch.no_grad():
            if update:
                self._momentum_update_key_encoder()
            im_k, idx_unshuffle = self._batch_shuffle_ddp(im_k)
            k = F.normalize(self._encode_key(im_k), dim=1)
            k = self._batch_unshuffle_ddp(k, idx_unshuffle)  # NxC
        l_pos = torch.einsum("nc,nc->n", q, k.to(q.dtype)).unsqueeze(-1)  # Nx1
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach().to(q.dtype))  # NxK
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T  # Nx(1+K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        if update:
            self._dequeue_and_enqueue(k.float())
        return logits, labels, restored


class DiRABarlowTwins(nn.Module):
    """DiRA with a Barlow Twins discriminative branch (Zbontar et al., 2021).

    Args:
        arch: smp encoder name.
        projector: hidden/output widths of the projector, '8192-8192-8192' in Barlow Twins.
        lambd: weight of the off-diagonal redundancy term (0.0051).
    The online network is called `encoder_q` as in the MoCo variant, so checkpoints and transfer share
    one layout: `encoder_q.backbone.*` (the U-Net) and `encoder_q.fc.*` (the projector). `bn` is the
    affine-free BatchNorm that standardises each embedding dimension before the cross-correlation.
    """

    def __init__(self, arch="resnet50", projector="8192-8192-8192", lambd=0.0051, encoder_weights=None,
                 activation="sigmoid"):
        super().__init__()
        self.lambd = lambd
        self.encoder_q = DiRAUNet(arch, 1, encoder_weights, activation)
        sizes = [self.encoder_q.fc.in_features] + [int(s) for s in projector.split("-")]
        layers = []
        for i in range(len(sizes) - 2):
            layers += [nn.Linear(sizes[i], sizes[i + 1], bias=False), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(True)]
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        self.encoder_q.fc = nn.Sequential(*layers)
        self.bn = nn.BatchNorm1d(sizes[-1], affine=False)

    def forward(self, y1, y2):
        """Returns standardised embeddings z1, z2 (NxD) and the restoration of view 1."""
        z1, restored = self.encoder_q(y1)
        z2, _ = self.encoder_q(y2, decode=False)
        return self.bn(z1), self.bn(z2), restored


class DiRASimSiam(nn.Module):
    """DiRA with a SimSiam discriminative branch (Chen & He, 2021).

    Args:
        arch: smp encoder name.
        dim: projector output width (2048).
        pred_dim: predictor bottleneck width (512).
    Projector: 3 layers with BN (the last BN affine-free, the last Linear's bias frozen as in SimSiam);
    predictor: Linear(dim, pred_dim) BN ReLU Linear(pred_dim, dim).
    """

    def __init__(self, arch="resnet50", dim=2048, pred_dim=512, encoder_weights=None, activation="sigmoid"):
        super().__init__()
        self.encoder_q = DiRAUNet(arch, dim, encoder_weights, activation)
        prev_dim = self.encoder_q.fc.in_features
        last = self.encoder_q.fc
        self.encoder_q.fc = nn.Sequential(
            nn.Linear(prev_dim, prev_dim, bias=False), nn.BatchNorm1d(prev_dim), nn.ReLU(inplace=True),
            nn.Linear(prev_dim, prev_dim, bias=False), nn.BatchNorm1d(prev_dim), nn.ReLU(inplace=True),
            last, nn.BatchNorm1d(dim, affine=False))
        self.encoder_q.fc[6].bias.requires_grad = False  # followed by BN: the bias does nothing
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim))

    def forward(self, y1, y2):
        """Returns p1, p2 (predictions), z1, z2 (detached targets), all NxD, and the restoration of view 1."""
        z1, restored = self.encoder_q(y1)
        z2, _ = self.encoder_q(y2, decode=False)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return p1, p2, z1.detach(), z2.detach(), restored


class Discriminator(nn.Module):
    """PatchGAN-style LSGAN critic (no final sigmoid). 1x224x224 -> 1x28x28; receptive field 47 px.

    Keys model.{0,2,5,8,11}.{weight,bias}; InstanceNorm without parameters or running statistics, so
    train and eval mode are the same.
    """

    def __init__(self, channels=1):
        super().__init__()

        def block(c_in, c_out, stride, norm=True):
            layers = [nn.Conv2d(c_in, c_out, 3, stride, 1)]
            if norm:
                layers.append(nn.InstanceNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(
            *block(channels, 64, 2, norm=False), *block(64, 128, 2), *block(128, 256, 2), *block(256, 512, 1),
            nn.Conv2d(512, 1, 3, 1, 1))
        for mod in self.modules():  # weights_init_normal: conv weights N(0, 0.02), biases left as built
            if isinstance(mod, nn.Conv2d):
                nn.init.normal_(mod.weight, 0.0, 0.02)

    def forward(self, img):
        return self.model(img)  # Nx1x(H/8)x(W/8)


def build_generator(args):
    """The generator for args.method / args.mode (see train.py for the flags)."""
    method = getattr(args, "method", "moco")
    key_decoder = not getattr(args, "skip_key_decoder", False)
    if method == "moco" or args.mode == "di":
        return DiRAMoCo(args.mode, args.arch, args.moco_dim, args.moco_k, args.moco_m, args.moco_t, args.mlp,
                        args.encoder_weights, args.activate, key_decoder)
    if method == "barlowtwins":
        return DiRABarlowTwins(args.arch, args.bt_projector, args.bt_lambda, args.encoder_weights, args.activate)
    if method == "simsiam":
        return DiRASimSiam(args.arch, args.simsiam_dim, args.simsiam_pred_dim, args.encoder_weights, args.activate)
    raise ValueError(f"unknown --method {method!r}")


def unet_of(model):
    """The query U-Net (what `best_checkpoint.pth` holds), or the query ResNet in mode `di`."""
    enc = model.encoder_q
    return enc.backbone if isinstance(enc, DiRAUNet) else enc
