"""Each loss on fixed inputs against a hand computation, and the generator's weighting 1 / 10 / 0.001."""

import math
from types import SimpleNamespace

import pytest
import torch

from dira import engine, losses


def test_info_nce_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    expected = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1))
                - math.log(math.exp(0.5) / (2 * math.exp(0.5) + math.exp(3)))) / 2
    assert losses.info_nce(logits, torch.zeros(2, dtype=torch.long)).item() == pytest.approx(expected, rel=1e-6)


def test_restoration_loss_by_hand():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.full((2, 1, 4, 4), 0.5)
    y[0, 0, 0, 0] = 1.0
    assert losses.restoration_loss(x, y).item() == pytest.approx((31 * 0.25 + 1.0) / 32)


def test_lsgan_losses_by_hand():
    d_fake = torch.full((2, 1, 28, 28), 0.5)
    assert losses.generator_adversarial_loss(d_fake).item() == pytest.approx(0.25)
    d_real = torch.full((2, 1, 28, 28), 0.8)
    d_fake = torch.full((2, 1, 28, 28), 0.3)
    assert losses.discriminator_loss(d_real, d_fake).item() == pytest.approx(0.5 * (0.2**2 + 0.3**2))


def test_barlow_twins_by_hand():
    z1 = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    z2 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    # C = z1^T z2 / 2 = [[1, 1], [-1, -1]]: on-diagonal (1-1)^2 + (-1-1)^2 = 4, off-diagonal 1 + 1 = 2
    assert losses.barlow_twins_loss(z1, z2, lambd=0.5).item() == pytest.approx(4 + 0.5 * 2)


def test_simsiam_by_hand():
    p = torch.tensor([[1.0, 0.0]])
    z = torch.tensor([[0.0, 2.0]])
    assert losses.simsiam_loss(p, p, p, p).item() == pytest.approx(-1.0)
    assert losses.simsiam_loss(p, p, z, z).item() == pytest.approx(0.0, abs=1e-7)
    # L = -0.5 [cos(p1, z2) + cos(p2, z1)]: p1 = p, z2 = p (cos 1); p2 = p, z1 = z (cos 0)
    assert losses.simsiam_loss(p, p, z, p).item() == pytest.approx(-0.5)


class FakeMoCo(torch.nn.Module):
    def forward(self, y1, y2, update=True):
        logits = torch.tensor([[2.0, 1.0, 0.0]])
        return logits, torch.zeros(1, dtype=torch.long), torch.zeros(1, 1, 4, 4)


def test_generator_weights_1_10_0001():
    target = torch.full((1, 1, 4, 4), 0.5)
    disc = lambda x: torch.full((1, 1, 2, 2), 0.5)  # noqa: E731
    args = SimpleNamespace(method="moco", mode="dira", contrastive_weight=1.0, mse_weight=10.0, adv_weight=0.001)
    batch = [torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), target]
    total, parts, _ = engine.generator_losses(FakeMoCo(), disc, batch, args)
    nce = -math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1))
    assert parts["dis_loss"].item() == pytest.approx(nce, rel=1e-6)
    assert parts["res_loss"].item() == pytest.approx(0.25)
    assert parts["adv_loss"].item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(nce + 10 * 0.25 + 0.001 * 0.25, rel=1e-6)
    args.mode = "dir"
    total, parts, _ = engine.generator_losses(FakeMoCo(), disc, batch, args)
    assert "adv_loss" not in parts and total.item() == pytest.approx(nce + 2.5, rel=1e-6)


def test_learning_rate_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.03)
    opt.param_groups[0]["base_lr"] = 0.03
    args = SimpleNamespace(method="moco", cos=True, epochs=10, schedule=[120, 160])
    assert engine.adjust_learning_rate(opt, 0, args) == pytest.approx(0.03)
    assert engine.adjust_learning_rate(opt, 5, args) == pytest.approx(0.015)
    args.cos, args.epochs, args.schedule = False, 200, [120, 160]
    assert engine.adjust_learning_rate(opt, 119, args) == pytest.approx(0.03)
    assert engine.adjust_learning_rate(opt, 160, args) == pytest.approx(0.0003)
    args = SimpleNamespace(method="barlowtwins", epochs=20, bt_warmup_epochs=10)
    assert engine.adjust_learning_rate(opt, 5, args, iters_per_epoch=2) == pytest.approx(0.015)
    assert engine.adjust_learning_rate(opt, 20, args, iters_per_epoch=2) == pytest.approx(0.03 * 0.001)
