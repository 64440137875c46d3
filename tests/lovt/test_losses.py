"""LoVT objectives against direct computations on tiny hand-made tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from lovt.engine import cosine_factor
from lovt.losses import GlobalNceLoss, LocalIntraSampleContrastiveLoss, positive_weights, total_loss


def _direct_nce(za, zb, tau, same=False):
    """Loop form of the InfoNCE: -log exp(s_ii) / sum over candidates."""
    u, v = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
    B = len(u)

    def direction(x, y):
        total = 0.0
        for i in range(B):
            pos = math.exp(float(x[i] @ y[i]) / tau)
            denom = sum(math.exp(float(x[i] @ y[j]) / tau) for j in range(B))
            if same:
                denom += sum(math.exp(float(x[i] @ x[j]) / tau) for j in range(B) if j != i)
            total += -math.log(pos / denom)
        return total / B

    return direction(u, v), direction(v, u)


@pytest.mark.parametrize("same", [False, True])
def test_global_nce_matches_direct_computation(same):
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    losses, metrics = GlobalNceLoss(0.1, negatives_from_same_modality=same)(za, zb)
    a2b, b2a = _direct_nce(za, zb, 0.1, same)
    assert losses["global_a2b"].item() == pytest.approx(a2b, rel=1e-5)
    assert losses["global_b2a"].item() == pytest.approx(b2a, rel=1e-5)
    assert a2b != pytest.approx(b2a)  # the two directions are different numbers
    assert set(metrics) == {"global_a2b_top_1_acc", "global_a2b_top_5_acc", "global_b2a_top_1_acc",
                            "global_b2a_top_5_acc"}


def test_global_nce_perfect_alignment_has_full_accuracy_and_low_loss():
    z = torch.eye(4) * 3
    losses, metrics = GlobalNceLoss(0.1, negatives_from_same_modality=False)(z, z)
    assert metrics["global_a2b_top_1_acc"] == 1.0 and metrics["global_b2a_top_1_acc"] == 1.0
    assert losses["global_a2b"] < 1e-3
    shuffled, m2 = GlobalNceLoss(0.1, negatives_from_same_modality=False)(z, z.roll(1, 0))
    assert m2["global_a2b_top_1_acc"] == 0.0 and shuffled["global_a2b"] > 5


def test_image_positive_weights_numbers_of_the_spec():
    """7x7 grid, relative threshold 0.5, exp(-d): 22..49 positives per region, self weight 2.7-6.0 %."""
    omega = positive_weights((7, 7), 0.5, "relative", True, 1.0).reshape(49, 49)
    positives = (omega > 0).sum(1)
    assert positives.min() == 22 and positives.max() == 49
    self_weight = omega.diagonal() / omega.sum(1)
    assert self_weight.min().item() == pytest.approx(0.027, abs=1e-3)
    assert self_weight.max().item() == pytest.approx(0.060, abs=1e-3)
    # smoothed weights exp(-d) lie in [exp(-0.5), 1] where positive (d <= 0.5)
    assert omega[omega > 0].min().item() >= math.exp(-0.5) - 1e-6
    assert omega.max().item() == pytest.approx(1.0)
    assert omega[omega > 0].min().item() < 0.65


def _direct_local(x, c, tau, omega, valid, w):
    """Loop form of the soft-target intra-sample loss for one sample and one direction (x anchors)."""
    x, c = F.normalize(x, dim=-1), F.normalize(c, dim=-1)
    idx = [n for n in range(len(x)) if valid[n]]
    wsum = sum(float(w[n]) for n in idx)
    total = 0.0
    for n in idx:
        row = torch.tensor([float(omega[n, m]) if valid[m] else 0.0 for m in range(len(x))])
        row = row / row.sum()
        s = [float(x[n] @ c[m]) / tau for m in range(len(x))]
        lse = math.log(sum(math.exp(s[m]) for m in idx))
        total += float(w[n]) / wsum * (-sum(float(row[m]) * s[m] for m in range(len(x))) + lse)
    return total


def test_report_local_loss_is_infonce_over_sentences_with_padding_masked():
    g = torch.Generator().manual_seed(1)
    B, S, d = 2, 4, 6
    x, c = torch.randn(B, S, d, generator=g), torch.randn(B, S, d, generator=g)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    w = torch.rand(B, S, generator=g)
    loss = LocalIntraSampleContrastiveLoss(512, similarity_temperature=0.3, distance_threshold=0,
                                           threshold_type="absolute", normalize_by_num_negatives=False)
    out = loss(x, c, S, mask, w)
    eye = torch.eye(S)
    l2att = sum(_direct_local(x[b], c[b], 0.3, eye, mask[b], w[b]) for b in range(B)) / B
    att2l = sum(_direct_local(c[b], x[b], 0.3, eye, mask[b], w[b]) for b in range(B)) / B
    assert out["l2att"].item() == pytest.approx(l2att, rel=1e-5)
    assert out["att2l"].item() == pytest.approx(att2l, rel=1e-5)
    # what sits in padded positions does not matter
    x2, c2 = x.clone(), c.clone()
    x2[~mask], c2[~mask] = 100.0, -7.0
    out2 = loss(x2, c2, S, mask, w)
    assert out2["l2att"].item() == pytest.approx(out["l2att"].item(), rel=1e-6)


def test_single_sentence_report_gives_zero_local_loss():
    x, c = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    mask = torch.tensor([[True, False, False]])
    out = LocalIntraSampleContrastiveLoss(512, 0.3, distance_threshold=0, threshold_type="absolute",
                                          normalize_by_num_negatives=False)(x, c, 3, mask, None)
    assert out["l2att"].item() == pytest.approx(0.0, abs=1e-6)


def test_image_local_loss_soft_positives_and_weights():
    g = torch.Generator().manual_seed(2)
    B, H, W, d = 2, 3, 3, 5
    x, c = torch.randn(B, H * W, d, generator=g), torch.randn(B, H * W, d, generator=g)
    w = torch.softmax(torch.randn(B, H * W, generator=g), -1)
    loss = LocalIntraSampleContrastiveLoss((7, 7), 0.3, distance_threshold=0.5, threshold_type="relative",
                                           smooth_weights=True, smooth_lambda=1.0, normalize_by_num_negatives=False)
    out = loss(x, c, (H, W), None, w)
    # the table of the 7x7 maximum, cropped to the 3x3 grid actually present
    omega = positive_weights((7, 7), 0.5, "relative", True, 1.0)[:H, :W, :H, :W].reshape(9, 9)
    valid = torch.ones(9, dtype=torch.bool)
    expect = sum(_direct_local(x[b], c[b], 0.3, omega, valid, w[b]) for b in range(B)) / B
    assert out["l2att"].item() == pytest.approx(expect, rel=1e-5)
    unweighted = loss(x, c, (H, W), None, None)["l2att"].item()
    assert unweighted != pytest.approx(out["l2att"].item(), rel=1e-4)  # the weights matter


def test_total_loss_weights_and_missing_weight():
    losses = {"global_a2b": torch.tensor(2.0), "global_b2a": torch.tensor(4.0), "local_a_l2att": torch.tensor(1.0)}
    weights = {"global_a2b": 0.75, "global_b2a": 0.25, "local_a_l2att": 0.375}
    assert total_loss(losses, weights).item() == pytest.approx(0.75 * 2 + 0.25 * 4 + 0.375)
    with pytest.raises(KeyError, match="local_a_l2att"):
        total_loss(losses, {"global_a2b": 1.0, "global_b2a": 1.0})


def test_cosine_per_epoch_schedules():
    periodic = cosine_factor("periodic", 4, 40)
    trace = [periodic(t) for t in range(9)]
    assert trace == pytest.approx([1, 0.8536, 0.5, 0.1464, 0, 0.1464, 0.5, 0.8536, 1], abs=1e-4)
    restart = cosine_factor("restart", 4, 40)
    assert [restart(t) for t in (3, 4, 5)] == pytest.approx([0.1464, 1.0, 0.8536], abs=1e-4)
    once = cosine_factor("once", 4, 8)
    assert [once(t) for t in (0, 4, 8)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)


def test_local_loss_options_of_the_original():
    """normalize_by_num_negatives (the dataclass default) and same-modality negatives, against loop forms."""
    g = torch.Generator().manual_seed(3)
    B, S, d = 2, 4, 6
    x, c = torch.randn(B, S, d, generator=g), torch.randn(B, S, d, generator=g)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    kw = dict(similarity_temperature=0.3, distance_threshold=0, threshold_type="absolute")
    plain = LocalIntraSampleContrastiveLoss(16, normalize_by_num_negatives=False, **kw)(x, c, S, mask)
    normed = LocalIntraSampleContrastiveLoss(16, normalize_by_num_negatives=True, **kw)(x, c, S, mask)
    # every one of the S positions (padding included) gets -log(N_valid / (2 * max_N))
    shift = sum(-S * math.log(int(mask[b].sum()) / 32) for b in range(B)) / B
    assert normed["l2att"].item() == pytest.approx(plain["l2att"].item() + shift, rel=1e-5)

    same = LocalIntraSampleContrastiveLoss(16, normalize_by_num_negatives=False, negatives_from_same_modality=True,
                                           **kw)(x, c, S, mask)
    xn, cn = F.normalize(x, dim=-1), F.normalize(c, dim=-1)
    total = 0.0
    for b in range(B):
        idx = [n for n in range(S) if mask[b, n]]
        for n in idx:
            s_pos = float(xn[b, n] @ cn[b, n]) / 0.3
            denom = sum(math.exp(float(xn[b, n] @ cn[b, m]) / 0.3) for m in idx)
            denom += sum(math.exp(float(xn[b, n] @ xn[b, m]) / 0.3) for m in idx if m != n)
            total += (-s_pos + math.log(denom)) / len(idx)
    assert same["l2att"].item() == pytest.approx(total / B, rel=1e-5)
