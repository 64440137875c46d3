"""The Genesis engine's --transform_on device (the GPU path, exercised on the CPU): the same batches as
the loader path for the same seeds, a falling loss, exact resume; --channels_last and bf16 autocast on it."""

import csv

import pytest
import torch

from shared.genesis.data import write_pattern_files
from shared.genesis.pretrain import Trainer, build_parser, main

SMALL = {"cls_classes": 3, "nb_instances": 4, "nb_val_instances": 2, "nb_multires_patch": 2, "batch_size": 4,
         "num_workers": 0, "width": 2, "n_images": 2}


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    return write_pattern_files(tmp_path_factory.mktemp("cubes"), 4, 3, 2, shape=(16, 16, 8), resolutions=2)


def args_for(data, out, *switches, **flags):
    """Parsed engine arguments: SMALL overridden by flags (--name value), then bare switches."""
    argv = ["--data_dir", str(data), "--output_dir", str(out), *switches]
    for name, value in {**SMALL, **flags}.items():
        argv += [f"--{name}", str(value)]
    return build_parser("Genesis engine test", "genesis").parse_args(argv)


def _batches(trainer, split="train"):
    loader, batches = (trainer.train_loader, trainer.train_batches) if split == "train" else \
        (trainer.val_loader, trainer.val_batches)
    batches.set_epoch(3)
    return [trainer._prepare(b, split) for b in loader]


def test_device_and_loader_paths_give_the_same_batches(patterns, tmp_path):
    device = Trainer(args_for(patterns, tmp_path / "d", transform_on="device"))
    loader = Trainer(args_for(patterns, tmp_path / "w", transform_on="cpu"))
    assert device.on_device and not loader.on_device
    assert loader.train_loader.dataset.transform and not device.train_loader.dataset.transform
    first = None
    for split in ("train", "val"):
        a, b = _batches(device, split), _batches(loader, split)
        first = a[0][0] if first is None else first
        assert len(a) == len(b) == (6 if split == "train" else 2)
        for (xa, ta, la, ca), (xb, tb, lb, cb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ta, tb) and torch.equal(la, lb)
            assert list(ca) == list(cb)
    device.train_batches.set_epoch(4)  # another epoch draws other transforms
    assert not torch.equal(device._prepare(next(iter(device.train_loader)), "train")[0], first)


def _val_losses(run):
    with open(run / "genesis.metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    return [float(r["val_loss"]) for r in rows], [float(r["train_loss_epoch"]) for r in rows]


def test_device_path_with_bf16_and_channels_last_loss_falls(patterns, tmp_path):
    """3 epochs (bf16 convolutions are slow on a CPU): val 0.208 -> 0.176 -> 0.164, train 0.225 -> 0.171 here
    (the first 3 of the 6 epochs this test used to run: the learning rate does not depend on --nb_epoch)."""
    main(args_for(patterns, tmp_path, transform_on="device", amp="on", channels_last="on", nb_epoch=3, lr=0.003))
    val, train_loss = _val_losses(tmp_path / "en_de")
    assert len(val) == 3 and val[-1] < val[0] and train_loss[-1] < train_loss[0]
    state = torch.load(tmp_path / "en_de" / "genesis.last.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_channels_last_computes_what_the_default_layout_does(patterns, tmp_path):
    results = {}
    for layout in ("on", "off"):
        trainer = Trainer(args_for(patterns, tmp_path / layout, transform_on="device", channels_last=layout))
        # same seed: same initial weights
        conv = next(p for p in trainer.model.parameters() if p.dim() == 5 and p.shape[1] > 1)
        inputs, targets, labels, _ = _batches(trainer)[0]
        assert conv.is_contiguous(memory_format=torch.channels_last_3d) == (layout == "on")
        trainer.model.train()
        _, (loss, _, _) = trainer._forward(inputs, targets, labels)
        loss.backward()
        results[layout] = loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    assert results["on"][0] == pytest.approx(results["off"][0], rel=1e-5)
    for name, grad in results["off"][1].items():  # same maths, other kernels: equal to float rounding
        torch.testing.assert_close(results["on"][1][name], grad, rtol=1e-3, atol=1e-6, msg=name)


def test_resume_with_device_transforms_equals_uninterrupted(patterns, tmp_path):
    main(args_for(patterns, tmp_path / "a", transform_on="device", nb_epoch=2))
    main(args_for(patterns, tmp_path / "b", transform_on="device", nb_epoch=1))
    main(args_for(patterns, tmp_path / "b", "--resume", transform_on="device", nb_epoch=2))
    a, b = (torch.load(tmp_path / run / "en_de" / "genesis.last.pt", weights_only=True) for run in "ab")
    assert a["epoch"] == b["epoch"] == 2
    assert [a[k] for k in ("global_step", "best_loss", "scheduler_state_dict")] == \
        [b[k] for k in ("global_step", "best_loss", "scheduler_state_dict")]
    for part in ("state_dict", "optimizer_state_dict"):  # weights and Adam moments, bit for bit
        torch.testing.assert_close(a[part], b[part], rtol=0, atol=0)
