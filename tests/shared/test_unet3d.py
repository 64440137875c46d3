import pytest
import torch

from shared.unet3d import ClassificationNet3D, ContBatchNorm3d, UNet3D, YNet3D, predict_proba

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _block(prefix, channels):
    """Keys and shapes of one ops.{0,1} pair: channels = [(in, out), (in, out)]."""
    out = []
    for i, (cin, cout) in enumerate(channels):
        out += [(f"{prefix}.ops.{i}.conv1.weight", (cout, cin, 3, 3, 3)), (f"{prefix}.ops.{i}.conv1.bias", (cout,))]
        out += [(f"{prefix}.ops.{i}.bn1.{b}", () if b == "num_batches_tracked" else (cout,)) for b in BN]
    return out


def expected_keys(decoder=True, head=True, classes=44):
    """The original ynet3d.py state_dict in registration order, built from its naming grammar."""
    keys = []
    keys += _block("down_tr64", [(1, 32), (32, 64)])
    keys += _block("down_tr128", [(64, 64), (64, 128)])
    keys += _block("down_tr256", [(128, 128), (128, 256)])
    keys += _block("down_tr512", [(256, 256), (256, 512)])
    if decoder:
        for name, cin, cat, out in (("up_tr256", 512, 768, 256), ("up_tr128", 256, 384, 128),
                                    ("up_tr64", 128, 192, 64)):
            keys += [(f"{name}.up_conv.weight", (cin, cin, 2, 2, 2)), (f"{name}.up_conv.bias", (cin,))]
            keys += _block(name, [(cat, out), (out, out)])
        keys += [("out_tr.final_conv.weight", (1, 64, 1, 1, 1)), ("out_tr.final_conv.bias", (1,))]
    if head:
        keys += [("clc_out.conv1.weight", (1024, 512, 3, 3, 3)), ("clc_out.conv1.bias", (1024,))]
        keys += [(f"clc_out.bn1.{b}", () if b == "num_batches_tracked" else (1024,)) for b in BN]
        keys += [("clc_out.fc1.weight", (classes, 1024)), ("clc_out.fc1.bias", (classes,))]
    return keys


def _layout(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def full_models():
    torch.manual_seed(0)
    return UNet3D(), YNet3D(), ClassificationNet3D()


def test_state_dict_keys_order_and_shapes_match_the_original(full_models):
    unet, ynet, clsnet = full_models
    assert _layout(unet) == expected_keys(head=False)
    assert _layout(ynet) == expected_keys()
    assert _layout(clsnet) == expected_keys(decoder=False)
    assert (len(unet.state_dict()), len(ynet.state_dict()), len(clsnet.state_dict())) == (106, 115, 65)


def test_parameter_counts_match_the_original(full_models):
    counts = [sum(p.numel() for p in m.parameters()) for m in full_models]
    assert counts == [19_073_665, 33_277_613, 21_231_724]


def test_head_size_follows_cls_classes():
    model = ClassificationNet3D(cls_classes=50, width=4)
    assert model.clc_out.fc1.weight.shape == (50, 128)


@pytest.mark.parametrize("width", [4, 8])
def test_forward_shapes_and_encode(width):
    x = torch.rand(2, 1, 32, 24, 16)
    unet, ynet, clsnet = UNet3D(width=width), YNet3D(cls_classes=7, width=width), \
        ClassificationNet3D(cls_classes=7, width=width)
    seg = unet(x)
    assert seg.shape == x.shape and seg.min() >= 0 and seg.max() <= 1
    seg, logits = ynet(x)
    assert seg.shape == x.shape and logits.shape == (2, 7)
    assert clsnet(x).shape == (2, 7)
    assert unet.encode(x).shape == (2, 16 * width, 4, 3, 2)
    probs = predict_proba(logits)
    assert torch.allclose(probs.sum(1), torch.ones(2))


def test_head_returns_logits_not_probabilities():
    torch.manual_seed(0)
    logits = ClassificationNet3D(cls_classes=3, width=4)(torch.rand(2, 1, 16, 16, 16) * 50)
    assert (logits < 0).any() or (logits.sum(1) - 1).abs().max() > 1e-3


def test_inputs_not_divisible_by_8_are_rejected():
    with pytest.raises(ValueError, match="divisible by 8"):
        UNet3D(width=4)(torch.rand(1, 1, 20, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, 1, X, Y, Z\)"):
        UNet3D(width=4)(torch.rand(1, 2, 16, 16, 16))


def test_original_batchnorm_uses_batch_statistics_in_eval_mode():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4, 4, 4) * 5 + 3
    cont, standard = ContBatchNorm3d(3), ContBatchNorm3d(3, always_batch_stats=False)
    standard.load_state_dict(cont.state_dict())
    cont.eval(), standard.eval()
    with torch.no_grad():
        y = cont(x)
        y_std = standard(x)
    # batch statistics: per-channel output mean ~0, std ~1; running stats moved; counter did not
    assert y.mean(dim=(0, 2, 3, 4)).abs().max() < 1e-4
    assert not torch.allclose(cont.running_mean, torch.zeros(3))
    assert cont.num_batches_tracked.item() == 0
    # standard eval BN uses the (initial) running stats: output equals input
    assert torch.allclose(y_std, x, atol=1e-4)
    assert torch.allclose(standard.running_mean, torch.zeros(3))


def test_eval_output_depends_on_batch_only_with_the_original_batchnorm():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16, 16)
    for always, depends in ((True, True), (False, False)):
        model = UNet3D(width=4, always_batch_stats=always).eval()
        with torch.no_grad():
            alone, together = model(x[:1]), model(x)[:1]
        assert (not torch.allclose(alone, together, atol=1e-6)) == depends


def test_gradients_reach_every_parameter():
    model = YNet3D(cls_classes=3, width=4)
    seg, logits = model(torch.rand(2, 1, 16, 16, 16))
    (seg.mean() + torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
