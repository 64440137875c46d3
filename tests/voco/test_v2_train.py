"""`voco/train.py --recipe v2` on the sample CT: trains, writes the SSL_head layout, resumes from ours
and from Large-Scale-Medical's own checkpoint layout, and exports a SwinUNETR encoder with a key report."""

import csv
import math

import pytest
import torch

from voco import export, train

TINY = ["--recipe", "v2", "--size", "B", "--feature_size", "12", "--window_size", "2", "--hidden_dim", "32",
        "--out_dim", "32", "--use_checkpoint", "False", "--num_crops", "2", "--sw_batch_size", "1",
        "--batch_size", "1", "--warmup_steps", "1", "--lr", "1e-3", "--eval_num", "1", "--save_every", "1",
        "--workers", "0", "--device", "cpu", "--space_x", "3", "--space_y", "3", "--space_z", "3"]


def _pretrain(btcv_root, logdir, steps, *extra):
    return train.main(["--logdir", str(logdir), "--json_list", str(btcv_root / "btcv.json"),
                       "--num_steps", str(steps), *TINY, *extra])


def test_v2_defaults_follow_the_original_and_leave_v1_alone():
    parser = train.get_parser()
    v1 = parser.parse_args([])
    assert (v1.recipe, v1.feature_size, v1.hidden_dim, v1.base_roi, v1.num_crops, v1.num_steps) == (
        "v1", 48, 2048, 96, 4, 250000)
    for size, f in (("B", 48), ("L", 96), ("H", 192)):
        p = train.get_parser()
        argv = ["--recipe", "v2", "--size", size]
        p.set_defaults(**train.v2.recipe_defaults(argv))
        a = p.parse_args(argv)
        assert (a.feature_size, a.hidden_dim, a.out_dim, a.base_roi, a.num_crops, a.num_steps, a.eval_num) == (
            f, 1024, 1024, 64, 3, 2_000_000, 20_000)
    p = train.get_parser()
    argv = ["--recipe", "v2", "--size", "L", "--feature_size", "12"]
    p.set_defaults(**train.v2.recipe_defaults(argv))
    assert p.parse_args(argv).feature_size == 12  # an explicit width wins over --size
    with pytest.raises(SystemExit, match="v1 only"):
        train.main(["--recipe", "v2", "--single_network", "True", "--device", "cpu", "--logdir", "unused"])


@pytest.mark.slow  # ~2 min on 1 CPU thread: 7 steps of a tiny SwinUNETR on 5 crops of 64^3
def test_v2_pretrain_resume_original_layout_and_export(btcv_root, tmp_path):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    full = tmp_path / "full"
    state = _pretrain(btcv_root, full, 3, *cache)
    assert state["global_step"] == 3
    rows = list(csv.DictReader(open(full / "voco_pretrain.metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(math.isfinite(float(r[c])) for r in rows for c in ("loss", "intra", "inter", "reg"))
    ckpt = torch.load(full / "model_step2.pt", weights_only=True)
    keys = ckpt["state_dict"].keys()
    assert {k.split(".")[0] for k in keys} == {"backbone", "student", "teacher"}
    assert ckpt["global_step"] == 2 and "optimizer" in ckpt

    # ours -> ours: exact resume from step 2
    _pretrain(btcv_root, tmp_path / "resumed", 3, *cache, "--resume", str(full / "model_step2.pt"))
    a = torch.load(full / "final_model.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "final_model.pth", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)

    # Large-Scale-Medical's own layout: {"global_step", "state_dict"} with DDP's module. prefix
    theirs = tmp_path / "theirs.pt"
    torch.save({"global_step": 2, "state_dict": {"module." + k: v for k, v in ckpt["state_dict"].items()}}, theirs)
    with pytest.warns(UserWarning, match="optimizer starts afresh"):
        state = _pretrain(btcv_root, tmp_path / "from_theirs", 3, *cache, "--resume", str(theirs))
    assert state["global_step"] == 3
    rows = list(csv.DictReader(open(tmp_path / "from_theirs" / "voco_pretrain.metrics.csv")))
    assert [int(r["step"]) for r in rows] == [3]

    # export: the shared backbone -> a SwinUNETR encoder, every encoder tensor matched
    out = tmp_path / "encoder.pt"
    export.main([str(full / "model_final_epoch.pt"), "--out", str(out)])
    enc = torch.load(out, weights_only=True)
    assert len(enc) == 145 and all(not k.startswith(("backbone.", "student.", "teacher.")) for k in enc)
    torch.testing.assert_close(enc["swinViT.patch_embed.proj.weight"], a["backbone.swinViT.patch_embed.proj.weight"])
    from voco.models import swinunetr

    net = swinunetr(feature_size=12, window_size=2)
    report = export.load_voco_encoder(net, str(full / "model_final_epoch.pt"), verbose=False)
    assert len(report.matched) == 145 and not report.skipped_shape
