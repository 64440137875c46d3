"""VoCo v2 model and loss: shapes, hand-computed values, where the gradients go."""

import math

import pytest
import torch

from voco.v2.loss import assign_ce, v2_losses, v2_losses_loop
from voco.v2.model import SIZES, VoCoV2

TINY = dict(feature_size=12, window_size=2, hidden_dim=16, out_dim=16)


def test_sizes_and_head_input_width():
    assert SIZES == {"B": 48, "L": 96, "H": 192}
    # 24F: 1152 / 2304 / 4608 for B / L / H, the original's hard-coded widths
    assert [24 * f for f in SIZES.values()] == [1152, 2304, 4608]
    m = VoCoV2(**TINY)
    assert m.student.layer1[0].in_features == 24 * 12 and m.student.layer3[0].out_features == 16
    keys = list(m.state_dict())
    assert {k.split(".")[0] for k in keys} == {"backbone", "student", "teacher"}
    assert not any(p.requires_grad for p in m.teacher.parameters())


def test_forward_shapes_ema_and_gradients_reach_student_and_backbone_only():
    torch.manual_seed(0)
    m = VoCoV2(**TINY)
    b, s, k = 2, 1, 4  # 10 crops of 64^3: the smallest SwinUNETR takes in training
    img, crops = torch.rand(b * s, 1, 64, 64, 64), torch.rand(b * k, 1, 64, 64, 64)
    labels = torch.softmax(torch.randn(b, s, k), -1).double()
    t0 = [p.clone() for p in m.teacher.parameters()]
    s0 = [p.clone() for p in m.student.parameters()]
    intra, inter, reg, logits = m(img, crops, labels)
    assert logits.shape == (b, s, k) and intra.dtype == torch.float64
    for t, a, c in zip(m.teacher.parameters(), t0, s0):  # one EMA step with the pre-step student
        torch.testing.assert_close(t, 0.9 * a + 0.1 * c)
    (intra + inter + reg).backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.student.parameters())
    assert m.backbone.encoder10.layer.conv1.conv.weight.grad.abs().sum() > 0


def test_feature_dropout_zeroes_whole_crops_and_spares_the_teacher():
    torch.manual_seed(3)
    m = VoCoV2(**TINY, feature_dropout=0.5)
    m.backbone = torch.nn.Identity()  # embeddings = the inputs, to see what the heads get
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            seen[name] = inputs[0].detach()
        return hook

    m.student.register_forward_hook(keep("s"))
    m.teacher.register_forward_hook(keep("t"))
    emb = torch.rand(40, 24 * 12) + 0.5
    m.embed(emb[:4], emb[4:])
    dropped = (seen["s"] == 0).all(1)
    assert 0 < dropped.sum() < 40  # whole rows (crops) dropped, p = 0.5
    torch.testing.assert_close(seen["s"][~dropped], emb[~dropped] * 2)
    torch.testing.assert_close(seen["t"], emb)


def test_assign_ce_by_hand():
    t = torch.tensor([[[0.75, 0.25, 0.0, 0.0]]], dtype=torch.float64)
    logit = torch.tensor([[[0.5, 0.5, 0.2, 0.0]]], dtype=torch.float64)
    pos = -(0.75 * math.log(0.75 + 1e-6) + 0.25 * math.log(0.75 + 1e-6)) / (1 + 1e-6)
    neg = -(math.log(0.8 + 1e-6) + math.log(1 + 1e-6)) / (2 + 1e-6)  # v1 would give 0.2^2 / 2
    assert assign_ce(t, logit).item() == pytest.approx(pos + neg)


def test_v2_loss_by_hand_inter_uses_the_next_volume():
    """Two volumes, one random crop each, 2 bases each, 2-d embeddings chosen so every cosine is 0 or 1."""
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    x_s = torch.tensor([e1, e2])                 # volume 0's crop ~ e1, volume 1's ~ e2
    x_t = x_s.clone()
    q_s = torch.tensor([e1, e2, e2, e1])         # bases: volume 0 (e1, e2), volume 1 (e2, e1)
    q_t = q_s.clone()
    labels = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    intra, inter, reg, logits = v2_losses(x_s, q_s, x_t, q_t, labels)
    assert logits.tolist() == [[[1.0, 0.0]], [[1.0, 0.0]]]  # crops vs their own volume's teacher bases
    # volume 0: label (1, 0), logit (1, 0): pos -log(1 + 1e-6), neg -log(1 - 0 + 1e-6), each / (1 + 1e-6)
    # volume 1: label (0, 1), logit (1, 0): pos -log(1 - 1 + 1e-6), neg -log(1 - 1 + 1e-6), each / (1 + 1e-6)
    v0 = -2 * math.log(1 + 1e-6) / (1 + 1e-6)
    v1 = -2 * math.log(1e-6) / (1 + 1e-6)
    assert intra.item() == pytest.approx((v0 + v1) / 2)
    # inter: volume 0 vs volume 1's bases (e2, e1): teacher target (0, 1) = student logit -> ~0;
    # volume 1 vs volume 0's bases (e1, e2): target (0, 1) = logit -> ~0
    assert inter.item() == pytest.approx(-2 * math.log(1 + 1e-6) / (1 + 1e-6), abs=1e-7)  # float32
    assert reg.item() == 0.0  # orthogonal bases
    # swap the order of volumes 0 and 1's bases in volume 1 only: the inter term of volume 0 changes
    _, inter2, _, _ = v2_losses(x_s, torch.tensor([e1, e2, e1, e2]), x_t, torch.tensor([e1, e2, e1, e2]), labels)
    assert inter2.item() == pytest.approx(inter.item(), abs=1e-7)  # targets follow the teacher bases
    _, inter3, _, _ = v2_losses(x_s, torch.tensor([e1, e2, e1, e2]), x_t, q_t, labels)
    assert inter3.item() > 1.0  # student bases disagree with the teacher's assignment


def test_vectorised_equals_loop_reference_with_gradients():
    torch.manual_seed(4)
    b, s, k, d = 3, 2, 9, 16
    x_s = torch.randn(b * s, d, requires_grad=True)
    q_s = torch.randn(b * k, d, requires_grad=True)
    x_t, q_t = torch.randn(b * s, d), torch.randn(b * k, d)
    labels = torch.softmax(torch.randn(b, s, k), -1).double()
    labels[0, 0, :5] = 0
    fast = v2_losses(x_s, q_s, x_t, q_t, labels)[:3]
    grads_fast = torch.autograd.grad(sum(fast), (x_s, q_s))
    slow = v2_losses_loop(x_s, q_s, x_t, q_t, labels)
    grads_slow = torch.autograd.grad(sum(slow), (x_s, q_s))
    for a, c in zip(fast + grads_fast, slow + grads_slow):
        torch.testing.assert_close(a, c.to(a.dtype), rtol=1e-5, atol=1e-6)
    # the teacher side never gets a gradient, and the last base of a volume none from the regulariser
    q = q_s.detach().clone().requires_grad_(True)
    g = torch.autograd.grad(v2_losses(x_s.detach(), q, x_t, q_t, labels)[2], q)[0].reshape(b, k, d)
    assert torch.all(g[:, -1] == 0) and torch.all(g[:, 0].abs().sum(-1) > 0)
