"""lovt/export.py: a LoVT pre-training, then the release folder, loaded in one line each way with the scan
encoder's outputs; the original's checkpoint layout converts with --trusted; the earlier single file stays."""

import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from huggingface_hub import ModelCard
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file

import lovt.train as train
from lovt import export
from lovt.synthetic import SyntheticImageTextDataset, build_tiny_language_model, tiny_overrides
from shared.release import PretrainedBackbone, read_ssl_state

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lovt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lovt_release")
    tiny_bert = build_tiny_language_model(root / "tiny_bert")
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=[
            "+experiment=LoVT_100", "name=release", "export_run=false", "attention_plots=0",
            "pretrain_model.max_epochs=1"] + tiny_overrides(tiny_bert, arch="resnet18"))
    data = {"train": SyntheticImageTextDataset(8, seed=0), "validation": SyntheticImageTextDataset(4, seed=1)}
    result = train.run_training(cfg, root / "run", datasets=data)
    checkpoint = next((root / "run" / "checkpoints").glob("pretrain-epoch*.ckpt"))
    out = export.main([str(checkpoint), "--out", str(root / "release")])
    return result["module"].eval(), checkpoint, out


def _scan_features(module, x):
    conv5 = module.model.model_a.encoder.feature_extractor(x)["conv5"]
    return conv5.mean(dim=(2, 3))


def test_three_loads_match_the_scan_encoder(lovt_run):
    module, _, out = lovt_run
    x = torch.rand(2, 3, 64, 64)
    weights = load_file(out / "model.safetensors")
    via_timm = timm.create_model("resnet18", num_classes=0)
    via_timm.load_state_dict(weights, strict=True)
    via_torchvision = torchvision.models.resnet18()
    via_torchvision.fc = torch.nn.Identity()
    via_torchvision.load_state_dict(weights, strict=True)
    loaded = [PretrainedBackbone.from_pretrained(out),
              torch.hub.load(str(REPO), "lovt_backbone", source="local", weights=str(out)),
              via_timm.eval(), via_torchvision.eval()]
    with torch.no_grad():
        ref = _scan_features(module, x)
        for net in loaded:
            torch.testing.assert_close(net(x), ref, atol=1e-6, rtol=0)


def test_ssl_state_is_the_whole_module_and_the_card_is_filled(lovt_run):
    module, checkpoint, out = lovt_run
    state = read_ssl_state(out)
    assert set(state) == set(module.state_dict())
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["layout"] == f"ours: {checkpoint.name}"
    assert config["source"]["reports"]["model.safetensors"]["matched"] == 120
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "other" and card.data.datasets == ["MIMIC-CXR-JPG"]
    assert card.data.base_model is None  # the tiny run started from random weights, not ImageNet
    assert "val/total_loss" in card.text and "run folder: `run`" in card.text


def test_original_layout_needs_trust_and_old_cli_still_writes_backbone_weights(lovt_run, tmp_path):
    module, checkpoint, _ = lovt_run
    original = {k[len("model."):]: v for k, v in torch.load(checkpoint, weights_only=True)["state_dict"].items()}
    hparams = OmegaConf.create({"config": {"encoder_a": {"backbone_pretrained": True}}})
    torch.save({"state_dict": original, "epoch": 7, "hyper_parameters": hparams}, tmp_path / "pretrain-epoch0007.ckpt")
    with pytest.raises(SystemExit, match="--trusted"):
        export.main([str(tmp_path / "pretrain-epoch0007.ckpt"), "--out", str(tmp_path / "rel")])
    out = export.main([str(tmp_path / "pretrain-epoch0007.ckpt"), "--trusted", "--out", str(tmp_path / "rel")])
    assert json.loads((out / "config.json").read_text())["source"]["layout"] == "original: pretrain-epoch0007.ckpt"
    assert ModelCard.load(out / "README.md").data.base_model == "timm/resnet50.tv_in1k"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(PretrainedBackbone.from_pretrained(out)(x), _scan_features(module, x),
                                   atol=1e-6, rtol=0)
    export.main([str(tmp_path / "pretrain-epoch0007.ckpt"), "--trusted"])  # no --out: the earlier file
    assert len(torch.load(tmp_path / "backbone_weights.pt", weights_only=True)) == 120
