"""CUDA checks of the shared building blocks (skipped where no GPU is present)."""

import pytest
import torch

from shared.distributed import all_gather_tensor, cleanup, init_distributed
from shared.unet3d import UNet3D, YNet3D
from shared.weights import load_pretrained

pytestmark = pytest.mark.gpu


def test_ynet_matches_cpu_and_trains_under_amp():
    torch.manual_seed(0)
    cpu = YNet3D(cls_classes=5, width=8).double()
    gpu = YNet3D(cls_classes=5, width=8).double().cuda()
    load_pretrained(gpu, cpu.state_dict(), min_matched=1.0, verbose=False)
    x = torch.rand(2, 1, 32, 32, 16, dtype=torch.float64)
    seg_c, log_c = cpu(x)
    seg_g, log_g = gpu(x.cuda())
    assert torch.allclose(seg_c, seg_g.cpu(), atol=1e-8) and torch.allclose(log_c, log_g.cpu(), atol=1e-8)

    model = YNet3D(cls_classes=5, width=8).cuda()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(4, 1, 32, 32, 16, device="cuda")
    target, labels = x.clone(), torch.tensor([0, 1, 2, 3], device="cuda")
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            seg, logits = model(x)
            loss = torch.nn.functional.mse_loss(seg.float(), target) + \
                0.01 * torch.nn.functional.cross_entropy(logits.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_one_process_nccl_group_gathers():
    info = init_distributed(always=True)
    try:
        assert info.device.type == "cuda" and info.distributed
        x = torch.arange(3.0, device=info.device)
        assert torch.equal(all_gather_tensor(x), x)
    finally:
        cleanup()


def test_full_width_unet_step_fits_and_runs():
    model = UNet3D().cuda()
    x = torch.rand(4, 1, 64, 64, 32, device="cuda")
    loss = torch.nn.functional.mse_loss(model(x), x)
    loss.backward()
    assert torch.isfinite(loss)
