import argparse
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from shared.unet3d import UNet3D, YNet3D
from shared.weights import LoadReport, WeightLoadError, extract_state_dict, load_pretrained, read_checkpoint


def _unet(seed, width=4):
    torch.manual_seed(seed)
    return UNet3D(width=width)


def _assert_same_weights(a, b, keys=None):
    sa, sb = a.state_dict(), b.state_dict()
    for k in keys or sa:
        assert torch.equal(sa[k], sb[k]), k


def test_raw_state_dict_loads_every_tensor():
    src, dst = _unet(0), _unet(1)
    report = load_pretrained(dst, src.state_dict(), verbose=False)
    assert isinstance(report, LoadReport)
    assert report.fraction == 1.0 and not report.missing and not report.unexpected
    _assert_same_weights(src, dst)


def test_released_semantic_genesis_layout_needs_trusted_for_its_numpy_scalars(tmp_path):
    """DataParallel prefixes, projection/prototype heads, numpy.float64 entries: the released files."""
    src = YNet3D(width=4, cls_classes=5)
    sd = OrderedDict(("module." + k, v) for k, v in src.state_dict().items())
    sd["module.projection_head.0.weight"] = torch.zeros(3, 3)
    sd["module.prototypes.weight"] = torch.zeros(3, 3)
    path = tmp_path / "semantic_genesis_chest_ct.pt"
    torch.save({"epoch": 3, "state_dict": sd, "optimizer_state_dict": {}, "num_epoch_no_improvement": 0,
                "best_loss": np.float64(0.25), "best_acc": np.float64(0.5)}, path)
    dst = _unet(7)
    with pytest.raises(WeightLoadError, match="trusted=True"):
        load_pretrained(dst, path, verbose=False)
    report = load_pretrained(dst, path, min_matched=1.0, trusted=True, verbose=False)
    assert report.fraction == 1.0
    assert sorted(report.dropped) == ["module.projection_head.0.weight", "module.prototypes.weight"]
    assert all(k.startswith("module.clc_out.") for k in report.unexpected)
    _assert_same_weights(src, dst, list(dst.state_dict()))


def test_misspelt_classification_wrapper_and_models_genesis_layout():
    src = _unet(0)
    sd = {"module.classficationNet." + k: v for k, v in src.state_dict().items()}
    dst = _unet(1)
    assert load_pretrained(dst, {"state_dict": sd}, verbose=False).fraction == 1.0
    _assert_same_weights(src, dst)


def test_wrappers_and_branch_select_student_or_teacher():
    student, teacher = _unet(0), _unet(1)
    flat = {**{"student." + k: v for k, v in student.state_dict().items()},
            **{"teacher." + k: v for k, v in teacher.state_dict().items()}}
    for branch, expected in (("student", student), ("teacher", teacher)):
        dst = _unet(5)
        load_pretrained(dst, {"state_dict": flat}, branch=branch, verbose=False)
        _assert_same_weights(expected, dst)
    # without a branch, both map onto the same keys: refuse rather than pick one silently
    with pytest.raises(WeightLoadError, match="two checkpoint keys"):
        load_pretrained(_unet(5), flat, verbose=False)
    # a wrapper entry: {"student": state_dict, "teacher": state_dict}
    dst = _unet(5)
    load_pretrained(dst, {"student": student.state_dict(), "teacher": teacher.state_dict()},
                    wrapper="teacher", verbose=False)
    _assert_same_weights(teacher, dst)


def test_swin_vit_rename_and_backbone_prefix():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.swinViT = torch.nn.Linear(3, 4)
            self.encoder1 = torch.nn.Linear(4, 4)

    src = Tiny()
    sd = {"module.backbone.swin_vit.weight": src.swinViT.weight, "module.backbone.swin_vit.bias": src.swinViT.bias,
          "module.backbone.encoder1.weight": src.encoder1.weight, "module.backbone.encoder1.bias": src.encoder1.bias}
    dst = Tiny()
    assert load_pretrained(dst, {"model": sd}, verbose=False).fraction == 1.0
    _assert_same_weights(src, dst)


def test_keys_the_model_has_are_not_stripped_and_encoder_prefix_is_stripped_for_resnet():
    """smp-style keys 'encoder.conv1.weight' load into a torchvision ResNet; queues and fc are dropped."""
    src = torchvision.models.resnet18(weights=None)
    sd = {"module.encoder_q.encoder." + k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    sd["module.queue"] = torch.zeros(128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    sd["module.encoder_q.encoder.fc.weight"] = torch.zeros(1000, 512)
    dst = torchvision.models.resnet18(weights=None)
    report = load_pretrained(dst, sd, verbose=False)
    assert report.missing == ["fc.weight", "fc.bias"]
    assert set(report.dropped) == {"module.queue", "module.queue_ptr", "module.encoder_q.encoder.fc.weight"}
    _assert_same_weights(src, dst, [k for k in dst.state_dict() if not k.startswith("fc.")])

    class WithEncoder(torch.nn.Module):  # a model whose own keys start with 'encoder.'
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(2, 2)

    a, b = WithEncoder(), WithEncoder()
    assert load_pretrained(b, a.state_dict(), verbose=False).fraction == 1.0
    _assert_same_weights(a, b)


def test_wrong_shapes_are_never_loaded_and_too_few_matches_raise():
    src, dst = _unet(0, width=8), _unet(1, width=4)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightLoadError, match="too few tensors matched"):
        load_pretrained(dst, src.state_dict(), verbose=False)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed although loading failed"
    with pytest.raises(WeightLoadError):
        load_pretrained(dst, {"unrelated.weight": torch.zeros(2)}, min_matched=0.0, verbose=False)
    # at another width only the shape-independent tensors match: the output bias and the BN counters
    report = load_pretrained(dst, src.state_dict(), min_matched=0.0, verbose=False)
    assert set(report.matched) == {"out_tr.final_conv.bias"} | {
        k for k in dst.state_dict() if k.endswith("num_batches_tracked")}
    skipped = {k for k, _, _ in report.skipped_shape}
    assert "down_tr64.ops.0.conv1.weight" in skipped and not skipped & set(report.matched)
    assert torch.equal(dst.state_dict()["down_tr64.ops.0.conv1.weight"], before["down_tr64.ops.0.conv1.weight"])
    assert "skipped by shape" in str(report)


def test_safetensors_and_report_text(tmp_path):
    src, dst = _unet(0), _unet(1)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    report = load_pretrained(dst, path, verbose=False)
    assert report.fraction == 1.0 and "106/106" in str(report) and str(path) in str(report)
    _assert_same_weights(src, dst)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_by_default(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _unet(0).state_dict(), "payload": evil}, path)
    with pytest.raises(WeightLoadError, match="trusted=True"):
        load_pretrained(_unet(1), path, verbose=False)
    assert not marker.exists()
    with pytest.raises(WeightLoadError):
        read_checkpoint(path)
    assert not marker.exists()


def test_trusted_opt_in_reads_pickled_objects(tmp_path):
    path = tmp_path / "old.pt"
    # old training scripts pickled their argparse.Namespace next to the weights
    torch.save({"state_dict": _unet(0).state_dict(), "args": argparse.Namespace(lr=0.03)}, path)
    with pytest.raises(WeightLoadError):
        read_checkpoint(path)
    assert read_checkpoint(path, trusted=True)["args"].lr == 0.03
    assert load_pretrained(_unet(1), path, trusted=True, verbose=False).fraction == 1.0


def test_missing_file_and_empty_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_pretrained(_unet(0), tmp_path / "nowhere.pt")
    with pytest.raises(WeightLoadError, match="no state dict"):
        extract_state_dict({"epoch": 3})
    with pytest.raises(WeightLoadError, match="no 'teacher' entry"):
        extract_state_dict({"student": {}}, wrapper="teacher")
