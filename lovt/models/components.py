"""Building blocks shared by both modalities: attention pooling, projection MLPs, cross-modal attention."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPool(nn.Module):
    """Multi-head attention pooling whose single query is the mean of the local vectors.

    Returns the pooled vector (output projection of nn.MultiheadAttention) and the attention weights averaged over
    heads, which LoVT uses as the "local weights" (region / sentence importance).
    """

    def __init__(self, d: int, num_heads: int = 8, query_mean_ignores_padding: bool = False):
        super().__init__()
        self.attention = nn.MultiheadAttention(d, num_heads, batch_first=True)
        self.query_mean_ignores_padding = query_mean_ignores_padding

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        # x: BxNxd, mask: BxN (True = valid) or None
        if mask is None:
            query = x.mean(dim=1, keepdim=True)  # Bx1xd
            key_padding_mask = None
        else:
            x = x * mask.unsqueeze(-1).to(x.dtype)
            # the original divides by N (padding included); the flag divides by the number of valid positions
            count = mask.sum(1, keepdim=True).clamp(min=1) if self.query_mean_ignores_padding else x.shape[1]
            query = (x.sum(dim=1) / count).unsqueeze(1)  # Bx1xd
            key_padding_mask = ~mask
        pooled, weights = self.attention(query, x, x, key_padding_mask=key_padding_mask, need_weights=True,
                                         average_attn_weights=True)
        return pooled.squeeze(1), weights.squeeze(1)  # Bxd, BxN


def _norm(norm: str | None, d: int) -> nn.Module:
    if norm is None:
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm1d(d)
    if norm == "layer":
        return nn.LayerNorm(d)
    raise ValueError(f"unknown norm {norm!r} (expected 'batch', 'layer' or null)")


def _init_two_layers(first: nn.Module, second: nn.Module):
    nn.init.kaiming_normal_(first.weight, mode="fan_out", nonlinearity="relu")
    nn.init.kaiming_normal_(second.weight, mode="fan_out", nonlinearity="linear")
    for layer in (first, second):
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """Linear -> norm -> ReLU -> dropout -> Linear, for global vectors (Bxd_in -> Bxd_out)."""

    def __init__(self, d_in: int, d_out: int, d_hidden: int, norm: str | None = "batch", dropout_prob=0.0):
        super().__init__()
        self.projection_before = nn.Linear(d_in, d_hidden)
        self.norm = _norm(norm, d_hidden)
        self.dropout = nn.Dropout(dropout_prob)
        self.projection_after = nn.Linear(d_hidden, d_out)
        _init_two_layers(self.projection_before, self.projection_after)

    def forward(self, x):
        return self.projection_after(self.dropout(F.relu(self.norm(self.projection_before(x)))))


class SequenceMLP(nn.Module):
    """The same MLP applied to every position (1x1 convolutions); BatchNorm statistics over all B*N positions,
    padded sentence positions included, as in the original."""

    def __init__(self, d_in: int, d_out: int, d_hidden: int, norm: str | None = "batch", dropout_prob=0.0):
        super().__init__()
        self.projection_before = nn.Conv1d(d_in, d_hidden, kernel_size=1)
        self.norm = _norm(norm, d_hidden)
        self.dropout = nn.Dropout(dropout_prob)
        self.projection_after = nn.Conv1d(d_hidden, d_out, kernel_size=1)
        _init_two_layers(self.projection_before, self.projection_after)

    def forward(self, x):
        x = self.projection_before(x.transpose(1, 2))  # Bxd_hiddenxN
        x = self.norm(x) if not isinstance(self.norm, nn.LayerNorm) else self.norm(x.transpose(1, 2)).transpose(1, 2)
        x = self.projection_after(self.dropout(F.relu(x)))
        return x.transpose(1, 2)  # BxNxd_out


class CrossAttention(nn.Module):
    """Symmetric cross-modal attention with key/value/output projections shared by both modalities.

    One score matrix S = <K a_i, K b_j> / sqrt(d) serves both directions:
      b2a: every region i attends over the report's sentences (padding masked)  -> BxNxd
      a2b: every sentence j attends over the image regions (padded rows zeroed) -> BxSxd
    One BatchNorm normalises the outputs of both directions.
    """

    def __init__(self, d: int = 512, norm: str | None = "batch", temperature: float = 1.0):
        super().__init__()
        self.key_projection = nn.Linear(d, d)
        self.value_projection = nn.Linear(d, d)
        self.output_projection = nn.Linear(d, d)
        self.norm = _norm(norm, d)
        self.temperature = temperature
        for layer in (self.key_projection, self.value_projection, self.output_projection):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="linear")
            nn.init.zeros_(layer.bias)

    def _out(self, x):  # BxNxd
        x = self.output_projection(x)
        if isinstance(self.norm, nn.BatchNorm1d):
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)

    def forward(self, a, b, mask_b: torch.Tensor | None = None, compute_a2b=True, compute_b2a=True):
        # a: BxNxd (regions), b: BxSxd (sentences), mask_b: BxS (True = real sentence)
        scores = self.key_projection(a) @ self.key_projection(b).transpose(1, 2)  # BxNxS
        scores = scores / (math.sqrt(a.shape[-1]) * self.temperature)
        out = {}
        if compute_b2a:
            s = scores if mask_b is None else scores.masked_fill(~mask_b[:, None, :], float("-inf"))
            probs = torch.softmax(s, dim=-1)  # BxNxS
            out["b2a"], out["probs_b2a"] = self._out(probs @ self.value_projection(b)), probs
        if compute_a2b:
            probs = torch.softmax(scores.transpose(1, 2), dim=-1)  # BxSxN
            if mask_b is not None:
                probs = probs * mask_b[:, :, None].to(probs.dtype)
            out["a2b"], out["probs_a2b"] = self._out(probs @ self.value_projection(a)), probs
        return out
