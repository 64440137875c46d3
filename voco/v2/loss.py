"""VoCo v2 loss, vectorised over the volumes of a step (the original loops over volumes, crops and
base pairs; `v2_losses_loop` below is that loop, re-expressed, kept as the reference for tests and
`make bench-voco`).

For volume i with random-crop outputs x (student x_s, teacher x_t) and base-crop outputs q_s / q_t:

    intra_i = assign_ce(labels_i, assign(x_s, q_t_i))
    inter_i = assign_ce(stopgrad(assign(x_t, q_t_j)), assign(x_s, q_s_j)),   j = (i + 1) mod B
    reg_i   = mean over pairs a<b of ReLU(cos(q_s_a, stopgrad(q_s_b)))^2      (v1's regulariser)

assign = ReLU(cosine) (`voco.losses.online_assign`); the step loss is the mean over i of each, summed.
"""

import torch

from voco.losses import online_assign, reg_loss

EPS = 1e-6


def assign_ce(targets, logits):
    """Per volume (BxSxK -> B): -sum t*log(1 - |t - l| + 1e-6) / (sum t + 1e-6)
    plus the negatives, entries whose target is exactly 0: -sum log(1 - l + 1e-6) / (count + 1e-6).
    (v1's negative term was l^2; v2 uses -log(1 - l), which grows without bound as l -> 1.)"""
    pos = -(targets * torch.log(1 - (targets - logits).abs() + EPS)).sum((1, 2)) / (targets.sum((1, 2)) + EPS)
    neg_mask = (targets == 0).to(logits.dtype)
    neg = -(neg_mask * torch.log(1 - logits + EPS)).sum((1, 2)) / (neg_mask.sum((1, 2)) + EPS)
    return pos + neg


def v2_losses(x_s, q_s, x_t, q_t, labels):
    """The three v2 terms averaged over the B volumes of the step, and the intra logits.

    x_*: (B*S)xD random-crop outputs, q_*: (B*K)xD base-crop outputs (s student, t teacher, both
    sample-major); labels: BxSxK overlap fractions (float64 as in the original, so intra is too).
    Returns (intra, inter, reg, logits BxSxK)."""
    with torch.autocast(x_s.device.type, enabled=False):  # cosines in fp32, as autocast runs the
        return _v2_losses(x_s, q_s, x_t, q_t, labels)      # original's cosine_similarity


def _v2_losses(x_s, q_s, x_t, q_t, labels):
    b = labels.shape[0]
    x_s, q_s, x_t, q_t = (t.float().reshape(b, -1, t.shape[-1]) for t in (x_s, q_s, x_t, q_t))
    x_t, q_t = x_t.detach(), q_t.detach()
    logits = online_assign(x_s, q_t)                       # student crops vs own teacher bases
    intra = assign_ce(labels, logits.to(labels.dtype)).mean()
    q_s_next, q_t_next = q_s.roll(-1, dims=0), q_t.roll(-1, dims=0)  # row i: volume (i + 1) mod B
    targets = online_assign(x_t, q_t_next)                 # teacher's assignment, no gradient
    inter = assign_ce(targets, online_assign(x_s, q_s_next)).mean()
    reg = reg_loss(q_s).mean()
    return intra, inter, reg, logits


def v2_losses_loop(x_s, q_s, x_t, q_t, labels):
    """Reference: the original's per-volume loop with per-crop cosines and per-pair regulariser, in our
    words. Same inputs and outputs as `v2_losses` (without the logits); slow, for checks only."""
    import torch.nn.functional as F

    def assign(feats, bases):
        return F.relu(torch.stack([F.cosine_similarity(f[None], bases, dim=1) for f in feats]))

    def ce(targets, logits):
        return assign_ce(targets[None], logits[None])[0]

    def reg(bases):
        pairs = [F.relu(F.cosine_similarity(bases[a][None], bases[c][None].detach(), dim=1)) ** 2
                 for a in range(len(bases) - 1) for c in range(a + 1, len(bases))]
        return sum(pairs) / len(pairs)

    b = labels.shape[0]
    s, k = x_s.shape[0] // b, q_s.shape[0] // b
    intra = inter = regs = 0.0
    for i in range(b):
        j = (i + 1) % b
        xs, xt = x_s[i * s:(i + 1) * s], x_t[i * s:(i + 1) * s].detach()
        intra = intra + ce(labels[i], assign(xs, q_t[i * k:(i + 1) * k].detach()))
        inter = inter + ce(assign(xt, q_t[j * k:(j + 1) * k].detach()), assign(xs, q_s[j * k:(j + 1) * k]))
        regs = regs + reg(q_s[i * k:(i + 1) * k])
    return intra / b, inter / b, regs.reshape(()) / b
