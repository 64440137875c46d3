import subprocess
import sys
import textwrap

import torch
import torch.distributed as dist

from shared.distributed import all_gather_tensor, cleanup, init_distributed, is_main_process, seed_everything


def test_single_process_without_torchrun(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    x = torch.arange(3)
    assert all_gather_tensor(x) is x and is_main_process()


def test_always_starts_a_one_process_gloo_group(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed(always=True, device="cpu")
    try:
        assert info.distributed and dist.is_initialized() and dist.get_backend() == "gloo"
        assert torch.equal(all_gather_tensor(torch.arange(3)), torch.arange(3))
    finally:
        cleanup()
    assert not dist.is_initialized()


def test_seed_everything_gives_each_rank_its_own_stream():
    seed_everything(5, rank=0)
    a = torch.rand(2)
    seed_everything(5, rank=1)
    b = torch.rand(2)
    seed_everything(5, rank=0)
    assert torch.equal(a, torch.rand(2)) and not torch.equal(a, b)


def test_two_processes_under_torchrun_gather_each_others_tensors(tmp_path):
    script = tmp_path / "gather.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, sys.argv[1])
        from shared.distributed import init_distributed, all_gather_tensor, cleanup
        info = init_distributed(device="cpu")
        out = all_gather_tensor(torch.tensor([float(info.rank)]))
        if info.is_main:
            print("gathered", out.tolist(), info.world_size)
        cleanup()
    """))
    import pathlib
    root = str(pathlib.Path(__file__).resolve().parents[2])
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), root], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gathered [0.0, 1.0] 2" in result.stdout
