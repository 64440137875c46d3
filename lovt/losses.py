"""LoVT objectives: the global InfoNCE (ConVIRT style) and the local intra-sample contrastive loss.

Naming follows the original: modality a = image, b = report; `a2b` = image anchors with report candidates.
"""
import math
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn


class GlobalNceLoss(nn.Module):
    """Symmetric InfoNCE between the global image and report projections of a (micro-)batch.

    u_i = zg_a_i/|zg_a_i|, v_i = zg_b_i/|zg_b_i|, s_ij = <u_i, v_j>/tau
      global_a2b = mean_i -log softmax_j(s_ij)[i]     (image anchor, report candidates)
      global_b2a = mean_i -log softmax_j(s_ji)[i]     (report anchor, image candidates)
    With negatives_from_same_modality the denominators also contain the other same-modality samples.
    """

    def __init__(self, similarity_temperature: float = 0.1, negatives_from_same_modality: bool = True,
                 accuracy_topk: Sequence[int] = (1, 5), temperature_trainable: bool = False, **_):
        super().__init__()
        if temperature_trainable:
            raise ValueError("temperature_trainable is not implemented (unused by all experiments)")
        self.tau = similarity_temperature
        self.same_modality = negatives_from_same_modality
        self.topk = tuple(accuracy_topk)

    def _direction(self, x, y):
        # x, y: Bxd normalised; logits Bx(B[+B])
        logits = x @ y.t() / self.tau
        if self.same_modality:
            same = (x @ x.t() / self.tau).masked_fill(torch.eye(len(x), dtype=torch.bool, device=x.device),
                                                      float("-inf"))
            logits = torch.cat([logits, same], dim=1)
        target = torch.arange(len(x), device=x.device)
        loss = F.cross_entropy(logits.float(), target)
        metrics = {}
        rank = (logits[:, : len(x)] > logits[target, target].unsqueeze(1)).sum(1)  # cross-modal rank of the match
        for k in self.topk:
            metrics[f"top_{k}_acc"] = (rank < k).float().mean().detach()
        return loss, metrics

    def forward(self, zg_a, zg_b):
        u, v = F.normalize(zg_a.float(), dim=-1), F.normalize(zg_b.float(), dim=-1)
        a2b, m_a2b = self._direction(u, v)
        b2a, m_b2a = self._direction(v, u)
        metrics = {f"global_a2b_{k}": m for k, m in m_a2b.items()}
        metrics.update({f"global_b2a_{k}": m for k, m in m_b2a.items()})
        return {"global_a2b": a2b, "global_b2a": b2a}, metrics


def positive_weights(structure: Union[int, tuple[int, int]], distance_threshold: float, threshold_type: str,
                     smooth_weights: bool, smooth_lambda: float) -> torch.Tensor:
    """Unnormalised positive weights Omega between all pairs of positions of the maximum structure.

    Positions are (row, col) for images and the index for reports; distances are divided by the diagonal
    sqrt(H^2+W^2) (resp. the length) when threshold_type='relative'. Omega_nm = [d_nm <= threshold]
    (* exp(-lambda d_nm) when smooth). Shape HxWxHxW or NxN.
    """
    if isinstance(structure, int):
        coords = torch.arange(structure, dtype=torch.float64)[:, None]
        scale = float(structure)
        shape = (structure, structure)
    else:
        H, W = structure
        rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        coords = torch.stack([rows.flatten(), cols.flatten()], 1).double()
        scale = math.sqrt(H ** 2 + W ** 2)
        shape = (H, W, H, W)
    if threshold_type == "relative":
        coords = coords / scale
    elif threshold_type != "absolute":
        raise ValueError(f"threshold_type must be 'relative' or 'absolute', got {threshold_type!r}")
    dist = torch.cdist(coords, coords)
    omega = (dist <= distance_threshold + 1e-12).double()
    if smooth_weights:
        omega = omega * torch.exp(-smooth_lambda * dist)
    return omega.float().reshape(shape)


class LocalIntraSampleContrastiveLoss(nn.Module):
    """Contrast every local vector with the cross-modal attended vectors of the SAME sample (no cross-sample
    negatives), both directions, with soft positives omega (rows of Omega restricted to valid columns, summing to 1):

      s_nm = <x_n, c_m>/tau (x, c L2-normalised)
      l_n^{l2att} = -sum_m omega_nm s_nm + log sum_{m valid} exp(s_nm);   l^{att2l}: the same with s transposed
      L = mean_b sum_n w~_n l_n,  w~ = w*mask / sum(w*mask)  (w = 1 without local weights)

    Options of the original that LoVT's configs switch off: negatives_from_same_modality adds <x_n, x_m>/tau
    (non-positive m) to the denominator; normalize_by_num_negatives subtracts log(N_neg / (2 max_N)) at every
    position (padded ones included, as the original) before the sum.
    """

    def __init__(self, max_structure_size, similarity_temperature: float = 0.3, distance_threshold: float = 0.3,
                 threshold_type: str = "relative", smooth_weights: bool = False, smooth_lambda: float = 1.0,
                 negatives_from_same_modality: bool = False, normalize_by_num_negatives: bool = True,
                 cross_sample_negatives: bool = False, temperature_trainable: bool = False, **_):
        super().__init__()
        if cross_sample_negatives or temperature_trainable:
            raise ValueError("cross_sample_negatives / temperature_trainable are not implemented (unused by all "
                             "experiments; cross_sample_negatives crashed in the original)")
        self.tau = similarity_temperature
        self.same_modality, self.normalize = negatives_from_same_modality, normalize_by_num_negatives
        self.max_structure = max_structure_size if isinstance(max_structure_size, int) else tuple(max_structure_size)
        self.max_N = self.max_structure if isinstance(self.max_structure, int) else math.prod(self.max_structure)
        self.register_buffer("pos_weights", positive_weights(self.max_structure, distance_threshold, threshold_type,
                                                             smooth_weights, smooth_lambda), persistent=False)

    def _omega(self, structure) -> torch.Tensor:
        if isinstance(self.max_structure, int):
            n = structure if isinstance(structure, int) else structure[0]
            if n > self.max_structure:
                raise ValueError(f"{n} positions exceed the maximum structure size {self.max_structure}")
            return self.pos_weights[:n, :n]
        H, W = structure
        if H > self.max_structure[0] or W > self.max_structure[1]:
            raise ValueError(f"region grid {structure} exceeds the maximum {self.max_structure}; "
                             "set encoder_a.input_size to the real input size")
        return self.pos_weights[:H, :W, :H, :W].reshape(H * W, H * W)

    def forward(self, x, c, structure, mask: torch.Tensor | None = None, weights: torch.Tensor | None = None):
        # x, c: BxNxd (local projections, attended counterparts); mask, weights: BxN
        B, N, _ = x.shape
        x, c = F.normalize(x.float(), dim=-1), F.normalize(c.float(), dim=-1)
        valid = torch.ones(B, N, dtype=torch.bool, device=x.device) if mask is None else mask
        table = self._omega(structure).to(x.device)
        omega = table.unsqueeze(0) * valid[:, None, :].float()  # BxNxN
        omega = omega / omega.sum(-1, keepdim=True).clamp(min=1e-12)
        w = torch.ones(B, N, device=x.device) if weights is None else weights.float()
        w = w * valid.float()
        w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
        pad = torch.zeros(B, 1, N, device=x.device).masked_fill(~valid[:, None, :], float("-inf"))
        n_neg = valid.float().sum(-1, keepdim=True)  # Bx1
        if self.same_modality:
            not_positive = torch.zeros_like(table).masked_fill(table > 0, float("-inf"))  # NxN
            n_neg = 2 * n_neg

        def one_direction(s, anchors):  # s: BxNxN scores anchor n vs candidate m
            candidates = s + pad
            if self.same_modality:
                same = anchors @ anchors.transpose(1, 2) / self.tau + not_positive + pad
                candidates = torch.cat([candidates, same], dim=-1)
            per_position = -(omega * s).sum(-1) + torch.logsumexp(candidates, dim=-1)
            per_position = w * per_position.masked_fill(~valid, 0.0)  # padded rows carry no weight
            if self.normalize:
                per_position = per_position - torch.log(n_neg / (2 * self.max_N))
            return per_position.sum(-1).mean()

        s = x @ c.transpose(1, 2) / self.tau  # s_nm = <x_n, c_m>/tau
        return {"l2att": one_direction(s, x), "att2l": one_direction(s.transpose(1, 2), c)}


def total_loss(losses: dict[str, torch.Tensor], loss_weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum; every produced loss needs a weight (as in the original, a missing one is an error)."""
    missing = [k for k in losses if k not in loss_weights]
    if missing:
        raise KeyError(f"pretrain_model.loss_weights has no weight for {missing} (have {sorted(loss_weights)})")
    return sum(loss_weights[k] * v for k, v in losses.items())
