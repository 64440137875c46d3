import pytest
import torch

from shared.weights import WeightLoadError
from voco.export import branch_state_dict, infer_window_size, load_voco_encoder
from voco.export import main as export_main
from voco.models import Swin, VoCo, encoder_keys, swinunetr
from voco.train import get_parser

TINY = dict(feature_size=12, hidden_dim=16, out_dim=16, window_size=2)


def test_branch_keys_load_into_monai_swinunetr_v2():
    branch = Swin(feature_size=48).state_dict()
    target = swinunetr(feature_size=48).state_dict()  # SwinUNETR(in 1, out 14, use_v2=True)
    enc = encoder_keys(target)
    assert len(branch) == 151 and len(target) == 167 and len(enc) == 145
    assert sorted(k for k in branch if not k.startswith("proj_head.")) == sorted(enc)
    assert all(branch[k].shape == target[k].shape for k in enc)
    assert sorted(k for k in branch if k.startswith("proj_head.")) == [
        f"proj_head.layer{i}.0.{p}" for i in (1, 2, 3) for p in ("bias", "weight")]
    assert branch["proj_head.layer1.0.weight"].shape == (2048, 1152)
    assert any(k.startswith("swinViT.layers1c.0.layer.conv1") for k in branch)  # the v2 blocks
    assert infer_window_size(branch) == 7  # 2197 = 13^3 rows


def test_voco_keys_teacher_and_optimizer():
    model = VoCo(**TINY)
    keys = list(model.state_dict())
    assert len(keys) == 302 and sum(k.startswith("student.") for k in keys) == 151
    assert not any(p.requires_grad for p in model.teacher.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(list(model.student.parameters()))
    s0 = next(model.student.parameters())
    assert not torch.equal(s0, next(model.teacher.parameters()))  # independent init, as the original
    same = VoCo(**TINY, teacher_init="student")
    for a, b in zip(same.student.parameters(), same.teacher.parameters()):
        assert torch.equal(a, b)
    assert not hasattr(VoCo(**TINY, single_network=True), "teacher")


def test_ema_update_math():
    model = VoCo(**TINY)
    t0 = [p.clone() for p in model.teacher.parameters()]
    s0 = [p.clone() for p in model.student.parameters()]
    model.ema_update()
    for t, a, b in zip(model.teacher.parameters(), t0, s0):
        torch.testing.assert_close(t, 0.9 * a + 0.1 * b)
    for s, b in zip(model.student.parameters(), s0):
        assert torch.equal(s, b)


def fixed_batch(crop=64, n_base=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 1, crop, crop, crop, generator=g)
    crops = torch.rand(n_base, 1, crop, crop, crop, generator=g)
    labels = torch.tensor([[[0.5, 0.5, 0.0, 0.0]]], dtype=torch.float64)
    return img, crops, labels


def test_export_and_load_all_matched(tmp_path):
    model = VoCo(**TINY)
    ckpt = {"global_step": 3, "state_dict": {f"module.{k}" if k.startswith("student") else k: v
                                             for k, v in model.state_dict().items()}}
    torch.save(ckpt, tmp_path / "model_final_epoch.pt")
    export_main([str(tmp_path / "model_final_epoch.pt"), "--branch", "student", "--out",
                 str(tmp_path / "enc.pt")])  # feature and window size inferred from the tensors
    enc = torch.load(tmp_path / "enc.pt", weights_only=True)
    assert len(enc) == 145 and not any(k.startswith(("student", "teacher", "module", "proj_head")) for k in enc)
    net = swinunetr(feature_size=12, window_size=2)
    report = load_voco_encoder(net, tmp_path / "enc.pt")
    assert len(report.matched) == 145
    sd = net.state_dict()
    for k, v in model.student.state_dict().items():
        if not k.startswith("proj_head"):
            assert torch.equal(sd[k], v), k
    # the teacher branch of the raw checkpoint, and the released VoCo_10k.pt layout (bare keys,
    # possibly with `module.` and the legacy `swin_vit` spelling), load the same way
    net2 = swinunetr(feature_size=12, window_size=2)
    load_voco_encoder(net2, tmp_path / "model_final_epoch.pt", branch="teacher")
    torch.testing.assert_close(net2.state_dict()["encoder10.layer.conv1.conv.weight"],
                               model.teacher.state_dict()["encoder10.layer.conv1.conv.weight"])
    released = {("module." + k).replace("swinViT", "swin_vit"): v for k, v in enc.items()}
    assert len(load_voco_encoder(swinunetr(feature_size=12, window_size=2), released).matched) == 145
    # anything less than all 145 is an error, not a silent partial load
    partial = {k: v for k, v in enc.items() if not k.startswith("encoder10")}
    with pytest.raises(WeightLoadError, match="encoder tensors matched"):
        load_voco_encoder(swinunetr(feature_size=12, window_size=2), partial)
    with pytest.raises(WeightLoadError):
        branch_state_dict({"state_dict": {"x": torch.zeros(1)}}, "teacher")


def test_flags_parse_like_the_original_but_typed():
    args = get_parser().parse_args([])
    assert (args.lr, args.batch_size, args.sw_batch_size, args.num_steps, args.warmup_steps) == (
        1e-4, 2, 2, 250000, 5000)
    assert args.use_checkpoint is True and args.noamp is False and args.lrdecay is True
    assert (args.roi_x, args.base_roi, args.num_crops, args.feature_size) == (64, 96, 4, 48)
    args = get_parser().parse_args(["--use_checkpoint", "False", "--lrdecay", "0", "--noamp", "true",
                                    "--local-rank", "3", "--single_network", "False"])
    assert args.use_checkpoint is False and args.lrdecay is False and args.noamp is True
    assert args.single_network is False and args.local_rank == 3
    with pytest.raises(SystemExit):
        get_parser().parse_args(["--use_checkpoint", "maybe"])


def test_single_network_and_double_input_variants():
    img, crops, _ = fixed_batch(n_base=2)
    single = VoCo(**TINY, single_network=True)
    pos, neg, reg, logits = single(img, crops, torch.tensor([[[0.5, 0.5]]], dtype=torch.float64))
    (pos + neg + reg).backward()
    assert all(p.grad is not None for p in single.student.proj_head.parameters())
    doubled = Swin(feature_size=12, hidden_dim=16, out_dim=16, window_size=2, double_input=True)
    with torch.no_grad():  # 32^3 crops become 64x32x32, enough for the 5th map in training mode
        assert doubled(torch.rand(2, 1, 32, 32, 32)).shape == (2, 16)
