"""eval3d reads every 3D checkpoint layout through shared.weights and reports what matched."""

import numpy as np
import pytest
import torch
from monai.networks.nets import SwinUNETR

from eval3d.encoders import (
    SWIN_ENCODER,
    build_network,
    key_report,
    load_encoder,
    parse_encoder,
    random_arm,
    trust_checkpoints,
)
from shared.unet3d import YNet3D
from shared.weights import WeightLoadError

SWIN = {"feature_size": 12, "window_size": 2}


def swin_encoder_state(seed):
    torch.manual_seed(seed)
    net = SwinUNETR(in_channels=1, out_channels=14, use_v2=True, **SWIN)
    return {k: v for k, v in net.state_dict().items() if k.startswith(SWIN_ENCODER)}


def genesis_state(seed, width=2):
    torch.manual_seed(seed)
    return YNet3D(n_class=1, cls_classes=4, width=width).state_dict()


def save(obj, path):
    torch.save(obj, path)
    return str(path)


def loaded(network, key):
    return network.state_dict()[key]


def test_genesis_pretrain_checkpoint(tmp_path):
    state = genesis_state(1)
    path = save({"epoch": 3, "state_dict": state, "optimizer_state_dict": {}, "num_epoch_no_improvement": 0,
                 "best_loss": 0.5, "best_acc": 0.1}, tmp_path / "semantic_genesis_chest_ct.pt")
    enc = parse_encoder(f"sg={path}")
    assert (enc.arch, enc.config) == ("unet3d", {"width": 2})
    net = build_network("unet3d", enc.config, 1)
    report = key_report(net, enc)
    assert report == {"matched": 106, "total": 106, "encoder_matched": 56, "encoder_total": 56,
                      "unexpected": 9, "dropped": 0}  # the self-classification head (clc_out) has no place
    assert torch.equal(loaded(net, "down_tr64.ops.0.conv1.weight"), state["down_tr64.ops.0.conv1.weight"])
    # a 14-class U-Net (BTCV) keeps everything but the final 1x1x1 conv
    assert key_report(build_network("unet3d", enc.config, 14), enc)["matched"] == 104


def test_released_genesis_layout_needs_trust(tmp_path):
    state = {"module." + k: v for k, v in genesis_state(2).items() if not k.startswith("clc_out")}
    path = save({"state_dict": state, "best_loss": np.float64(0.1)}, tmp_path / "Genesis_Chest_CT.pt")
    with pytest.raises(WeightLoadError):
        parse_encoder(f"mg={path}:unet3d")
    trust_checkpoints(True)
    try:
        enc = parse_encoder(f"mg={path}:unet3d")
        assert key_report(build_network("unet3d", enc.config, 1), enc)["matched"] == 106
    finally:
        trust_checkpoints(False)


def test_voco_v1_reads_the_teacher(tmp_path):
    student, teacher = swin_encoder_state(1), swin_encoder_state(2)
    state = {**{f"student.{k}": v for k, v in student.items()}, **{f"teacher.{k}": v for k, v in teacher.items()},
             "student.proj_head.0.weight": torch.zeros(3, 3), "teacher.proj_head.0.weight": torch.zeros(3, 3)}
    path = save({"global_step": 5, "state_dict": state, "args": {"roi_x": 64}}, tmp_path / "model_final_epoch.pt")
    enc = parse_encoder(f"voco={path}")
    assert (enc.arch, enc.config) == ("swinunetr", SWIN)
    net = build_network("swinunetr", enc.config, 14)
    report = key_report(net, enc)
    assert (report["matched"], report["total"], report["encoder_matched"]) == (145, 167, 145)
    key = "swinViT.patch_embed.proj.weight"
    assert torch.equal(loaded(net, key), teacher[key]) and not torch.equal(loaded(net, key), student[key])


def test_voco_10k_bare_keys_with_legacy_names(tmp_path):
    state = {k.replace("swinViT", "swin_vit"): v for k, v in swin_encoder_state(3).items()}
    enc = parse_encoder(f"voco10k={save(state, tmp_path / 'VoCo_10k.pt')}:swinunetr")
    assert key_report(build_network("swinunetr", enc.config, 14), enc)["encoder_matched"] == 145


def test_voco_v2_ssl_head(tmp_path):
    backbone = swin_encoder_state(4)
    state = {**{f"module.backbone.{k}": v for k, v in backbone.items()},
             "module.student.mlp.0.weight": torch.zeros(4, 4), "module.teacher.mlp.0.weight": torch.zeros(4, 4)}
    enc = parse_encoder(f"v2={save({'global_step': 9, 'state_dict': state}, tmp_path / 'VoCo_B_SSL_head.pt')}")
    net = build_network("swinunetr", enc.config, 14)
    report = key_report(net, enc)
    assert (report["matched"], report["unexpected"]) == (145, 2)
    key = "encoder10.layer.conv1.conv.weight"
    assert torch.equal(loaded(net, key), backbone[key])


def test_an_encoder_that_does_not_fit_is_refused(tmp_path):
    path = save({"state_dict": genesis_state(5, width=4)}, tmp_path / "w4.pt")
    enc = parse_encoder(f"sg={path}")
    enc.config = {"width": 2}  # a network of another width: no encoder tensor fits
    with pytest.raises(WeightLoadError, match="encoder tensors"):
        load_encoder(build_network("unet3d", enc.config, 1), enc)
    with pytest.raises(ValueError, match="not swinunetr"):
        parse_encoder(f"sg={path}:swinunetr")
    assert random_arm("unet3d", {"width": 4}).name == "random_unet3d_w4"


def test_release_folder(tmp_path):
    """A release folder (semantic_genesis/export.py's) is read through shared.release, sha256 checked."""
    from semantic_genesis.export import CARD  # the test builds a real release; eval3d itself imports no method
    from shared.genesis.release import make_release
    from shared.release import write_release

    state = genesis_state(6)
    path = save({"epoch": 1, "state_dict": state, "best_loss": 0.5}, tmp_path / "sg.pt")
    release, _ = make_release(path, CARD, "semantic_genesis")
    write_release(release, tmp_path / "release")
    enc = parse_encoder(f"sg={tmp_path / 'release'}")
    net = build_network("unet3d", enc.config, 1)
    assert key_report(net, enc)["matched"] == 106
    assert torch.equal(loaded(net, "down_tr512.ops.1.conv1.weight"), state["down_tr512.ops.1.conv1.weight"])
