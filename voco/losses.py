"""VoCo objectives, vectorised (the original loops over crops and pairs; the numbers are the same)."""

import torch
import torch.nn.functional as F

EPS = 1e-6


def online_assign(feats, bases, eps=1e-8):
    """L[..., a, k] = ReLU(cos(feats_a, bases_k)): ...xAxD, ...xKxD -> ...xAxK. No temperature."""
    f = feats / feats.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = bases / bases.norm(dim=-1, keepdim=True).clamp_min(eps)
    return F.relu(f @ b.transpose(-1, -2))


def pos_loss(labels, logits):
    """L_pos = - sum y*log(1 - |y - l| + 1e-6) / (sum y + 1e-6), per volume: BxSxK -> B."""
    err = torch.log(1 - (labels - logits).abs() + EPS)
    return -(labels * err).sum((1, 2)) / (labels.sum((1, 2)) + EPS)


def neg_loss(labels, logits):
    """L_neg = sum 1[y=0]*l^2 / (sum 1[y=0] + 1e-6), per volume: BxSxK -> B."""
    neg = (labels == 0).to(logits.dtype)
    return (neg * logits ** 2).sum((1, 2)) / (neg.sum((1, 2)) + EPS)


def reg_loss(bases):
    """L_reg = mean over pairs i<j of ReLU(cos(q_i, stopgrad(q_j)))^2, per volume: BxKxD -> B.

    Only the first of each pair gets a gradient (so the last base crop gets none), as in the original.
    With K=16 that is the sum over the 120 pairs / 120."""
    q = bases / bases.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    sim = F.relu(q @ q.detach().transpose(-1, -2)) ** 2  # BxKxK, rows carry the gradient
    k = bases.shape[1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=bases.device), diagonal=1)
    return sim[:, upper].sum(1) / upper.sum()


def voco_losses(p_s, q_s, p_t, q_t, labels, batch):
    """The three VoCo terms averaged over the volumes of the step, and the logits.

    p_*: (B*S)xD random-crop outputs, q_*: (B*K)xD base-crop outputs (s student, t teacher), all
    sample-major; labels: BxSxK overlap fractions (float64 in the original, so the terms are too).
    logits = (ReLU-cos(p_s, q_t) + ReLU-cos(p_t, q_s)) / 2: each half sends gradient into one student
    side only. Without a teacher (p_t and q_t None: the CVPR paper's single network) the logits are
    ReLU-cos(p_s, q_s), with gradient into both sides. Returns (pos, neg, reg, logits BxSxK).
    """
    with torch.autocast(p_s.device.type, enabled=False):  # cosines in fp32, as autocast does for
        return _voco_losses(p_s, q_s, p_t, q_t, labels, batch)  # the original's cosine_similarity


def _voco_losses(p_s, q_s, p_t, q_t, labels, batch):
    p_s = p_s.float().reshape(batch, -1, p_s.shape[-1])
    q_s = q_s.float().reshape(batch, -1, q_s.shape[-1])
    if p_t is None:  # one network: same value as the symmetric form with p_t = p_s, q_t = q_s
        logits = online_assign(p_s, q_s)
    else:
        p_t = p_t.float().reshape(batch, -1, p_t.shape[-1])
        q_t = q_t.float().reshape(batch, -1, q_t.shape[-1])
        logits = 0.5 * (online_assign(p_s, q_t) + online_assign(p_t, q_s))
    logits_l = logits.to(labels.dtype)
    pos = pos_loss(labels, logits_l).mean()
    neg = neg_loss(labels, logits_l).mean()
    reg = reg_loss(q_s).mean()
    return pos, neg, reg, logits
