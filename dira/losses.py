"""DiRA objectives. The generator minimises

    L_G = w_dis * L_dis + w_res * L_res + w_adv * L_adv      (w = 1, 10, 0.001 in the original)

and the discriminator minimises L_D. All are computed in float32.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F


def info_nce(logits, labels):
    """MoCo InfoNCE: cross-entropy of Nx(1+K) logits (already divided by tau) against the positive at 0."""
    return F.cross_entropy(logits.float(), labels)


def restoration_loss(restored, target):
    """L_res = mean((x_hat - x)^2) over Nx1xHxW (MSE only; the code has no L1 term)."""
    return F.mse_loss(restored.float(), target.float())


def generator_adversarial_loss(d_fake):
    """LSGAN generator term: mean((D(x_hat) - 1)^2) over the patch map (Nx1x28x28 at 224 px)."""
    d_fake = d_fake.float()
    return F.mse_loss(d_fake, torch.ones_like(d_fake))


def discriminator_loss(d_real, d_fake):
    """LSGAN critic: 0.5 * [mean((D(x) - 1)^2) + mean(D(x_hat.detach())^2)]; real = the grayscale targets."""
    d_real, d_fake = d_real.float(), d_fake.float()
    return 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))


def barlow_twins_loss(z1, z2, lambd=0.0051):
    """Barlow Twins: C = z1^T z2 / N_global on batch-standardised embeddings (NxD each),
    L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.

    As in the reference code C is summed over ranks with a plain all_reduce, so each rank's gradient
    flows through its own share only.
    """
    z1, z2 = z1.float(), z2.float()
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    c = z1.T @ z2 / (z1.shape[0] * world)  # DxD
    if world > 1:
        dist.all_reduce(c)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def simsiam_loss(p1, p2, z1, z2):
    """SimSiam: L = -0.5 * [cos(p1, sg(z2)) + cos(p2, sg(z1))], averaged over the batch."""
    return -0.5 * (F.cosine_similarity(p1.float(), z2.detach().float(), dim=1).mean()
                   + F.cosine_similarity(p2.float(), z1.detach().float(), dim=1).mean())
