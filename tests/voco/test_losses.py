import math

import pytest
import torch
import torch.nn.functional as F

from voco.losses import neg_loss, online_assign, pos_loss, reg_loss, voco_losses


def test_online_assign_is_relu_cosine():
    torch.manual_seed(0)
    f, q = torch.randn(3, 8), torch.randn(5, 8)
    ref = torch.stack([F.relu(F.cosine_similarity(f[a:a + 1], q, dim=1)) for a in range(3)])
    torch.testing.assert_close(online_assign(f, q), ref)
    assert online_assign(torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0], [2.0, 0.0]])).tolist() == [[0.0, 1.0]]


def test_pos_and_neg_on_fixed_logits():
    y = torch.tensor([[[0.75, 0.25, 0.0, 0.0]]], dtype=torch.float64)
    logit = torch.tensor([[[0.5, 0.5, 0.2, 0.0]]], dtype=torch.float64)
    expected_pos = -(0.75 * math.log(1 - 0.25 + 1e-6) + 0.25 * math.log(1 - 0.25 + 1e-6)) / (1 + 1e-6)
    assert pos_loss(y, logit).item() == pytest.approx(expected_pos)
    assert neg_loss(y, logit).item() == pytest.approx((0.2 ** 2 + 0.0) / (2 + 1e-6))
    # perfect prediction: both terms vanish (up to the 1e-6 guards)
    assert pos_loss(y, y).item() == pytest.approx(0.0, abs=1e-5)
    assert neg_loss(y, y).item() == 0.0


def test_reg_loss_pairs_and_stop_gradient():
    torch.manual_seed(1)
    q = torch.randn(2, 16, 6, requires_grad=True)
    loss = reg_loss(q)
    ref = []
    for b in range(2):
        s = sum(F.relu(F.cosine_similarity(q[b, i], q[b, j].detach(), dim=0)) ** 2
                for i in range(16) for j in range(i + 1, 16))
        ref.append(s / 120)
    torch.testing.assert_close(loss, torch.stack(ref))
    loss.sum().backward()
    assert torch.all(q.grad[:, -1] == 0) and torch.all(q.grad[:, 0].abs().sum(-1) > 0)
    # orthogonal or opposite bases cost nothing
    assert reg_loss(torch.eye(4)[None]).item() == 0.0


def test_voco_losses_symmetric_logits_and_gradients():
    torch.manual_seed(2)
    B, S, K, D = 2, 2, 4, 8
    p_s = torch.randn(B * S, D, requires_grad=True)
    q_s = torch.randn(B * K, D, requires_grad=True)
    p_t, q_t = torch.randn(B * S, D), torch.randn(B * K, D)
    labels = torch.softmax(torch.randn(B, S, K), -1).double()
    labels[0, 0] = torch.tensor([1.0, 0, 0, 0])
    pos, neg, reg, logits = voco_losses(p_s, q_s, p_t, q_t, labels, B)
    for b in range(B):  # volume b's random crops only meet volume b's base crops
        ps, qs = p_s[b * S:(b + 1) * S], q_s[b * K:(b + 1) * K]
        pt, qt = p_t[b * S:(b + 1) * S], q_t[b * K:(b + 1) * K]
        ref = 0.5 * (online_assign(ps, qt) + online_assign(pt, qs))
        torch.testing.assert_close(logits[b], ref)
    assert pos.dtype == torch.float64  # the labels' dtype, as in the original
    torch.testing.assert_close(pos, pos_loss(labels, logits.double()).mean())
    torch.testing.assert_close(neg, neg_loss(labels, logits.double()).mean())
    torch.testing.assert_close(reg, reg_loss(q_s.reshape(B, K, D)).mean())
    (pos + neg + reg).backward()
    assert p_s.grad.abs().sum() > 0 and q_s.grad.abs().sum() > 0


def test_single_network_logits_have_full_gradient():
    # the CVPR paper's one-network logits: same value as the symmetric form fed with detached copies
    # of the same features, but both sides get the whole gradient (the symmetric form gives each half)
    torch.manual_seed(3)
    B, S, K, D = 1, 2, 4, 8
    labels = torch.softmax(torch.randn(B, S, K), -1).double()
    p, q = torch.randn(B * S, D), torch.randn(B * K, D)
    p1, q1 = p.clone().requires_grad_(), q.clone().requires_grad_()
    pos1, neg1, _, logits1 = voco_losses(p1, q1, None, None, labels, B)
    p2, q2 = p.clone().requires_grad_(), q.clone().requires_grad_()
    pos2, neg2, _, logits2 = voco_losses(p2, q2, p2.detach(), q2.detach(), labels, B)
    torch.testing.assert_close(logits1, logits2)
    torch.testing.assert_close(logits1[0], online_assign(p, q))
    (pos1 + neg1).backward()
    (pos2 + neg2).backward()
    torch.testing.assert_close(p1.grad, 2 * p2.grad)
    torch.testing.assert_close(q1.grad, 2 * q2.grad)
