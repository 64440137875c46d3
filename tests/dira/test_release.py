"""dira/export.py: a DiRA checkpoint as a release folder, loaded in one line each way, with the source's outputs."""

import json
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchvision
from safetensors.torch import load_file

from dira import export
from dira.models import DiRAMoCo, Discriminator
from shared.release import PretrainedBackbone, ReleaseError, read_ssl_state

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dira_release(tmp_path_factory):
    """A tiny DiRA run (resnet18) with non-default weights, saved as dira/train.py saves it, exported."""
    torch.manual_seed(0)
    model = DiRAMoCo("dira", "resnet18", 16, 8, mlp=True)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():  # small: the outputs of a deep net stay finite
                t.add_(0.05 * torch.rand_like(t))
    run = tmp_path_factory.mktemp("dira_run")
    (run / "train.txt").write_text("00000001_000.png 0 1 0 0 0 0 0 0 0 0 0 0 0 0\n00000002_000.png " + "0 " * 14 + "\n")
    torch.save({"epoch": 3, "arch": "resnet18", "mode": "dira", "method": "moco",
                "state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "optimizer": {},
                "best_loss": torch.tensor(1.0), "args": {"arch": "resnet18", "img_size": 64, "activate": "sigmoid",
                                                         "data": "images", "train_list": str(run / "train.txt")}},
               run / "checkpoint.pth")
    disc = Discriminator(1)
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in disc.state_dict().items()}},
               run / "D_checkpoint.pth")
    (run / "metrics.csv").write_text("step,loss,step_s\n0,1.0,0.1\n5,0.9,0.1\n")
    out = export.main([str(run / "checkpoint.pth"), "--out", str(run / "release")])
    return model.eval(), disc, run, out


def _pooled(model, x):
    return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(model.encoder_q.backbone.encoder(x)[-1], 1), 1)


def test_three_loads_match_the_query_encoder(dira_release):
    model, _, _, out = dira_release
    x = torch.rand(2, 3, 64, 64)
    weights = load_file(out / "model.safetensors")
    via_timm = timm.create_model("resnet18", num_classes=0)
    via_timm.load_state_dict(weights, strict=True)
    via_torchvision = torchvision.models.resnet18()
    via_torchvision.fc = torch.nn.Identity()
    via_torchvision.load_state_dict(weights, strict=True)
    loaded = [PretrainedBackbone.from_pretrained(out),
              torch.hub.load(str(REPO), "dira_backbone", source="local", weights=str(out)),
              via_timm.eval(), via_torchvision.eval()]
    with torch.no_grad():
        ref = _pooled(model, x)
        for net in loaded:
            torch.testing.assert_close(net(x), ref, atol=1e-6, rtol=0)


def test_whole_unet_loads_into_smp_and_matches(dira_release):
    model, _, _, out = dira_release
    x = torch.rand(2, 3, 64, 64)
    unet = smp.Unet("resnet18", encoder_weights=None, classes=1, activation="sigmoid")
    unet.load_state_dict(load_file(out / "unet.safetensors"), strict=True)
    hub = torch.hub.load(str(REPO), "dira_unet", source="local", weights=str(out))
    mixin = PretrainedBackbone.from_pretrained(out, file="unet.safetensors")
    with torch.no_grad():
        ref = model.encoder_q.backbone(x)
        for net in (unet.eval(), hub, mixin):
            torch.testing.assert_close(net(x), ref, atol=1e-6, rtol=0)


def test_ssl_state_continues_pre_training(dira_release):
    model, disc, _, out = dira_release
    state = read_ssl_state(out)
    fresh = DiRAMoCo("dira", "resnet18", 16, 8, mlp=True)
    fresh.load_state_dict({k: v for k, v in state.items() if not k.startswith("discriminator.")}, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    fresh_disc = Discriminator(1)
    fresh_disc.load_state_dict({k[len("discriminator."):]: v for k, v in state.items()
                                if k.startswith("discriminator.")}, strict=True)
    assert torch.equal(fresh_disc.state_dict()["model.0.weight"], disc.state_dict()["model.0.weight"])


def test_config_records_source_report_and_input(dira_release):
    _, _, run, out = dira_release
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "dira" and config["in_channels"] == 3 and config["input"]["size_px"] == 64
    assert config["source"]["layout"] == "ours: checkpoint.pth, mode dira"
    assert config["source"]["reports"]["model.safetensors"] == {"matched": 120, "of": 120, "left_as_built": []}
    assert config["models"]["unet.safetensors"]["kwargs"]["encoder_name"] == "resnet18"
    card = (out / "README.md").read_text()
    assert "steps: 5" in card and "DiRA: Discriminative, Restorative" in card
    assert "Files read (2, " in card and "`train.txt: 00000002_000.png`" in card


@pytest.mark.parametrize("layout", ["best_checkpoint.pth", "mode_di"])
def test_original_layouts_convert(dira_release, tmp_path, layout):
    model, _, _, _ = dira_release
    if layout == "best_checkpoint.pth":  # the original's U-Net file: 380 keys at resnet50, no heads
        torch.save(model.encoder_q.backbone.state_dict(), tmp_path / layout)
        src = tmp_path / layout
    else:  # mode di: torchvision ResNets as query/key encoders, MoCo queue
        di = DiRAMoCo("di", "resnet18", 16, 8, mlp=True)
        src = tmp_path / "checkpoint.pth"
        state = {"module." + k: v for k, v in di.state_dict().items()}
        torch.save({"epoch": 1, "arch": "resnet18", "state_dict": state}, src)
    out = export.main([str(src), "--out", str(tmp_path / "rel")])
    files = sorted(p.name for p in out.iterdir())
    assert ("unet.safetensors" in files) == (layout == "best_checkpoint.pth")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        net = PretrainedBackbone.from_pretrained(out)
        if layout == "best_checkpoint.pth":
            torch.testing.assert_close(net(x), _pooled(model, x), atol=1e-6, rtol=0)
        else:
            di.encoder_q.fc = torch.nn.Identity()
            torch.testing.assert_close(net(x), di.encoder_q.eval()(x), atol=1e-6, rtol=0)


def test_wrong_file_is_a_clear_error(tmp_path):
    torch.save({"state_dict": {"something.else": torch.zeros(3)}}, tmp_path / "x.pth")
    with pytest.raises(SystemExit, match="x.pth"):
        export.main([str(tmp_path / "x.pth"), "--out", str(tmp_path / "rel")])
    with pytest.raises(ReleaseError):
        PretrainedBackbone.from_pretrained(tmp_path)
