"""VoCo v2 against Large-Scale-Medical's own classes (skipped unless VOCO_V2_ORIGINAL names a checkout).

    git clone https://github.com/Luffy03/Large-Scale-Medical /tmp/lsm
    VOCO_V2_ORIGINAL=/tmp/lsm pytest tests/voco/test_v2_original.py

Only `Self-supervised/models/voco_head.py` and `Self-supervised/utils/voco_trans.py` are read. The
original imports dynamic_network_architectures (nnU-Net's) at the top without using it in VoCoHead;
an empty stand-in is put in sys.modules when the package is absent.
"""

import argparse
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = os.environ.get("VOCO_V2_ORIGINAL")
pytestmark = pytest.mark.skipif(not ROOT, reason="set VOCO_V2_ORIGINAL to a Large-Scale-Medical checkout")


def _stub_nnunet_architectures():
    try:
        import dynamic_network_architectures  # noqa: F401
        return
    except ImportError:
        pass
    names = {"dynamic_network_architectures": {},
             "dynamic_network_architectures.architectures": {},
             "dynamic_network_architectures.architectures.unet": {"ResidualEncoderUNet": None,
                                                                  "PlainConvUNet": None},
             "dynamic_network_architectures.building_blocks": {},
             "dynamic_network_architectures.building_blocks.helper": {"get_matching_instancenorm": None,
                                                                      "convert_dim_to_conv_op": None}}
    for name, attrs in names.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules.setdefault(name, mod)


def _load(relpath, name):
    path = Path(ROOT) / relpath
    if not path.is_file():
        pytest.fail(f"VOCO_V2_ORIGINAL={ROOT}: {relpath} not found (expected a Large-Scale-Medical checkout)")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def original():
    _stub_nnunet_architectures()
    return _load("Self-supervised/models/voco_head.py", "lsm_voco_head")


def _args(feature_size):
    return argparse.Namespace(spatial_dims=3, in_channels=1, feature_size=feature_size,
                              dropout_path_rate=0.0, use_checkpoint=False)


@pytest.mark.slow  # ~90 s on 1 CPU thread: the window-7 Swin on two 64^3 crops, forward and backward
def test_backbone_same_embeddings_and_gradients(original):
    """The original's `Swin` (backbone) and our `Encoder`, same weights: same pooled features and grads."""
    from voco.v2.model import Encoder

    torch.manual_seed(0)
    theirs = original.Swin(_args(12))
    ours = Encoder(feature_size=12, window_size=7)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same key names
    x = torch.rand(2, 1, 64, 64, 64)
    w = torch.randn(2, 24 * 12)
    e_t, e_o = theirs(x), ours(x)
    torch.testing.assert_close(e_o, e_t, rtol=1e-5, atol=1e-5)
    (e_t * w).sum().backward()
    (e_o * w).sum().backward()
    for (name, p_t), p_o in zip(theirs.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p_o.grad, p_t.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_voco_head_same_heads_assignments_loss_and_gradients(original):
    """VoCoHead (B size, 1152-d) against VoCoV2 with the same weights, on the same backbone embeddings
    (both backbones replaced by the identity: the backbone is checked above), same dropout draws."""
    from monai.data import MetaTensor

    from voco.v2.model import VoCoV2

    torch.manual_seed(1)
    theirs = original.VoCoHead(_args(48))
    ours = VoCoV2(feature_size=48)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the SSL_head key layout, both ways
    theirs.backbone = torch.nn.Identity()
    ours.backbone = torch.nn.Identity()
    theirs.train(), ours.train()
    outputs = {}

    def keep(tag):
        def hook(module, inputs, output):
            outputs[tag] = output.detach()
        return hook

    for tag, model in (("theirs", theirs), ("ours", ours)):
        model.student.register_forward_hook(keep(f"{tag}_student"))
        model.teacher.register_forward_hook(keep(f"{tag}_teacher"))

    b, s, k = 3, 2, 9
    emb = torch.randn(b * s + b * k, 1152)
    labels = torch.from_numpy(np.random.default_rng(0).dirichlet(np.ones(k) * 0.3, size=(b, s)))
    labels[labels < 0.05] = 0.0  # exact zeros: the negatives
    e_t = emb.clone().requires_grad_(True)
    e_o = emb.clone().requires_grad_(True)

    torch.manual_seed(7)
    loss_t = theirs(MetaTensor(e_t[:b * s]), MetaTensor(e_t[b * s:]), labels)
    torch.manual_seed(7)
    intra, inter, reg, logits = ours(e_o[:b * s], e_o[b * s:], labels)
    loss_o = intra + inter + reg

    for part in ("student", "teacher"):
        torch.testing.assert_close(outputs[f"ours_{part}"], outputs[f"theirs_{part}"], rtol=1e-5, atol=1e-5)
    for p_t, p_o in zip(theirs.teacher.parameters(), ours.teacher.parameters()):  # after the EMA step
        torch.testing.assert_close(p_o, p_t, rtol=1e-6, atol=1e-6)
    x_stu, bases_tea = outputs["theirs_student"][:b * s], outputs["theirs_teacher"][b * s:]
    for i in range(b):  # assignments: the original's online_assign of crop i vs its own teacher bases
        ref = original.online_assign(x_stu[i * s:(i + 1) * s], bases_tea[i * k:(i + 1) * k])
        torch.testing.assert_close(logits[i].float(), ref, rtol=1e-5, atol=1e-5)
    assert abs(loss_o.item() - loss_t.item()) < 1e-5, (loss_o.item(), loss_t.item())

    loss_t.backward()
    loss_o.backward()
    torch.testing.assert_close(e_o.grad, e_t.grad, rtol=1e-5, atol=1e-5)
    for (name, p_t), p_o in zip(theirs.student.named_parameters(), ours.student.parameters()):
        torch.testing.assert_close(p_o.grad, p_t.grad.to(p_o.dtype), rtol=1e-5, atol=1e-5, msg=name)
    assert all(p.grad is None for p in theirs.teacher.parameters())


def test_loss_terms_equal_the_original_functions(original):
    """Each of our three terms against the original's ce_loss / inter_volume / regularization_loss."""
    from voco.v2.loss import v2_losses

    torch.manual_seed(2)
    b, s, k, d = 2, 3, 9, 32
    x_s, q_s = torch.randn(b * s, d), torch.randn(b * k, d)
    x_t, q_t = torch.randn(b * s, d), torch.randn(b * k, d)
    labels = torch.softmax(torch.randn(b, s, k) * 3, -1).double()
    labels[labels < 0.1] = 0
    intra, inter, reg, _ = v2_losses(x_s, q_s, x_t, q_t, labels)
    head = original.VoCoHead.__new__(original.VoCoHead)  # inter_volume uses no attribute
    ref = [0.0, 0.0, 0.0]
    for i in range(b):
        j = (i + 1) % b
        xs, xt = x_s[i * s:(i + 1) * s], x_t[i * s:(i + 1) * s]
        ref[0] += original.ce_loss(labels[i], original.online_assign(xs, q_t[i * k:(i + 1) * k]))
        ref[1] += head.inter_volume(xs, xt, q_s[j * k:(j + 1) * k], q_t[j * k:(j + 1) * k])
        ref[2] += original.regularization_loss(q_s[i * k:(i + 1) * k])
    for ours, theirs in zip((intra, inter, reg), ref):
        assert abs(ours.item() - (theirs / b).item()) < 1e-5


def test_overlap_labels_equal_get_position_label():
    """Every random-crop centre the original can draw in the 192^2 window gives the same 9 labels."""
    from voco.data import overlap_labels

    trans = _load("Self-supervised/utils/voco_trans.py", "lsm_voco_trans")
    np.random.seed(0)
    for _ in range(200):
        cx, cy, theirs = trans.get_position_label(roi=64, base_roi=64, max_roi=192, num_crops=3)
        assert 32 <= cx < 160 and 32 <= cy < 160
        ours = overlap_labels([[cx - 32, cy - 32]], base_roi=64, num_crops=3)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.slow  # ~2 min on 1 CPU thread: the window-7 SwinUNETR with decoders on one 64^3 crop, twice
def test_omni_backbone_same_embeddings_logits_and_frozen_gradients():
    """Omni-supervised's `Swin` (whole SwinUNETR) against our Encoder(out_channels): same keys, pooled
    features and segmentation logits; the "frozen" decoder path (maps detached, Swin stage 4 attached)
    gives the same gradients as our semi path."""
    from voco.v2.model import Encoder

    _stub_nnunet_architectures()
    omni = _load("Omni-supervised/models/voco_head.py", "lsm_omni_voco_head")
    torch.manual_seed(0)
    theirs = omni.Swin(argparse.Namespace(**vars(_args(12)), out_channels=5))
    ours = Encoder(feature_size=12, window_size=7, out_channels=5)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the same key names, decoders included
    x = torch.rand(1, 1, 64, 64, 64)
    w = torch.randn(1, 5, 64, 64, 64)
    emb_t, logits_t = theirs(x, frozen=True)
    maps, hs3 = ours.encode(x)
    logits_o = ours.decode([m.detach() for m in maps], hs3)
    torch.testing.assert_close(ours.pool(maps), emb_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_o, logits_t, rtol=1e-5, atol=1e-5)
    (logits_t * w).sum().backward()
    (logits_o * w).sum().backward()
    for (name, p_t), p_o in zip(theirs.named_parameters(), ours.parameters()):
        if p_t.grad is None:
            assert p_o.grad is None, name
        else:
            torch.testing.assert_close(p_o.grad, p_t.grad, rtol=1e-4, atol=1e-5, msg=name)
    assert theirs.swinViT.layers1[0].blocks[0].attn.qkv.weight.grad is not None  # stage 4 leaks, as kept
    assert theirs.encoder10.layer.conv1.conv.weight.grad is None  # the encoder maps are detached


def test_parameter_counts_equal_the_original(original):
    """Size B: the original's VoCoHead and ours have the same parameters, in all and in the backbone (the
    README's L / H discussion rests on this count)."""
    from voco.v2.model import VoCoV2

    theirs, ours = original.VoCoHead(_args(48)), VoCoV2(feature_size=48)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert (count(theirs), count(theirs.backbone)) == (count(ours), count(ours.backbone)) == (59_723_890, 53_164_146)
