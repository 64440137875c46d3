"""Release folders (shared/release.py): written atomically, sha256-checked, code-free to load, a valid model card,
and the three one-line loads (Hub mixin, torch.hub, the library class with strict=True)."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from shared import release
from shared.release import CardInfo, PretrainedBackbone, Release, ReleaseError, from_pretrained, read_run, write_release
from shared.unet3d import UNet3D
from shared.weights import strip_prefix

REPO = Path(__file__).resolve().parents[2]
SPEC = {"class": "shared.unet3d.UNet3D", "kwargs": {"width": 2}}


def _card(run=None, **over):
    fields = dict(method="Tiny", paper="A tiny paper (2026)", paper_url="https://example.org/paper",
                  license="apache-2.0", datasets=["LUNA16"], tags=["ct"], training_data="cubes",
                  intended_use="tests", limits="none known", run=run or release.RunInfo())
    return CardInfo(**{**fields, **over})


@pytest.fixture()
def tiny(tmp_path):
    torch.manual_seed(0)
    net = UNet3D(width=2)
    state = net.state_dict()
    out = write_release(Release(models={release.MODEL_FILE: (state, SPEC)},
                                ssl_state={**state, "head.weight": torch.ones(3, 2)},
                                config={"method": "semantic_genesis", "architecture": "UNet3D", "in_channels": 1},
                                card=_card()), tmp_path / "rel")
    return net.eval(), out


def test_folder_layout_hashes_and_no_temporary_files(tiny):
    net, out = tiny
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                     "ssl_state.safetensors"]
    config = json.loads((out / "config.json").read_text())
    for name in ("model.safetensors", "ssl_state.safetensors"):
        assert config["files"][name]["sha256"] == release.sha256_file(out / name)
    assert config["models"]["model.safetensors"]["class"] == "shared.unet3d.UNet3D"
    assert set(load_file(out / "ssl_state.safetensors")) == set(net.state_dict()) | {"head.weight"}
    assert oct((out / "model.safetensors").stat().st_mode & 0o044) == oct(0o044)  # readable by others (mkstemp: 0600)


def test_three_one_line_loads_give_the_same_outputs(tiny):
    net, out = tiny
    x = torch.rand(2, 1, 16, 16, 8)
    via_hub_mixin = PretrainedBackbone.from_pretrained(out)
    via_torch_hub = torch.hub.load(str(REPO), "semantic_genesis_backbone", source="local", weights=str(out))
    direct = UNet3D(width=2)
    direct.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    assert type(via_hub_mixin) is UNet3D and not via_hub_mixin.training
    with torch.no_grad():
        ref = net(x)
        for model in (via_hub_mixin, via_torch_hub, direct.eval()):
            torch.testing.assert_close(model(x), ref, atol=1e-6, rtol=0)


def test_torch_hub_refuses_another_methods_release_and_builds_untrained(tiny):
    _, out = tiny
    with pytest.raises(ReleaseError, match="semantic_genesis release, not transvw"):
        torch.hub.load(str(REPO), "transvw_backbone", source="local", weights=str(out))
    untrained = torch.hub.load(str(REPO), "semantic_genesis_backbone", source="local")
    assert isinstance(untrained, UNet3D) and untrained.state_dict()["down_tr64.ops.0.conv1.weight"].shape[0] == 32


def test_altered_file_fails_its_sha256_naming_it(tiny):
    _, out = tiny
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match=r"model\.safetensors: sha256 .* does not match"):
        from_pretrained(out)
    assert release.read_ssl_state(out)  # the other file is still good
    (out / "ssl_state.safetensors").unlink()
    with pytest.raises(ReleaseError, match="ssl_state.safetensors: missing"):
        release.read_ssl_state(out)


def test_loading_never_unpickles_and_never_imports_a_named_class(tiny, tmp_path):
    _, out = tiny
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    # a pickle in place of the weights, with a matching hash: still refused, nothing runs
    (out / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    config = json.loads((out / "config.json").read_text())
    config["files"]["model.safetensors"]["sha256"] = release.sha256_file(out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ReleaseError, match="not a readable safetensors file"):
        from_pretrained(out)
    assert not marker.exists()
    config["models"]["model.safetensors"]["class"] = "os.system"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ReleaseError, match="'os.system' is not one of"):
        from_pretrained(out)


def test_wrong_architecture_and_missing_config_are_clear_errors(tiny, tmp_path):
    _, out = tiny
    config = json.loads((out / "config.json").read_text())
    config["models"]["model.safetensors"]["kwargs"]["width"] = 4
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ReleaseError, match="model.safetensors: does not fit UNet3D"):
        from_pretrained(out)
    with pytest.raises(ReleaseError, match="config.json: not found"):
        from_pretrained(tmp_path)


def test_rewriting_a_folder_drops_the_earlier_releases_files(tiny):
    net, out = tiny
    (out / "unet.safetensors").write_bytes(b"old")
    config = json.loads((out / "config.json").read_text())
    config["files"]["unet.safetensors"] = {"sha256": "0"}
    (out / "config.json").write_text(json.dumps(config))
    (out / "notes.txt").write_text("the user's")
    write_release(Release(models={release.MODEL_FILE: (net.state_dict(), SPEC)}, ssl_state=net.state_dict(),
                          config={"method": "semantic_genesis"}, card=_card()), out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "notes.txt",
                                                     "ssl_state.safetensors"]


def test_an_interrupted_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.safetensors"
    release.save_safetensors_atomic({"a": torch.zeros(2)}, path)

    def crash(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        release.replace_atomic(path, crash)
    assert torch.equal(load_file(path)["a"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_model_card_is_valid_and_filled_from_the_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"lr": 0.1, "git_commit": "abc123"}))
    (run_dir / "metrics.csv").write_text("step,loss,step_s,probe_knn_auroc\n0,1.0,0.5,\n10,0.5,0.25,0.7\n"
                                         "20,0.4,0.25,0.8\n")
    (run_dir / "provenance.txt").write_text("data/a.nii.gz\ndata/b.nii.gz\n")
    (run_dir / "ckpt.pt.probe.json").write_text(json.dumps({"linear_auroc": 0.75, "checkpoint": "ckpt.pt"}))
    run = read_run(run_dir / "ckpt.pt")
    assert run.steps == 20 and run.wall_time_s == pytest.approx(0.5 + 10 * 0.25 + 10 * 0.25)
    assert run.commit == "abc123" and run.provenance == ["data/a.nii.gz", "data/b.nii.gz"]
    assert run.scores["ckpt.pt.probe.json"] == {"linear_auroc": 0.75}
    net = UNet3D(width=2)
    out = write_release(Release(models={release.MODEL_FILE: (net.state_dict(), SPEC)}, ssl_state=net.state_dict(),
                                config={"method": "transvw", "architecture": "UNet3D", "in_channels": 1,
                                        "input": {"intensity": "HU [-1000, 1000] -> [0, 1]"}},
                                card=_card(run, base_model="org/base")), tmp_path / "rel")
    assert (out / "provenance.txt").read_text() == "data/a.nii.gz\ndata/b.nii.gz\n"
    config = json.loads((out / "config.json").read_text())
    assert config["files"]["provenance.txt"]["sha256"] == release.sha256_file(out / "provenance.txt")
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "ssl-medical"
    assert card.data.datasets == ["LUNA16"] and card.data.base_model == "org/base"
    assert {"ct", "medical-imaging", "self-supervised"} <= set(card.data.tags)
    for text in ("A tiny paper (2026)", "`data/a.nii.gz`", "steps: 20", "wall time: 5.5 s", "`abc123`",
                 "probe_knn_auroc | 0.8", "linear_auroc | 0.75", '"transvw_backbone"', "HU [-1000, 1000]",
                 release.sha256_file(out / "model.safetensors")):
        assert text in card.text, text


def test_run_without_records_says_so(tmp_path):
    run = read_run(tmp_path / "ckpt.pt")
    assert run.steps is None and run.provenance == [] and run.scores == {}
    net = UNet3D(width=2)
    out = write_release(Release(models={release.MODEL_FILE: (net.state_dict(), SPEC)}, ssl_state=net.state_dict(),
                                config={"method": "transvw"}, card=_card(run)), tmp_path / "rel")
    text = (out / "README.md").read_text()
    assert "did not record the list of files" in text and "No probe or evaluation scores" in text


def test_strip_prefix_is_the_one_module_helper():
    assert strip_prefix({"module.a": 1, "b": 2, "x.module.c": 3}) == {"a": 1, "b": 2, "x.module.c": 3}
    assert strip_prefix({"backbone.a": 1}, "backbone.") == {"a": 1}


@pytest.mark.parametrize("method", ["semantic_genesis", "transvw", "dira", "voco", "lovt"])
def test_every_export_names_a_bad_checkpoint(method, tmp_path):
    import importlib
    export = importlib.import_module(f"{method}.export")
    torch.save({"state_dict": UNet3D(width=2).state_dict()}, tmp_path / "ckpt.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "ckpt.pt").read_bytes()[:300])
    for name, what in (("truncated.pt", "not a readable checkpoint"), ("absent.pt", "not found")):
        with pytest.raises(SystemExit, match=f"{name}.*{what}|{what}.*{name}"):
            export.main([str(tmp_path / name), "--out", str(tmp_path / "rel")])
    assert not (tmp_path / "rel").exists()
