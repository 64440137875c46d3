"""voco/export.py: VoCo checkpoints of every layout as release folders, loaded in one line each way."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from monai.networks.nets import SwinUNETR
from safetensors.torch import load_file

from shared.release import PretrainedBackbone, read_ssl_state
from voco.export import main as export_main
from voco.models import VoCo

REPO = Path(__file__).resolve().parents[2]
TINY = dict(feature_size=12, hidden_dim=16, out_dim=16, window_size=2)
LIBRARY = dict(in_channels=1, out_channels=14, feature_size=12, use_v2=True, window_size=2)


def pooled_features(net, x):
    """VoCo's pooled multi-scale features (Swin.forward_encs) computed from any module with SwinUNETR's parts."""
    hs = net.swinViT(x, net.normalize)
    maps = [net.encoder1(x), net.encoder2(hs[0]), net.encoder3(hs[1]), net.encoder4(hs[2]), net.encoder10(hs[4])]
    return torch.cat([m.mean(dim=(2, 3, 4)) for m in maps], dim=1)


@pytest.fixture(scope="module")
def voco_run(tmp_path_factory):
    torch.manual_seed(0)
    model = VoCo(**TINY).eval()
    run = tmp_path_factory.mktemp("voco_run")
    (run / "btcv.json").write_text(json.dumps({"training": [{"image": "imagesTr/img0001.nii.gz"},
                                                            {"image": "imagesTr/img0002.nii.gz"}]}))
    args = {"feature_size": 12, "roi_x": 32, "a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0,
            "json_list": [str(run / "btcv.json")], "data_dir": None}
    torch.save({"global_step": 7, "epoch": 1, "state_dict": model.state_dict(), "optimizer": {}, "args": args},
               run / "model_final_epoch.pt")
    out = export_main([str(run / "model_final_epoch.pt"), "--out", str(run / "release")])
    return model, run, out


def test_three_loads_match_the_teacher_encoder(voco_run):
    model, _, out = voco_run
    x = torch.rand(1, 1, 64, 32, 32)
    direct = SwinUNETR(**LIBRARY)
    direct.load_state_dict({**direct.state_dict(), **load_file(out / "model.safetensors")}, strict=True)
    loaded = [PretrainedBackbone.from_pretrained(out),
              torch.hub.load(str(REPO), "voco_backbone", source="local", weights=str(out)), direct.eval()]
    with torch.no_grad():
        ref = model.teacher.forward_encs(x)
        for net in loaded:
            assert isinstance(net, SwinUNETR)
            torch.testing.assert_close(pooled_features(net, x), ref, atol=1e-6, rtol=0)


def test_release_holds_the_whole_ssl_state_and_what_it_left_out(voco_run):
    model, _, out = voco_run
    fresh = VoCo(**TINY)
    fresh.load_state_dict(read_ssl_state(out), strict=True)  # student, teacher, heads: pre-training continues
    assert torch.equal(fresh.student.proj_head.layer1[0].weight, model.student.proj_head.layer1[0].weight)
    config = json.loads((out / "config.json").read_text())
    spec = config["models"]["model.safetensors"]
    assert spec["kwargs"] == LIBRARY
    assert spec["keys_not_in_file"] and all(k.startswith(("decoder", "out.")) for k in spec["keys_not_in_file"])
    assert config["source"]["reports"]["model.safetensors"]["matched"] == 145
    assert config["ssl_state"]["global_step"] == 7 and "HU clipped to [-175.0, 250.0]" in config["input"]["intensity"]
    card = (out / "README.md").read_text()
    assert "`btcv.json: imagesTr/img0002.nii.gz`" in card and "steps: 7" in card


def test_student_branch_and_old_pt_output(voco_run, tmp_path):
    model, run, _ = voco_run
    out = export_main([str(run / "model_final_epoch.pt"), "--branch", "student", "--out", str(tmp_path / "rel")])
    x = torch.rand(1, 1, 64, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pooled_features(PretrainedBackbone.from_pretrained(out), x),
                                   model.student.forward_encs(x), atol=1e-6, rtol=0)
    export_main([str(run / "model_final_epoch.pt"), "--out", str(tmp_path / "enc.pt")])  # the earlier behaviour
    assert len(torch.load(tmp_path / "enc.pt", weights_only=True)) == 145


def test_released_10k_layout_holds_the_backbone_only(voco_run, tmp_path):
    model, _, _ = voco_run
    encoder = {("module." + k).replace("swinViT", "swin_vit"): v for k, v in model.teacher.state_dict().items()
               if not k.startswith("proj_head")}
    torch.save(encoder, tmp_path / "VoCo_10k.pt")
    out = export_main([str(tmp_path / "VoCo_10k.pt"), "--out", str(tmp_path / "rel")])
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["layout"].startswith("released backbone")
    assert len(read_ssl_state(out)) == 145
    x = torch.rand(1, 1, 64, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pooled_features(PretrainedBackbone.from_pretrained(out), x),
                                   model.teacher.forward_encs(x), atol=1e-6, rtol=0)


def test_v2_ssl_head_layout(voco_run, tmp_path):
    """Large-Scale-Medical's SSL_head files: one shared `backbone.*` encoder and student/teacher projection heads."""
    model, _, _ = voco_run
    heads = {f"{b}.layer{i}.0.weight": torch.rand(8, 8) for b in ("student", "teacher") for i in (1, 2)}
    backbone = {"backbone." + k: v for k, v in model.student.state_dict().items() if not k.startswith("proj_head")}
    torch.save({"state_dict": {"module." + k: v for k, v in {**backbone, **heads}.items()}},
               tmp_path / "VoCo_B_SSL_head.pt")
    out = export_main([str(tmp_path / "VoCo_B_SSL_head.pt"), "--out", str(tmp_path / "rel")])
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["layout"].startswith("v2 SSL_head")
    assert set(read_ssl_state(out)) == set(backbone) | set(heads)
    x = torch.rand(1, 1, 64, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pooled_features(PretrainedBackbone.from_pretrained(out), x),
                                   model.student.forward_encs(x), atol=1e-6, rtol=0)


def test_original_training_checkpoint_needs_trust(voco_run, tmp_path):
    """The original pickles its optimizer object (here an argparse.Namespace stands in): refused without --trusted."""
    model, _, _ = voco_run
    torch.save({"global_step": 3, "state_dict": model.state_dict(), "optimizer": argparse.Namespace(lr=1e-4)},
               tmp_path / "model_step3.pt")
    with pytest.raises(SystemExit, match="model_step3.pt: refused .* --trusted"):
        export_main([str(tmp_path / "model_step3.pt"), "--out", str(tmp_path / "rel")])
    out = export_main([str(tmp_path / "model_step3.pt"), "--trusted", "--out", str(tmp_path / "rel")])
    layout = json.loads((out / "config.json").read_text())["source"]["layout"]
    assert layout == "original: model_step3.pt, teacher branch"
