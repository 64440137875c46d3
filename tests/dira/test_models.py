"""Model structure of the original: key layout (generated from its naming grammar), shapes,
parameter counts, the discriminator, the MoCo queue and momentum updates."""

import pytest
import torch

from dira.models import DiRABarlowTwins, DiRAMoCo, DiRASimSiam, DiRAUNet, Discriminator

BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def unet_keys():
    """The 380 smp.Unet('resnet50') keys in state-dict order, from the original's naming grammar."""
    keys = ["encoder.conv1.weight"] + [f"encoder.bn1.{s}" for s in BN]
    for layer, blocks in zip(range(1, 5), (3, 4, 6, 3)):
        for b in range(blocks):
            pre = f"encoder.layer{layer}.{b}"
            for i in (1, 2, 3):
                keys += [f"{pre}.conv{i}.weight"] + [f"{pre}.bn{i}.{s}" for s in BN]
            if b == 0:
                keys += [f"{pre}.downsample.0.weight"] + [f"{pre}.downsample.1.{s}" for s in BN]
    for blk in range(5):
        for conv in (1, 2):
            pre = f"decoder.blocks.{blk}.conv{conv}"
            keys += [f"{pre}.0.weight"] + [f"{pre}.1.{s}" for s in BN]
    return keys + ["segmentation_head.0.weight", "segmentation_head.0.bias"]


@pytest.fixture(scope="module")
def resnet50_dira():
    torch.manual_seed(0)
    return DiRAMoCo("dira", "resnet50", 128, 65536, 0.999, 0.2, mlp=True)


def test_unet_key_grammar_counts():
    keys = unet_keys()
    assert len(keys) == 380
    assert sum(k.startswith("encoder.") for k in keys) == 318
    assert sum(k.endswith("num_batches_tracked") and k.startswith("encoder.") for k in keys) == 53
    assert sum(k.startswith("decoder.") for k in keys) == 60


def test_dira_moco_key_layout(resnet50_dira):
    sd = resnet50_dira.state_dict()
    head = ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"]
    branch = ["backbone." + k for k in unet_keys()] + head
    expected = ["queue", "queue_ptr"] + [f"encoder_q.{k}" for k in branch] + [f"encoder_k.{k}" for k in branch]
    assert list(sd) == expected
    assert len(sd) == 770
    assert not any("module." in k for k in sd)
    assert list(resnet50_dira.encoder_q.backbone.state_dict()) == unet_keys()


def test_dira_moco_shapes(resnet50_dira):
    sd = resnet50_dira.state_dict()
    assert sd["queue"].shape == (128, 65536) and sd["queue"].dtype == torch.float32
    assert sd["queue_ptr"].shape == (1,) and sd["queue_ptr"].dtype == torch.int64 and int(sd["queue_ptr"]) == 0
    torch.testing.assert_close(sd["queue"].norm(dim=0), torch.ones(65536))
    assert sd["encoder_q.backbone.encoder.conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["encoder_q.fc.0.weight"].shape == (2048, 2048)
    assert sd["encoder_q.fc.2.weight"].shape == (128, 2048)
    for blk, (c_in, c_out) in enumerate([(3072, 256), (768, 128), (384, 64), (128, 32), (32, 16)]):
        assert sd[f"encoder_q.backbone.decoder.blocks.{blk}.conv1.0.weight"].shape == (c_out, c_in, 3, 3)
        assert sd[f"encoder_q.backbone.decoder.blocks.{blk}.conv2.0.weight"].shape == (c_out, c_out, 3, 3)
    assert sd["encoder_q.backbone.segmentation_head.0.weight"].shape == (1, 16, 3, 3)
    assert sd["encoder_q.backbone.layer2.0.downsample.0.weight".replace("backbone.", "backbone.encoder.")].shape \
        == (512, 256, 1, 1)


def test_parameter_counts(resnet50_dira):
    def count(m):
        return sum(p.numel() for p in m.parameters())

    q = resnet50_dira.encoder_q
    assert count(q.backbone.encoder) == 23_508_032
    assert count(q.backbone.decoder) == 9_012_928
    assert count(q.backbone.segmentation_head) == 145
    assert count(q.fc) == 4_458_624
    assert sum(p.numel() for p in q.parameters() if p.requires_grad) == 36_979_729
    assert count(resnet50_dira) == 73_959_458
    assert not any(p.requires_grad for p in resnet50_dira.encoder_k.parameters())
    for pq, pk in zip(q.parameters(), resnet50_dira.encoder_k.parameters()):
        assert torch.equal(pq, pk)


def test_without_mlp_has_766_keys():
    m = DiRAMoCo("dira", "resnet18", 128, 8, mlp=False)
    assert "encoder_q.fc.weight" in m.state_dict()
    assert len(m.state_dict()) == 2 + 2 * (len(m.encoder_q.backbone.state_dict()) + 2)


def test_discriminator_layout_and_output():
    d = Discriminator(channels=1)
    sd = d.state_dict()
    shapes = {f"model.{i}.weight": s for i, s in zip((0, 2, 5, 8, 11), [(64, 1, 3, 3), (128, 64, 3, 3),
                                                                          (256, 128, 3, 3), (512, 256, 3, 3),
                                                                          (1, 512, 3, 3)])}
    assert list(sd) == [f"model.{i}.{w}" for i in (0, 2, 5, 8, 11) for w in ("weight", "bias")]
    for k, s in shapes.items():
        assert sd[k].shape == s
    assert sum(p.numel() for p in d.parameters()) == 1_554_433
    assert d(torch.rand(2, 1, 224, 224)).shape == (2, 1, 28, 28)
    assert abs(float(sd["model.8.weight"].std()) - 0.02) < 0.002  # weights_init_normal


def test_unet_forward_shapes():
    m = DiRAUNet("resnet18", 128).eval()
    f, restored = m(torch.rand(2, 3, 64, 64))
    assert f.shape == (2, 128) and restored.shape == (2, 1, 64, 64)
    assert restored.min() >= 0 and restored.max() <= 1  # sigmoid head
    f2, none = m(torch.rand(2, 3, 64, 64), decode=False)
    assert none is None and f2.shape == (2, 128)


def tiny_moco(**kw):
    torch.manual_seed(0)
    return DiRAMoCo("dira", "resnet18", 16, kw.pop("K", 8), kw.pop("m", 0.9), 0.2, mlp=True, **kw)


def test_momentum_update_matches_formula():
    m = tiny_moco()
    with torch.no_grad():
        for p in m.encoder_q.parameters():
            p.add_(torch.randn_like(p))
    before_k = [p.clone() for p in m.encoder_k.parameters()]
    q = [p.clone() for p in m.encoder_q.parameters()]
    m._momentum_update_key_encoder()
    for pk, k0, q0 in zip(m.encoder_k.parameters(), before_k, q):
        torch.testing.assert_close(pk, 0.9 * k0 + 0.1 * q0)


def test_logits_and_queue_update():
    m = tiny_moco().eval()
    y1, y2 = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    queue0 = m.queue.clone()
    with torch.no_grad():
        logits, labels, restored = m(y1, y2, update=False)
        q = torch.nn.functional.normalize(m.encoder_q(y1)[0], dim=1)
        k = torch.nn.functional.normalize(m.encoder_k(y2)[0], dim=1)
    assert logits.shape == (4, 9) and torch.equal(labels, torch.zeros(4, dtype=torch.long))
    assert restored.shape == (4, 1, 64, 64)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / 0.2)
    torch.testing.assert_close(logits[:, 1:], q @ queue0 / 0.2)
    assert torch.equal(m.queue, queue0) and int(m.queue_ptr) == 0  # update=False: no side effect

    k_params = [p.clone() for p in m.encoder_k.parameters()]
    with torch.no_grad():
        m(y1, y2)
    assert int(m.queue_ptr) == 4
    assert torch.equal(m.queue[:, 4:], queue0[:, 4:])
    assert not torch.equal(m.queue[:, :4], queue0[:, :4])
    torch.testing.assert_close(m.queue[:, :4].norm(dim=0), torch.ones(4))
    assert any(not torch.equal(a, b) for a, b in zip(k_params, m.encoder_k.parameters()))
    with torch.no_grad():
        m(y1, y2)
    assert int(m.queue_ptr) == 0  # wrapped around K=8


def test_queue_must_divide_batch():
    m = tiny_moco(K=6)
    with pytest.raises(AssertionError, match="multiple of the global batch"):
        with torch.no_grad():
            m(torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64))


def test_skip_key_decoder_same_logits():
    a, b = tiny_moco().eval(), tiny_moco(key_decoder=False).eval()
    x1, x2 = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x1, x2)[0], b(x1, x2)[0])


def test_barlow_twins_and_simsiam_outputs():
    bt = DiRABarlowTwins("resnet18", "32-32-16")
    z1, z2, restored = bt(torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64))
    assert z1.shape == (4, 16) and restored.shape == (4, 1, 64, 64)
    assert "encoder_q.backbone.encoder.conv1.weight" in bt.state_dict()
    ss = DiRASimSiam("resnet18", 32, 8)
    p1, p2, z1, z2, restored = ss(torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64))
    assert p1.shape == z1.shape == (4, 32) and not z1.requires_grad
    assert not ss.encoder_q.fc[6].bias.requires_grad


def test_resnet50_transfer_matches_every_encoder_tensor(resnet50_dira):
    from dira import transfer

    full = {"state_dict": {"module." + k: v for k, v in resnet50_dira.state_dict().items()}}
    resnet = transfer.build_resnet("resnet50", num_classes=14)
    report = transfer.load_into_resnet(resnet, full, verbose=False)
    assert len(report.matched) == 318 and report.fraction == 1.0  # all but fc.weight, fc.bias
    unet = transfer.build_unet("resnet50")
    report = transfer.load_into_unet(unet, full, verbose=False)
    assert len(report.matched) == 378 and report.fraction == 1.0  # all but the head's two tensors
    assert torch.equal(unet.decoder.blocks[0].conv1[0].weight,
                       resnet50_dira.encoder_q.backbone.decoder.blocks[0].conv1[0].weight)


@pytest.mark.parametrize("frozen", [False, True])
def test_validation_side_effects_switch(frozen):
    """The original's validation momentum-updates the key encoder and enqueues keys; --frozen_validation not."""
    from types import SimpleNamespace

    from dira import engine

    m = tiny_moco()
    disc = Discriminator()
    args = SimpleNamespace(method="moco", mode="dira", contrastive_weight=1.0, mse_weight=10.0, adv_weight=0.001,
                           frozen_validation=frozen, max_steps_per_epoch=0, channels_last=False, amp="none")
    batch = [torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64), torch.rand(4, 1, 64, 64)]
    queue, k0 = m.queue.clone(), [p.clone() for p in m.encoder_k.parameters()]
    with torch.no_grad():
        for p in m.encoder_q.fc.parameters():  # query != key, so a momentum step shows
            p.add_(0.01)
    loss = engine.validate(m, disc, [batch], args, torch.device("cpu"))
    assert loss == loss and loss > 0
    changed_queue = not torch.equal(m.queue, queue)
    changed_keys = any(not torch.equal(a, b) for a, b in zip(k0, m.encoder_k.parameters()))
    assert changed_queue == changed_keys == (not frozen)
    assert int(m.queue_ptr) == (0 if frozen else 4)
