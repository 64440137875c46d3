"""Semantic Genesis and TransVW pre-training and fine-tuning CLIs, 'on cuda' (tests/fakecuda/cuda_shim.py).

Checked against the defects they exist for (each reverted by hand, the test failing, then restored):
- `shared/distributed.py` resolve_device removed (init_distributed handing torch.device('cuda') to set_device):
  every CLI test given `--device cuda` fails with "Expected a torch.device with a specified index or an
  integer, but got:cuda".
- `cpu_bytes` removed from `shared/checkpoint.py` set_rng_state (the RNG tensors loaded onto cuda handed to
  torch.set_rng_state and Generator.set_state): both resume tests (pre-training, fine-tuning) fail.
"""

import sys
from pathlib import Path

import pytest
import torch

import semantic_genesis.finetune_segmentation as sg_seg
import semantic_genesis.train as sg_train
import transvw.train as tv_train
from shared.genesis.data import write_pattern_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cuda_shim import CudaTensor, fake_cuda  # noqa: E402

TINY = ["--cls_classes", "2", "--nb_instances", "3", "--nb_val_instances", "2", "--nb_multires_patch", "1",
        "--batch_size", "2", "--num_workers", "0", "--width", "2", "--n_images", "0", "--input_rows", "16",
        "--input_cols", "16", "--input_deps", "8"]


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    return write_pattern_files(tmp_path_factory.mktemp("patterns"), cubes_per_class=3, n_classes=2,
                               n_val_per_class=2, shape=(16, 16, 8), resolutions=1)


@pytest.mark.parametrize("train", [sg_train, tv_train], ids=["semantic_genesis", "transvw"])
def test_pretrain_steps_saves_and_resumes_on_cuda(train, patterns, tmp_path, cuda):
    argv = ["--data_dir", str(patterns), "--output_dir", str(tmp_path), *TINY, "--device", "cuda", "--amp", "off"]
    first = train.main([*argv, "--nb_epoch", "1"])
    assert first["steps"] == 3
    assert ("set_device", torch.device("cuda")) not in cuda.calls  # resolved to cuda:0 first
    assert torch.backends.cudnn.benchmark  # fixed-size cubes: autotuned on CUDA
    resumed = train.main([*argv, "--nb_epoch", "2", "--resume"])  # RNG states come back onto cuda
    (last,) = (tmp_path / "en_de").glob("*.last.pt")  # <exp_name>.last.pt
    assert resumed["steps"] == 6
    saved = torch.load(last, weights_only=True, map_location="cpu")
    assert saved["epoch"] == 2 and torch.isfinite(next(iter(saved["state_dict"].values()))).all()


def test_pretrain_on_cuda_with_bf16_autocast_and_device_transforms(patterns, tmp_path, cuda):
    out = sg_train.main(["--data_dir", str(patterns), "--output_dir", str(tmp_path), *TINY, "--device", "cuda:0",
                         "--amp", "on", "--transform_on", "device", "--nb_epoch", "1"])
    assert out["steps"] == 3


def test_cudnn_benchmark_stays_off_when_determinism_is_asked(patterns, tmp_path, cuda):
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        sg_train.main(["--data_dir", str(patterns), "--output_dir", str(tmp_path), *TINY, "--device", "cuda",
                       "--amp", "off", "--nb_epoch", "1"])
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)


def arrays(root):
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, k in zip(("train", "val", "test"), (4, 2, 2)):
        x = rng.random((k, 16, 16, 8)).astype(np.float32)
        np.save(root / f"{split}_x.npy", x)
        np.save(root / f"{split}_y.npy", (x > 0.6).astype(np.float32))
    return root


def test_finetune_resume_on_cuda(tmp_path, cuda):
    argv = ["--data_dir", str(arrays(tmp_path / "a")), "--width", "2", "--input_rows", "16", "--input_cols", "16",
            "--input_deps", "8", "--batch_size", "2", "--output_dir", str(tmp_path / "ft"), "--device", "cuda"]
    sg_seg.main([*argv, "--nb_epoch", "1"])
    out = sg_seg.main([*argv, "--nb_epoch", "2", "--resume"])  # the loader generator's state, from cuda
    assert out["metric"] == "dice"


def test_a_cuda_tensor_mixed_with_a_cpu_tensor_fails_as_on_a_gpu():
    """The shim itself: what makes these tests fail on the defects a GPU would show."""
    with fake_cuda():
        x = torch.ones(3, 4).to("cuda")
        assert isinstance(x, CudaTensor) and x.device == torch.device("cuda", 0) and x.is_cuda
        with pytest.raises(RuntimeError, match="found at least two devices, cuda:0 and cpu"):
            x @ torch.ones(4, 2)
        assert (x * torch.tensor(2.0)).sum().item() == 24  # a CPU 0-dim tensor mixes, as on CUDA
        with pytest.raises(ValueError, match="Expected a torch.device with a specified index or an integer, but "
                                             "got:cuda"):
            torch.cuda.set_device(torch.device("cuda"))
        with pytest.raises(RuntimeError, match="RNG state must be a torch.ByteTensor"):
            torch.set_rng_state(torch.get_rng_state().to("cuda"))
        with pytest.raises(RuntimeError, match="RNG state must be a torch.ByteTensor"):
            torch.cuda.set_rng_state(torch.get_rng_state().to("cuda"))
        with pytest.raises(RuntimeError):  # the C++ check sees a tensor without data (the real one: not CPU)
            torch.Generator().set_state(torch.get_rng_state().to("cuda"))
        with pytest.raises(TypeError, match="can't convert cuda:0"):
            x.numpy()
        assert x.cpu().numpy().sum() == 12


def test_self_discovery_autoencoder_trains_and_resumes_on_cuda(tmp_path, cuda):
    """The self-discovery auto-encoder (shared/genesis/self_discovery): its batch order generator's state is
    restored through set_generator_state on resume."""
    import numpy as np

    from shared.genesis.self_discovery.engine import train_autoencoder

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("validation", 2)):
        (tmp_path / "data" / split).mkdir(parents=True)
        for i in range(n):
            np.save(tmp_path / "data" / split / f"v{i}.npy", rng.random((20, 20, 12)).astype(np.float32))
    kw = dict(arch="Unet", width=2, input_shape=(16, 16, 8), batch_size=2, progress=False, tensorboard=False,
              device="cuda")
    train_autoencoder(tmp_path / "data", tmp_path / "ae", nb_epoch=1, **kw)
    train_autoencoder(tmp_path / "data", tmp_path / "ae", nb_epoch=2, resume=True, **kw)
    assert torch.load(tmp_path / "ae" / "Unet_autoencoder_last.pt", weights_only=True)["epoch"] == 2


def test_on_cuda_a_nan_loss_is_found_at_the_next_check_and_nothing_after_it_is_saved(patterns, tmp_path, cuda,
                                                                                        monkeypatch):
    """No host sync per step: the loss is read at the logging steps (1, 5, ...) and at the end of the epoch,
    before validation and the checkpoints; the step that went NaN is named."""
    from shared.guards import FAULT_NAN_STEP_ENV, NonFiniteLossError

    monkeypatch.setenv(FAULT_NAN_STEP_ENV, "2")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 2 \(epoch 1\); found at the check after "
                                                 r"step 3"):
        sg_train.main(["--data_dir", str(patterns), "--output_dir", str(tmp_path), *TINY, "--device", "cuda",
                       "--amp", "off", "--nb_epoch", "1"])
    assert not list((tmp_path / "en_de").glob("*.last.pt"))
