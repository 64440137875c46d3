"""eval3d (eval3d/run.py main) 'on cuda' (tests/fakecuda/cuda_shim.py): one tiny run per architecture, UNet3D
on NCC (cube batches, batched prediction) and SwinUNETR on BTCV (patches, MONAI sliding-window inference on
the device), with the default bf16 autocast. Any CPU tensor meeting a cuda one raises the real device-mix error.

Checked against the defects it exists for (each reverted by hand, the test failing, then restored):
- the batch not moved (`runtime.put` dropped in eval3d/train.py): "found at least two devices, cuda:0 and cpu".
- the predictions not brought back (`.cpu()` dropped in CubeTask.predict): roc_auc's .numpy() refuses them.
- the autocast dropped around BTCV's sliding_window_inference: its forwards are seen without bf16.
(Leaving out sw_device/device does not fail here: MONAI defaults both to the input's device, already cuda.)
"""

import torch

from eval3d import run as eval3d_run
from eval3d import train as eval3d_train

TINY = ["--steps", "1", "--batch_size", "2", "--optimizer", "adam", "--lr", "1e-3", "--fractions", "100",
        "--seeds", "0", "--modes", "full", "--threads", "1", "--device", "cuda"]


def spy_models(monkeypatch):
    """The models run_one builds, each with a record of the autocast state its forward passes saw."""
    built, seen = [], []
    build = eval3d_train.build

    def spy(*args):
        model, report = build(*args)
        model.register_forward_hook(lambda *_: seen.append(
            (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))))
        built.append(model)
        return model, report
    monkeypatch.setattr(eval3d_train, "build", spy)
    return built, seen


def check(runs, built, seen):
    arms = {k: v for k, v in runs.items() if "|raw|" not in k}
    raws = {k: v for k, v in runs.items() if "|raw|" in k}
    assert arms and raws
    for entry in arms.values():
        assert (entry["device"], entry["amp"], entry["settings"]["amp"]) == ("cuda:0", "bf16", "bf16")
    for entry in raws.values():
        assert (entry["device"], entry["amp"]) == ("cpu", "none") and "amp" not in entry["settings"]
    assert built and all(p.device == torch.device("cuda", 0) for m in built for p in m.parameters())
    assert seen and set(seen) == {(True, torch.bfloat16)}  # training and prediction forwards alike


def test_unet3d_ncc_on_cuda(sample_data, tmp_path, cuda, monkeypatch):
    built, seen = spy_models(monkeypatch)
    runs = eval3d_run.main(["--archs", "unet3d", "--width", "2", "--tasks", "ncc", "--luna16",
                            str(sample_data / "luna16"), "--cube", "16", "16", "8", "--out", str(tmp_path), *TINY])
    check(runs, built, seen)
    assert 0 <= runs["ncc|full|100|random_unet3d_w2|0"]["AUC"] <= 1


def test_swinunetr_btcv_on_cuda(sample_data, tmp_path, cuda, monkeypatch):
    built, seen = spy_models(monkeypatch)
    runs = eval3d_run.main(["--archs", "swinunetr", "--feature_size", "12", "--window_size", "2", "--tasks", "btcv",
                            "--btcv", str(sample_data / "btcv"), "--spacing", "6", "6", "10", "--roi", "64", "32",
                            "32", "--sw_batch_size", "2", "--overlap", "0", "--out", str(tmp_path), *TINY])
    check(runs, built, seen)
    assert 0 <= runs["btcv|full|100|random_swinunetr_f12_w2|0"]["mean Dice"] <= 1
