"""semantic_genesis/export.py and transvw/export.py: a pre-training run, then the release folder, loaded in one
line each way with the trained network's outputs; the originals' released layouts convert too."""

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from semantic_genesis import export as sg_export
from semantic_genesis import train as sg_train
from shared.genesis.data import write_pattern_files
from shared.release import PretrainedBackbone, read_ssl_state
from shared.unet3d import ClassificationNet3D, UNet3D, YNet3D
from transvw import export as tvw_export
from transvw import train as tvw_train

REPO = Path(__file__).resolve().parents[3]
METHODS = {"semantic_genesis": (sg_train, sg_export, "semantic_genesis_chest_ct"),
           "transvw": (tvw_train, tvw_export, "TransVW_chest_ct")}
TINY = ["--cls_classes", "3", "--nb_instances", "4", "--nb_val_instances", "2", "--nb_multires_patch", "2",
        "--batch_size", "4", "--num_workers", "0", "--width", "2", "--n_images", "1", "--nb_epoch", "2"]


@pytest.fixture(scope="module", params=sorted(METHODS))
def trained(request, tmp_path_factory):
    """Two epochs of the method's real pre-training CLI on tiny pattern files, then its export."""
    train, export, name = METHODS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    patterns = write_pattern_files(root / "patterns", cubes_per_class=4, n_classes=3, n_val_per_class=2,
                                   shape=(16, 16, 8), resolutions=2)
    train.main(["--data_dir", str(patterns), "--output_dir", str(root / "Checkpoints"), *TINY])
    checkpoint = root / "Checkpoints" / "en_de" / f"{name}.pt"
    out = export.main([str(checkpoint), "--out", str(root / "release")])
    model = YNet3D(cls_classes=3, width=2)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    return request.param, model.eval(), checkpoint, out


def test_three_loads_give_the_trained_networks_outputs(trained):
    method, model, _, out = trained
    x = torch.rand(2, 1, 16, 16, 8)
    direct = UNet3D(width=2)
    direct.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    loaded = [PretrainedBackbone.from_pretrained(out),
              torch.hub.load(str(REPO), f"{method}_backbone", source="local", weights=str(out)), direct.eval()]
    with torch.no_grad():
        ref = model(x)[0]
        for net in loaded:
            torch.testing.assert_close(net(x), ref, atol=1e-6, rtol=0)


def test_ssl_state_config_and_card(trained):
    method, model, checkpoint, out = trained
    fresh = YNet3D(cls_classes=3, width=2)
    fresh.load_state_dict(read_ssl_state(out), strict=True)  # with the self-classification head
    assert torch.equal(fresh.clc_out.fc1.weight, model.clc_out.fc1.weight)
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method and config["source"]["layout"] == f"ours: {checkpoint.name}, encoder-decoder"
    assert config["source"]["reports"]["model.safetensors"] == {"matched": 106, "of": 106, "left_as_built": []}
    assert config["models"]["model.safetensors"]["kwargs"] == {"n_class": 1, "width": 2, "always_batch_stats": True}
    card = ModelCard.load(out / "README.md")
    assert card.data.datasets == ["LUNA16"] and card.data.license == "other"
    assert "steps: 12" in card.text and "val_loss" in card.text  # from the run's metrics.csv (2 epochs of 6 steps)
    assert "train_data1_vwGen_ex_ref_fold1.0.npy" in card.text  # provenance: the pattern files of --data_dir


def test_released_layout_needs_trust_and_converts(tmp_path):
    """The released files: DataParallel `module.`, projection/prototype heads, numpy.float64 scalars."""
    torch.manual_seed(0)
    src = YNet3D(width=2, cls_classes=5).eval()
    sd = OrderedDict(("module." + k, v) for k, v in src.state_dict().items())
    sd["module.projection_head.0.weight"] = torch.zeros(3, 3)
    sd["module.prototypes.weight"] = torch.zeros(3, 3)
    path = tmp_path / "TransVW_chest_ct.pt"
    torch.save({"epoch": 3, "state_dict": sd, "optimizer_state_dict": {}, "num_epoch_no_improvement": 0,
                "best_loss": np.float64(0.25), "best_acc": np.float64(0.5)}, path)
    with pytest.raises(SystemExit, match="TransVW_chest_ct.pt: refused .*--trusted"):
        tvw_export.main([str(path), "--out", str(tmp_path / "rel")])
    out = tvw_export.main([str(path), "--trusted", "--out", str(tmp_path / "rel")])
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["layout"] == "original: TransVW_chest_ct.pt, encoder-decoder"
    assert {"prototypes.weight", "projection_head.0.weight", "clc_out.fc1.weight"} <= set(read_ssl_state(out))
    x = torch.rand(2, 1, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(PretrainedBackbone.from_pretrained(out)(x), src(x)[0], atol=1e-6, rtol=0)


def test_encoder_only_run_leaves_the_decoder_as_built(tmp_path):
    """exp 'en' (ClassificationNet3D): model.safetensors holds the encoder; the decoder keys are listed as absent."""
    src = ClassificationNet3D(cls_classes=3, width=2)
    torch.save({"epoch": 1, "state_dict": src.state_dict(), "optimizer_state_dict": {}, "num_epoch_no_improvement": 0,
                "best_loss": 0.5, "best_acc": 0.5, "run": {"method": "semantic_genesis_chest_ct", "exp": "en"}},
               tmp_path / "semantic_genesis_chest_ct.pt")
    out = sg_export.main([str(tmp_path / "semantic_genesis_chest_ct.pt"), "--out", str(tmp_path / "rel")])
    config = json.loads((out / "config.json").read_text())
    absent = config["models"]["model.safetensors"]["keys_not_in_file"]
    assert absent and all(k.startswith(("up_tr", "out_tr")) for k in absent)
    net = PretrainedBackbone.from_pretrained(out)
    assert torch.equal(net.down_tr512.ops[1].conv1.weight, src.down_tr512.ops[1].conv1.weight)
