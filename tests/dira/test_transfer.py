"""The converters: every encoder (and decoder) tensor of any DiRA checkpoint lands where it belongs."""

import pytest
import torch

from dira import transfer
from dira.models import DiRABarlowTwins, DiRAMoCo, DiRASimSiam


@pytest.fixture(scope="module")
def dira_files(tmp_path_factory):
    """A tiny generator with non-default weights, saved in the original formats."""
    torch.manual_seed(0)
    model = DiRAMoCo("dira", "resnet18", 16, 8, mlp=True)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t))
    out = tmp_path_factory.mktemp("dira_transfer")
    full = {"epoch": 3, "arch": "resnet18", "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
            "optimizer": {}, "best_loss": torch.tensor(1.0)}
    torch.save(full, out / "checkpoint.pth")
    torch.save(model.encoder_q.backbone.state_dict(), out / "best_checkpoint.pth")
    di = DiRAMoCo("di", "resnet18", 16, 8, mlp=True)
    torch.save({"state_dict": {"module." + k: v for k, v in di.state_dict().items()}}, out / "di_checkpoint.pth")
    torch.save(di.encoder_q.state_dict(), out / "di_best.pth")
    return model, di, out


@pytest.mark.parametrize("name", ["checkpoint.pth", "best_checkpoint.pth"])
def test_resnet_gets_every_encoder_tensor(dira_files, name):
    model, _, out = dira_files
    resnet = transfer.build_resnet("resnet18", num_classes=3)
    fc_before = resnet.fc.weight.clone()
    report = transfer.load_into_resnet(resnet, out / name, verbose=False)
    encoder = model.encoder_q.backbone.encoder.state_dict()
    assert report.fraction == 1.0 and len(report.matched) == len(encoder)
    for k, v in resnet.state_dict().items():
        if k.startswith("fc."):
            continue
        assert torch.equal(v, encoder[k]), k
    assert torch.equal(resnet.fc.weight, fc_before)


@pytest.mark.parametrize("name", ["checkpoint.pth", "best_checkpoint.pth"])
def test_unet_gets_encoder_and_decoder(dira_files, name):
    model, _, out = dira_files
    unet = transfer.build_unet("resnet18")
    head_before = unet.segmentation_head[0].weight.clone()
    report = transfer.load_into_unet(unet, out / name, verbose=False)
    src = model.encoder_q.backbone.state_dict()
    assert report.fraction == 1.0 and len(report.matched) == len(src) - 2
    for k, v in unet.state_dict().items():
        if k == "segmentation_head.0.weight":
            assert torch.equal(v, head_before)  # a new head for the new task, as the README recipe
        if k.startswith("segmentation_head."):
            continue
        assert torch.equal(v, src[k]), k
    unet2 = transfer.build_unet("resnet18")
    transfer.load_into_unet(unet2, out / name, keep_head=True, verbose=False)
    assert torch.equal(unet2.segmentation_head[0].weight, src["segmentation_head.0.weight"])


@pytest.mark.parametrize("name", ["di_checkpoint.pth", "di_best.pth"])
def test_mode_di_files(dira_files, name):
    _, di, out = dira_files
    resnet = transfer.build_resnet("resnet18")
    report = transfer.load_into_resnet(resnet, out / name, verbose=False)
    assert report.fraction == 1.0
    assert torch.equal(resnet.conv1.weight, di.encoder_q.conv1.weight)


@pytest.mark.parametrize("method", ["barlowtwins", "simsiam"])
def test_other_methods_checkpoints(tmp_path, method):
    """--method barlowtwins / simsiam checkpoints (online network as encoder_q, projector, predictor) convert too."""
    torch.manual_seed(0)
    model = (DiRABarlowTwins("resnet18", projector="64-64") if method == "barlowtwins"
             else DiRASimSiam("resnet18", dim=64, pred_dim=16))
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in model.state_dict().items()}},
               tmp_path / "checkpoint.pth")
    src = model.encoder_q.backbone.state_dict()
    resnet = transfer.build_resnet("resnet18")
    report = transfer.load_into_resnet(resnet, tmp_path / "checkpoint.pth", verbose=False)
    assert report.fraction == 1.0
    assert torch.equal(resnet.layer4[1].conv2.weight, src["encoder.layer4.1.conv2.weight"])
    unet = transfer.build_unet("resnet18")
    report = transfer.load_into_unet(unet, tmp_path / "checkpoint.pth", verbose=False)
    assert report.fraction == 1.0 and len(report.matched) == len(src) - 2
    assert torch.equal(unet.state_dict()["decoder.blocks.0.conv1.0.weight"], src["decoder.blocks.0.conv1.0.weight"])


def test_key_encoder_is_never_taken(dira_files):
    model, _, out = dira_files
    state = transfer.to_resnet_state_dict(out / "checkpoint.pth")
    assert torch.equal(state["conv1.weight"], model.encoder_q.backbone.encoder.conv1.weight)
    assert not torch.equal(state["conv1.weight"], model.encoder_k.backbone.encoder.conv1.weight)


def test_cli_writes_loadable_state_dict(dira_files, tmp_path, capsys):
    model, _, out = dira_files
    transfer.main([str(out / "checkpoint.pth"), "--to", "resnet", "-a", "resnet18", "--out", str(tmp_path / "r.pth")])
    assert "matched 120/120 tensors" in capsys.readouterr().out
    sd = torch.load(tmp_path / "r.pth", weights_only=True)
    assert not any(k.startswith("fc.") for k in sd)
    assert torch.equal(sd["layer4.1.bn2.running_var"], model.encoder_q.backbone.encoder.layer4[1].bn2.running_var)
    transfer.main([str(out / "checkpoint.pth"), "--to", "unet", "-a", "resnet18", "--out", str(tmp_path / "u.pth")])
    assert len(torch.load(tmp_path / "u.pth", weights_only=True)) == len(model.encoder_q.backbone.state_dict()) - 2


def test_wrong_file_is_a_clear_error(tmp_path):
    torch.save({"state_dict": {"something.else": torch.zeros(3)}}, tmp_path / "x.pth")
    with pytest.raises(SystemExit, match="x.pth"):
        transfer.main([str(tmp_path / "x.pth"), "--to", "resnet", "-a", "resnet18", "--out", str(tmp_path / "o.pth")])
