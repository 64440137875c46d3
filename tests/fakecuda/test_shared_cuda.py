"""The shared pieces every CLI relies on 'on cuda': device resolution, RNG restore across GPU counts, the
non-finite-loss watch without per-step sync, the /dev/shm start-up check."""

import sys
import warnings
from pathlib import Path

import pytest
import torch

from shared.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from shared.distributed import init_distributed, resolve_device
from shared.guards import MAX_CONSECUTIVE_SKIPS, LossWatch, NonFiniteLossError
from shared.startup import check_shared_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cuda_shim import fake_cuda  # noqa: E402


def test_index_less_cuda_is_this_process_gpu(monkeypatch, cuda):
    assert resolve_device("cuda", 0) == torch.device("cuda", 0)
    assert resolve_device("cuda:0", 3) == torch.device("cuda", 0)  # an explicit index is kept
    assert resolve_device("cpu", 1) == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert init_distributed(device="cuda").device == torch.device("cuda", 0)
    assert ("set_device", torch.device("cuda", 0)) in cuda.calls


def test_resume_on_cuda_restores_rng_states_loaded_onto_the_gpu(tmp_path, cuda):
    torch.manual_seed(5), torch.cuda.manual_seed_all(6)
    save_atomic(rng_state(), tmp_path / "rng.pt")
    again = load_checkpoint(tmp_path / "rng.pt", map_location="cuda:0")
    assert again["torch"].is_cuda  # what the fixed code must cope with
    set_rng_state(again)
    first = torch.rand(3).tolist()
    set_rng_state(again)
    assert torch.rand(3).tolist() == first


def test_cuda_rng_of_more_gpus_restores_what_matches_and_names_the_rest(tmp_path):
    with fake_cuda(device_count=2):
        save_atomic(rng_state(), tmp_path / "rng.pt")
        saved = [s.clone() for s in torch.cuda.get_rng_state_all()]
    with fake_cuda(device_count=1):
        with pytest.warns(UserWarning, match=r"CUDA RNG states of 2 GPU\(s\), this machine has 1: restored 1, "
                                             r"not those of GPU\(s\) \[1\]"):
            set_rng_state(load_checkpoint(tmp_path / "rng.pt", map_location="cuda"))
        assert torch.equal(torch.cuda.get_rng_state(0), saved[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fake_cuda(device_count=4):  # more GPUs than saved: each saved state restored, nothing to say
            set_rng_state(load_checkpoint(tmp_path / "rng.pt"))
            assert torch.equal(torch.cuda.get_rng_state(1), saved[1])
    with pytest.warns(UserWarning, match="this machine has 0"):  # a CPU machine resumes a GPU run
        set_rng_state(load_checkpoint(tmp_path / "rng.pt"))


def test_loss_watch_on_cuda_reads_the_loss_only_when_checked(cuda):
    w = torch.ones(2, device="cuda", requires_grad=True)
    watch = LossWatch("cuda", parameters=[w])
    watch.observe(torch.tensor(1.0, device="cuda"), 1)
    watch.observe(torch.tensor(float("nan"), device="cuda"), 2, "epoch 1")  # no raise: nothing is read yet
    watch.observe(torch.tensor(float("inf"), device="cuda"), 3)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 2 \(epoch 1\); found at the check after "
                                                 r"step 3 .*nothing after it is saved"):
        watch.check()


def test_loss_watch_on_cpu_stops_at_once_with_the_known_message():
    watch = LossWatch("cpu")
    watch.observe(torch.tensor(0.5), 1)
    with pytest.raises(NonFiniteLossError, match=r"loss is inf at step 2 \(epoch 1\); stopping before the weights "
                                                 r"are overwritten"):
        watch.observe(torch.tensor(float("inf")), 2, "epoch 1")


def test_with_a_grad_scaler_a_transient_overflow_is_skipped_and_a_lasting_one_stops(cuda):
    w = torch.nn.Parameter(torch.ones(2, device="cuda"))
    scaler = torch.amp.GradScaler("cuda")
    watch = LossWatch("cuda", scaler, parameters=[w])
    step = 0
    for value in [1.0, float("inf"), float("nan"), 1.0]:  # an fp16 overflow the scaler skips
        step += 1
        watch.observe(torch.tensor(value, device="cuda"), step)
    watch.check()
    for _ in range(MAX_CONSECUTIVE_SKIPS - 1):
        step += 1
        watch.observe(torch.tensor(float("nan"), device="cuda"), step)
    watch.check()  # one short of the limit (and across checks the run keeps counting)
    step += 1
    watch.observe(torch.tensor(float("nan"), device="cuda"), step)
    with pytest.raises(NonFiniteLossError, match=f"non-finite for {MAX_CONSECUTIVE_SKIPS} consecutive steps, "
                                                 "each skipped by the GradScaler"):
        watch.check()


def test_with_a_grad_scaler_a_non_finite_weight_stops(cuda):
    w = torch.nn.Parameter(torch.ones(2, device="cuda"))
    watch = LossWatch("cuda", torch.amp.GradScaler("cuda"), parameters=[w])
    watch.observe(torch.tensor(float("nan"), device="cuda"), 1)
    with torch.no_grad():
        w[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"a weight is now non-finite \(parameter #0 of 1\)"):
        watch.check()


def test_shared_memory_check_warns_naming_the_flag():
    with pytest.warns(UserWarning, match=r"/dev/shm has 64 MiB free, but 8 loader workers x prefetch 2 x 56.0 MiB "
                                         r"per batch can hold 896 MiB there: .*Lower it with --workers 0"):
        assert check_shared_memory(8, 56 * 2**20, "--workers", free=64 * 2**20) == 896 * 2**20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_shared_memory(0, 56 * 2**20, "--workers", free=1)  # no workers: nothing in /dev/shm
        check_shared_memory(2, 2**20, "--workers", free=2**30)
