"""torchrun / DDP set-up that also runs as a single CPU process.

`init_distributed()` reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); multi-node runs need nothing more than torchrun's own `--nnodes` and `--rdzv-*` flags.
Without torchrun it returns a world of one and initialises nothing, unless `always=True`, which starts a
one-process gloo group on loopback so that code calling collectives (MoCo's all_gather) runs unchanged.
"""

import os
import random
import socket
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False  # a process group is initialised

    @property
    def is_main(self):
        return self.rank == 0


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend=None, always=False, device=None):
    """Initialise the process group from torchrun's environment; pick this process's device.

    Args:
        backend: 'nccl' or 'gloo'; default nccl when CUDA is available, else gloo.
        always: initialise a one-process group even when not launched by torchrun.
        device: force a device ('cpu', 'cuda', 'cuda:1'); default the local GPU when there is one.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = resolve_device(device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, True)
    if world_size == 1 and not always:
        return DistInfo(0, 1, 0, device, False)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if world_size == 1:  # not under torchrun: a private one-process group on loopback
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device, True)


def resolve_device(device, local_rank=0):
    """torch.device(device), with an index-less 'cuda' made this process's GPU, cuda:<LOCAL_RANK>.

    torch.cuda.set_device refuses a device without an index, and under torchrun each process owns one GPU."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(local_rank))
    return device


def is_main_process():
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed, rank=0):
    """Seed Python, NumPy and torch; each rank gets its own stream (seed + rank)."""
    seed = int(seed) + int(rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


@torch.no_grad()
def all_gather_tensor(x):
    """Concatenate `x` from every rank along dim 0 (no gradient); identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    gathered = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, x.contiguous())
    return torch.cat(gathered, dim=0)
