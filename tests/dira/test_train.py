"""Tiny end-to-end runs of dira/train.py on the sample X-rays: both stages, checkpoints, resume, methods."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dira import train
from dira.models import DiRAMoCo

ROOT = Path(__file__).resolve().parents[2]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def epoch_losses(run_dir, column="train_loss"):
    return [float(r[column]) for r in read_csv(run_dir / "metrics.csv") if r.get(column)]


def test_cli_keeps_original_flags_and_defaults():
    a = train.parse_args(["imgs"])
    assert (a.arch, a.workers, a.epochs, a.start_epoch, a.batch_size) == ("resnet50", 16, 1200, 0, 256)
    assert (a.lr, a.disc_learning_rate, a.schedule, a.momentum, a.weight_decay) == (0.03, 2e-4, [120, 160], 0.9, 1e-4)
    assert (a.print_freq, a.resume, a.world_size, a.rank, a.dist_url, a.dist_backend) == (
        10, "", -1, -1, "tcp://224.66.41.62:23456", "nccl")
    assert (a.seed, a.gpu, a.multiprocessing_distributed, a.mlp, a.cos) == (None, None, False, False, False)
    assert (a.moco_dim, a.moco_k, a.moco_m, a.moco_t) == (128, 65536, 0.999, 0.2)
    assert (a.checkpoint_dir, a.train_list, a.val_list) == (
        "./checkpoint/", "dataset/Xray14_train_official.txt", "dataset/Xray14_val_official.txt")
    assert (a.mode, a.encoder_weights, a.activate, a.exp_name, a.out_channels) == (
        "dira", None, "sigmoid", "DiRA_moco", 1)
    assert (a.contrastive_weight, a.mse_weight, a.adv_weight, a.generator_pre_trained_weights) == (
        1.0, 10.0, 0.001, None)
    assert (a.method, a.flip_target, a.frozen_validation, a.strict_swap_overlap) == ("moco", False, False, False)
    readme = train.parse_args(["imgs", "--dist-url", "tcp://localhost:10001", "--multiprocessing-distributed",
                               "--world-size", "1", "--rank", "0", "--mlp", "--moco-t", "0.2", "--cos",
                               "--mode", "DIRA", "-batch-size", "16", "--epochs", "400",
                               "--generator_pre_trained_weights", "x.pth", "--out_channels", "1"])
    assert readme.batch_size == 16 and readme.mode == "dira" and readme.out_channels == 1
    assert readme.multiprocessing_distributed and readme.world_size == 1
    assert train.parse_args(["imgs", "--method", "simsiam"]).lr == 0.05
    bt = train.parse_args(["imgs", "--method", "barlowtwins"])
    assert (bt.lr, bt.weight_decay, bt.exp_name) == (0.2, 1.5e-6, "DiRA_barlowtwins")
    with pytest.raises(SystemExit):
        train.parse_args(["imgs", "--mode", "other"])


def test_dir_then_dira_loss_falls_and_checkpoints(tiny_argv, tmp_path):
    out = tmp_path / "ckpt"
    run = train.main(tiny_argv("--mode", "dir", "--epochs", "5", "--lr", "0.1", "--preview_images", "0", out=out))
    assert run == out / "DiRA_moco" / "dir"
    losses = epoch_losses(run)
    # epoch 0 contrasts against the random initial queue (easy negatives); from epoch 1 the queue holds keys
    assert len(losses) == 5 and losses[-1] < losses[1]
    assert epoch_losses(run, "train_res_loss")[-1] < epoch_losses(run, "train_res_loss")[0]

    ckpt = torch.load(run / "checkpoint.pth", weights_only=True)
    assert {"epoch", "arch", "state_dict", "optimizer", "best_loss"} <= set(ckpt)
    assert ckpt["epoch"] == 5 and ckpt["arch"] == "resnet18" and ckpt["best_loss"].dim() == 0
    sd = ckpt["state_dict"]
    assert list(sd)[:2] == ["module.queue", "module.queue_ptr"] and all(k.startswith("module.") for k in sd)
    assert sd["module.queue"].shape == (128, 8)
    best = torch.load(run / "best_checkpoint.pth", weights_only=True)
    unet_keys = [k[len("module.encoder_q.backbone."):] for k in sd if k.startswith("module.encoder_q.backbone.")]
    assert list(best) == unet_keys and list(torch.load(run / "unet.pth", weights_only=True)) == unet_keys

    # stage 2 loads the stage-1 checkpoint strictly (queue and key encoder too)
    fresh = DiRAMoCo("dira", "resnet18", 128, 8, mlp=True)
    train.load_generator_weights(fresh, run / "checkpoint.pth")
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, sd["module." + k]), k
    run2 = train.main(tiny_argv("--mode", "dira", "--epochs", "3", "--lr", "0.1",
                                "--generator_pre_trained_weights", str(run / "checkpoint.pth"), out=out))
    losses2 = epoch_losses(run2)
    assert losses2[-1] < losses2[0]
    assert epoch_losses(run2, "train_d_loss")  # the discriminator trained
    assert sorted(p.name for p in run2.glob("restoration_epoch*.png")) == [
        f"restoration_epoch{e:04d}.png" for e in range(3)]
    d = torch.load(run2 / "D_checkpoint.pth", weights_only=True)
    assert sorted(d["state_dict"]) == sorted(f"module.model.{i}.{w}" for i in (0, 2, 5, 8, 11)
                                             for w in ("weight", "bias"))
    assert isinstance(d["optimizer"]["param_groups"][0]["betas"], (tuple, list))


def test_stage2_from_wrong_checkpoint_is_a_clear_error(tmp_path):
    m = DiRAMoCo("dira", "resnet18", 128, 8, mlp=True)
    torch.save({"state_dict": {"module.queue": torch.zeros(128, 8)}}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="same --arch, --mlp"):
        train.load_generator_weights(m, tmp_path / "bad.pth")


def test_resume_equals_uninterrupted(tiny_argv, tmp_path):
    common = ("--mode", "dira", "--max_steps_per_epoch", "2", "--preview_images", "0")
    straight = train.main(tiny_argv(*common, "--epochs", "2", out=tmp_path / "a"))
    first = train.main(tiny_argv(*common, "--epochs", "1", out=tmp_path / "b"))
    resumed = train.main(tiny_argv(*common, "--epochs", "2", "--resume", str(first / "checkpoint.pth"),
                                   out=tmp_path / "b"))
    for name in ("checkpoint.pth", "D_checkpoint.pth"):
        a = torch.load(straight / name, weights_only=True)
        b = torch.load(resumed / name, weights_only=True)
        assert a["epoch"] == b["epoch"] == 2
        for k in a["state_dict"]:
            assert torch.equal(a["state_dict"][k], b["state_dict"][k]), (name, k)
        sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for k in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (name, i, k)
    assert float(torch.load(straight / "checkpoint.pth", weights_only=True)["best_loss"]) == pytest.approx(
        float(torch.load(resumed / "checkpoint.pth", weights_only=True)["best_loss"]))


@pytest.mark.parametrize("extra", [("--method", "barlowtwins"), ("--method", "simsiam"), ("--mode", "di"),
                                   ("--method", "moco", "--amp", "bf16", "--frozen_validation",
                                    "--skip_key_decoder", "--flip_target", "--strict_swap_overlap")])
def test_each_variant_runs_a_step(tiny_argv, tmp_path, extra):
    mode = () if "--mode" in extra else ("--mode", "dira")
    run = train.main(tiny_argv(*mode, *extra, "--epochs", "1", "--max_steps_per_epoch", "1", out=tmp_path))
    ckpt = torch.load(run / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 1
    assert any(k.startswith("module.encoder_q.") for k in ckpt["state_dict"])
    assert epoch_losses(run) and all(map(lambda v: v == v, epoch_losses(run)))  # finite, logged


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback of --multiprocessing-distributed")
def test_original_launch_flags_on_cpu(tiny_argv, tmp_path):
    """The README's launch flags: on a machine without a GPU, one gloo process instead of a silent exit."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = ("--dist-url", f"tcp://127.0.0.1:{port}", "--multiprocessing-distributed", "--world-size", "1",
              "--rank", "0", "--mode", "dir", "--epochs", "1", "--max_steps_per_epoch", "1", "--preview_images", "0")
    with pytest.warns(UserWarning, match="without a GPU"):
        run = train.main(tiny_argv(*launch, out=tmp_path))
    assert torch.load(run / "checkpoint.pth", weights_only=True)["epoch"] == 1
    assert not torch.distributed.is_initialized()


def test_bad_lists_give_clear_errors(tiny_argv, tiny_lists, tmp_path):
    images, train_list, _ = tiny_lists
    bad = tmp_path / "bad.txt"
    bad.write_text(train_list.read_text() + "does_not_exist.png" + " 0" * 14 + "\n")
    with pytest.raises(FileNotFoundError, match="does_not_exist.png"):
        train.main(tiny_argv("--train_list", str(bad), "--epochs", "1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        train.main(tiny_argv("--val_list", str(empty), "--epochs", "1"))


@pytest.mark.slow
def test_two_process_cpu_ddp(tiny_argv, tmp_path):
    argv = tiny_argv("--mode", "dira", "--epochs", "1", "--max_steps_per_epoch", "1", "--batch-size", "4",
                     "--frozen_validation", out=tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "dira" / "train.py"), *argv]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "DiRA_moco" / "dira" / "checkpoint.pth", weights_only=True)
    assert int(ckpt["state_dict"]["module.queue_ptr"]) == 4  # 2 processes x 2 keys enqueued together
    assert len(ckpt["rng"]) == 2
