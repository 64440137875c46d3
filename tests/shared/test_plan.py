"""The planner's engine (shared/plan.py) and device table (shared/gpus.py); each method's tests/<m>/test_plan.py
checks its own --plan against a measured CPU peak."""

import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

from shared.gpus import find_gpu
from shared.plan import Estimate, LiveBytes, Plan, format_plan, summarize


def test_live_bytes_follows_allocations_frees_and_the_peak():
    tracker = LiveBytes(block=512)
    with FakeTensorMode(), tracker:
        a = torch.empty(1000)            # 4000 bytes -> 4096 in 512-byte blocks
        b = torch.empty(10)              # 40 -> 512
        view = a[:10]                    # a view: no new storage
        del a
        assert tracker.now["activations"] == 4096 + 512   # the view keeps a's storage alive
        del view
        assert tracker.now["activations"] == 512
        c = torch.empty(2000)            # 8000 -> 8192
    assert tracker.peak == 512 + 8192 and tracker.raw_peak == 40 + 8000
    tracker.retag(c, "optimizer")
    assert tracker.now == {"parameters": 0, "gradients": 0, "optimizer": 8192, "activations": 512}
    del b, c


def test_constants_keep_their_values_under_fake_tensors():
    """MONAI's losses read `torch.arange(2, n).tolist()`; VoCo indexes with a constant boolean mask."""
    tracker = LiveBytes()
    with FakeTensorMode(), tracker:
        assert torch.arange(2, 5).tolist() == [2, 3, 4]
        upper = torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1)
        picked = torch.rand(2, 3, 3)[:, upper]
        assert tuple(picked.shape) == (2, 3)
        with pytest.raises(DataDependentOutputException):   # a value computed from data stays unknown
            torch.rand(3).sum().item()


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H200", "H200"), ("NVIDIA GH200 480GB", "GH200"), ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100"), ("a100 40gb", "A100 40GB"), ("L40S", "L40S"), ("NVIDIA B200", "B200")])
def test_device_names_find_their_entry(name, expected):
    assert find_gpu(name).name == expected


def test_unknown_device_is_refused_naming_the_table():
    assert find_gpu("Voodoo 3") is None
    with pytest.raises(SystemExit, match="H100 NVL"):
        summarize(_plan("bf16"), _estimate(), "Voodoo 3")


def _plan(precision, n=8):
    return Plan(method="m", config="c", precision=precision, checkpointing=False, sample="patch",
                samples_per_step=n, total_samples=8000, pass_samples=800, schedule="s",
                make_modules=dict, make_step=None, batch_flag="--batch")


def _estimate(activations=8 * 2**30, conv_share=0.5):
    flops = 8 * 10**12
    return Estimate(parameters=10**6, trainable=10**6, peak=activations + 2**30, raw_peak=activations + 2**30,
                    at_peak={"parameters": 2**29, "gradients": 0, "optimizer": 2**29, "activations": activations},
                    flops_per_step=flops, conv_flops_per_step=int(flops * conv_share))


def test_fit_largest_batch_and_gpu_hours():
    s = summarize(_plan("bf16"), _estimate(), "H100", mfu=0.5)
    assert s["fits"] and s["flops_per_sample"] == 10**12
    # 1000 steps of 8e12 FLOPs at half of 989.5 TFLOP/s
    assert s["gpu_hours"] == pytest.approx(1000 * 8e12 / (0.5 * 989.5e12) / 3600)
    # 1 GiB per sample: (79.2 - 1) / 1.1 - 1 GiB fixed -> 70 samples
    assert s["largest_batch"] == 70
    big = summarize(_plan("bf16"), _estimate(activations=80 * 2**30), "H100")
    assert not big["fits"] and "**does not fit**" in format_plan(_plan("bf16"), big)
    assert summarize(_plan("bf16"), _estimate(activations=80 * 2**30), "H200")["fits"]


def test_fp32_convolutions_at_tf32_and_matmuls_at_fp32():
    s = summarize(_plan("fp32"), _estimate(conv_share=0.5), "A100", mfu=1.0)
    assert s["step_s"] == pytest.approx(4e12 / 156e12 + 4e12 / 19.5e12)
