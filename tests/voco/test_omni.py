"""`voco/train.py --recipe omni` (Large-Scale-Medical's Omni-supervised): defaults, the labelled patches,
the self-training switch, and (slow) pre-training and exact resume on the sample data's labelled cases."""

import argparse
import csv

import numpy as np
import pytest
import torch

from shared.weights import WeightLoadError
from voco import train
from voco.v2.omni import SelfTraining, VoCoOmni
from voco.v2.omni_data import LabelledSteps, build_labelled

TINY = ["--recipe", "omni", "--size", "B", "--feature_size", "12", "--window_size", "2", "--hidden_dim", "32",
        "--out_dim", "32", "--use_checkpoint", "False", "--num_crops", "2", "--sw_batch_size", "1",
        "--batch_size", "2", "--warmup_steps", "1", "--lr", "1e-3", "--eval_num", "1", "--save_every", "1",
        "--workers", "0", "--device", "cpu", "--space_x", "3", "--space_y", "3", "--space_z", "3",
        "--out_channels", "14"]


def _parse(argv):
    p = train.get_parser()
    p.set_defaults(**train.v2.recipe_defaults(argv))
    return p.parse_args(argv)


def test_omni_defaults_follow_the_original():
    """Omni-supervised/voco_train.py and dist_{B,L,H}.sh: widths, volumes x crops, checkpoints every 1000."""
    for size, f, bs, sw in (("B", 48, 4, 4), ("L", 96, 2, 4), ("H", 192, 2, 2)):
        a = _parse(["--recipe", "omni", "--size", size])
        assert (a.feature_size, a.batch_size, a.sw_batch_size, a.num_crops, a.roi_x, a.hidden_dim) == (
            f, bs, sw, 3, 64, 1024)
        assert (a.num_steps, a.eval_num, a.save_every, a.out_channels, a.self_train_step) == (
            2_000_000, 1000, 1000, 21, None)
        assert (a.RandFlipd_prob, a.RandRotate90d_prob, a.RandShiftIntensityd_prob) == (0.2, 0.2, 0.1)
    assert _parse(["--recipe", "v2"]).batch_size == 2  # v2 keeps Self-supervised/dist_*.sh's


def test_omni_needs_labelled_lists(tmp_path):
    with pytest.raises(SystemExit, match="--omni_json_list"):
        train.main(["--logdir", str(tmp_path), *TINY])


def test_omni_model_keeps_the_whole_swinunetr_under_the_original_keys():
    from voco.models import swinunetr

    model = VoCoOmni(feature_size=12, hidden_dim=32, out_dim=32, window_size=2, out_channels=14)
    net = swinunetr(out_channels=14, feature_size=12, window_size=2)
    keys = model.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"backbone", "student", "teacher"}
    assert {k[len("backbone."):] for k in keys if k.startswith("backbone.")} == set(net.state_dict())


def _labelled_args(**kw):
    base = dict(roi_x=32, sw_batch_size=2, space_x=3.0, space_y=3.0, space_z=3.0, a_min=-175.0, a_max=250.0,
                b_min=0.0, b_max=1.0, cache_dir=None, cache_dataset=False, cache_rate=0.5, workers=0, seed=0,
                RandFlipd_prob=0.2, RandRotate90d_prob=0.2, RandShiftIntensityd_prob=0.1)
    return argparse.Namespace(**{**base, **kw})


def test_labelled_patches_are_drawn_per_step_and_rank(btcv_root):
    items = train.build_datalist([btcv_root / "dataset_0.json"], keys=("image", "label"))[:3]
    fast = dict(cache_dataset=True, cache_rate=1.0)  # each volume pre-processed once
    ds = build_labelled(_labelled_args(**fast), items, skip_bad=False)
    first, again, other = ds[1], ds[1], ds[2]
    assert first["image"].shape == first["label"].shape == (2, 1, 32, 32, 32)
    for k in ("image", "label"):
        torch.testing.assert_close(again[k], first[k], rtol=0, atol=0)  # the same step draws the same
    assert not torch.equal(first["image"], other["image"])
    labels = torch.cat([ds[t]["label"] for t in range(1, 6)])
    assert set(labels.unique().tolist()) <= set(range(14)) and (labels > 0).float().mean() > 0.05
    n = len(items)  # each pass over the list is a permutation; two ranks read different volumes per step
    assert sorted(ds.volume_index(t) for t in range(1, n + 1)) == list(range(n))
    r0, r1 = (LabelledSteps(items, ds.base, ds.patches, rank=r, world_size=2) for r in (0, 1))
    assert r0.volume_index(1) != r1.volume_index(1)  # keys 0 and 1 of one pass


def test_self_training_switch_freezes_writes_and_reloads_the_teacher(tmp_path):
    torch.manual_seed(0)
    model = argparse.Namespace(backbone=torch.nn.Linear(3, 2))
    st = SelfTraining(switch=2, teacher_file=tmp_path / "run" / "t.pt")
    assert st.teacher_at(model, 1) is None and st.teacher_at(model, 2) is None
    teacher = st.teacher_at(model, 3)  # 0-based step index 2 == num_steps // 2: after 2 updates
    assert teacher is not model.backbone and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert [st.active(t) for t in (2, 3, 4)] == [False, False, True]  # pseudo-labels from index 3 on
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        model.backbone.weight.add_(1.0)  # training goes on; the teacher does not move
    assert st.teacher_at(model, 5) is teacher and torch.equal(teacher.weight, frozen["weight"])

    resumed = SelfTraining(2, tmp_path / "other" / "t.pt", resume_dir=tmp_path / "run")
    torch.testing.assert_close(resumed.teacher_at(model, 5).weight, frozen["weight"], rtol=0, atol=0)
    with pytest.raises(WeightLoadError, match="frozen teacher"):
        SelfTraining(2, tmp_path / "none" / "t.pt").teacher_at(model, 4)


def _pretrain(btcv_root, logdir, steps, *extra):
    return train.main(["--logdir", str(logdir), "--json_list", str(btcv_root / "btcv.json"),
                       "--omni_json_list", str(btcv_root / "dataset_0.json"), "--num_steps", str(steps),
                       *TINY, *extra])


@pytest.mark.slow  # 6 steps of a tiny SwinUNETR with decoders on 64^3 crops: 512 s wall on the loaded 2-core machine
def test_omni_pretrains_switches_and_resumes_exactly(btcv_root, tmp_path):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    full = tmp_path / "full"
    assert _pretrain(btcv_root, full, 4, *cache)["global_step"] == 4
    rows = list(csv.DictReader(open(full / "voco_pretrain.metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r[c])) for r in rows for c in ("loss", "intra", "inter", "reg", "seg", "semi"))
    assert [float(r["semi"]) > 0 for r in rows] == [False, False, False, True]  # switch at 4 // 2
    for r in rows:
        parts = sum(float(r[c]) for c in ("intra", "inter", "reg", "seg", "semi"))
        assert abs(parts - float(r["loss"])) < 1e-5

    from voco.models import swinunetr
    net = swinunetr(out_channels=14, feature_size=12, window_size=2)  # the frozen teacher is a SwinUNETR
    net.load_state_dict(torch.load(full / "voco_pretrain.omni_teacher.pt", weights_only=True), strict=True)

    # resume past the switch into another folder: the teacher is read next to the checkpoint
    _pretrain(btcv_root, tmp_path / "resumed", 4, *cache, "--resume", str(full / "model_step3.pt"))
    a = torch.load(full / "final_model.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "final_model.pth", weights_only=True)
    assert a.keys() == b.keys() and any(k.startswith("backbone.decoder1.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
