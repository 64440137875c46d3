"""Fault injection, DiRA (dira/train.py pre-training and dira/finetune.py): what each fault does, asserted.

kill -9 is real: the CLI's `main` runs in a child process that SIGKILLs itself at a chosen point (a given
training step, or half-way through writing a checkpoint: shared.checkpoint's test hooks, set through the
environment); the parent then resumes with `--resume`.
Everything runs on the CPU with one thread (bit-identical weights need the same kernels in both processes).
"""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dira import finetune, train
from dira.data import ImageListDataset, ImageReadError, TwoViewTransform, load_image
from shared.checkpoint import FAULT_KILL_IN_SAVE_ENV, FAULT_KILL_STEP_ENV
from shared.guards import FAULT_NAN_STEP_ENV, NonFiniteLossError
from shared.timing import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[2]

OUTCOMES = {
    "kill_resume": "--resume after kill -9 gives bit-identical weights, optimizer state and metrics rows.",
    "kill_during_save": "the previous checkpoint.pth / D_checkpoint.pth still load and resume exactly.",
    "corrupt_file": "a truncated image is skipped with a warning naming it; the epoch line counts and names it.",
    "missing_file": "a listed image that is not on disk stops the run at start, naming the file.",
    "empty_data": "an empty image list stops the run at start, naming the list.",
    "wrong_label_shape": "a list with another label count, or a mask of another size than its image, is refused "
                         "naming the file (--resize_masks accepts the mask).",
    "nonfinite_input": "an image with NaN/inf pixels is skipped, named and counted (never read as black).",
    "wrong_ndim": "RGBA / grey+alpha images are read as 3-channel RGB, as the original's convert('RGB').",
    "run_folder_clash": "--resume with other flags than the run's is refused naming the flags; a fresh run "
                        "moves the older metrics.csv aside.",
    "nonfinite_loss": "a non-finite loss stops the run before the optimizer step, naming the step.",
    "wrong_checkpoint": "a checkpoint of another architecture to --resume, --generator_pre_trained_weights or "
                        "--proxy_dir is refused with a clear message naming the file.",
}
NOT_APPLICABLE = {}

CHILD = r"""
import json, sys
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
import dira.train
dira.train.main(spec["argv"])
"""


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    """The sample ChestX-ray14 folder (written once per session, shared with the other test folders)."""
    from filelock import FileLock

    from shared.sample_data import generate

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    with FileLock(str(root / "sample_data.lock")):
        generate(root / "sample_data", seed=0, only=["chestxray14"])
    return root / "sample_data" / "chestxray14"


@pytest.fixture(scope="module")
def lists(xray, tmp_path_factory):
    out = tmp_path_factory.mktemp("dira_fault_lists")
    lines = (xray / "Xray14_train_official.txt").read_text().splitlines()
    (out / "train.txt").write_text("\n".join(lines[:4]) + "\n")
    (out / "val.txt").write_text("\n".join(lines[4:6]) + "\n")
    return xray / "images", out / "train.txt", out / "val.txt"


def argv(lists, out, *extra):
    images, train_list, val_list = lists
    return [str(images), "--train_list", str(train_list), "--val_list", str(val_list), "-a", "resnet18",
            "--img_size", "32", "--batch-size", "2", "--moco-k", "8", "--mlp", "--cos", "-j", "0", "--seed", "0",
            "--checkpoint-dir", str(out), "--preview_images", "0", "--mode", "dira", "--max_steps_per_epoch", "2",
            *extra]


def one_thread(fn, *args):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def run_killed(spec, **kill_env):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **kill_env}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return proc


def read_rows(run, timing=True):
    """metrics.csv's rows; without the wall-clock columns when `timing` is False."""
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows if timing else [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def assert_same_run(a, b):
    for name in ("checkpoint.pth", "D_checkpoint.pth", "unet.pth"):
        x, y = (torch.load(r / name, weights_only=True) for r in (a, b))
        xs, ys = (x.get("state_dict", x), y.get("state_dict", y))
        assert xs.keys() == ys.keys()
        assert all(torch.equal(xs[k], ys[k]) for k in xs), name
        if "optimizer" in x:
            for i, state in x["optimizer"]["state"].items():
                assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(y["optimizer"]["state"][i][k]))
                           for k, v in state.items()), name
    rows_a, rows_b = read_rows(a, timing=False), read_rows(b, timing=False)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]  # no step twice after the resume
    assert rows_a == rows_b


@pytest.fixture(scope="module")
def straight(lists, tmp_path_factory):
    """An uninterrupted 2-epoch run (2 steps an epoch): the reference of the resume tests."""
    out = tmp_path_factory.mktemp("dira_straight")
    return one_thread(train.main, argv(lists, out, "--epochs", "2"))


def test_kill_resume_bit_identical(lists, straight, tmp_path):
    # 2 steps an epoch: step 3 is epoch 1's second step, after its first was logged
    run_killed({"argv": argv(lists, tmp_path, "--epochs", "2")}, **{FAULT_KILL_STEP_ENV: "3"})
    run = tmp_path / "DiRA_moco" / "dira"
    assert torch.load(run / "checkpoint.pth", weights_only=True)["epoch"] == 1
    assert max(int(r["step"]) for r in read_rows(run)) == 2  # a row was logged after the checkpoint
    resumed = one_thread(train.main, argv(lists, tmp_path, "--epochs", "2", "--resume", str(run / "checkpoint.pth")))
    assert_same_run(straight, resumed)


def test_kill_during_save_keeps_previous_checkpoint(lists, straight, tmp_path):
    run_killed({"argv": argv(lists, tmp_path, "--epochs", "2")}, **{FAULT_KILL_IN_SAVE_ENV: "checkpoint.pth:2"})
    run = tmp_path / "DiRA_moco" / "dira"
    assert list(run.glob(".checkpoint.pth.*.tmp"))  # the half-written file is the temporary one
    for name in ("checkpoint.pth", "D_checkpoint.pth"):
        assert torch.load(run / name, weights_only=True)["epoch"] == 1
    resumed = one_thread(train.main, argv(lists, tmp_path, "--epochs", "2", "--resume", str(run / "checkpoint.pth")))
    assert_same_run(straight, resumed)


def test_corrupt_file_skipped_counted_and_named(lists, tmp_path, capfd):
    images, train_list, _ = lists
    data = tmp_path / "images"
    data.mkdir()
    names = [line.split()[0] for line in train_list.read_text().splitlines()]
    for name in names:
        (data / name).symlink_to(images / name)
    (data / names[1]).unlink()
    (data / names[1]).write_bytes((images / names[1]).read_bytes()[:300])  # a truncated PNG
    a = argv(lists, tmp_path / "ckpt", "--epochs", "1", "-j", "1")  # a worker process marks the skip
    a[0] = str(data)
    a[a.index("--val_list") + 1] = str(train_list)
    run = train.main(a)
    out, _ = capfd.readouterr()  # (the worker's own warning goes to pytest's recorder in that process)
    assert f"skipped 1 unreadable image(s) so far: {data / names[1]}\n" in out
    assert read_rows(run)[-1]["skipped_images"] == "1.0"


def test_missing_file_named_at_start(lists, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(lists[1].read_text() + "not_there.png" + " 0" * 14 + "\n")
    a = argv(lists, tmp_path, "--epochs", "1")
    a[a.index("--train_list") + 1] = str(bad)
    with pytest.raises(FileNotFoundError, match="not_there.png"):
        train.main(a)


def test_empty_data_list_named(lists, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    a = argv(lists, tmp_path, "--epochs", "1")
    a[a.index("--val_list") + 1] = str(empty)
    with pytest.raises(ValueError, match="empty.txt is empty"):
        train.main(a)


def test_wrong_label_shape_label_count_refused(lists, tmp_path):
    images, train_list, val_list = lists
    thirteen = tmp_path / "test13.txt"
    thirteen.write_text("".join(" ".join(line.split()[:-1]) + "\n" for line in val_list.read_text().splitlines()))
    with pytest.raises(ValueError, match=r"test13.txt: 13 labels per image, but the model predicts 14"):
        finetune.main(["classification", "--data_dir", str(images), "--train_list", str(train_list),
                       "--val_list", str(val_list), "--test_list", str(thirteen), "-a", "resnet18",
                       "--img_size", "32", "--epochs", "1", "--workers", "0", "--output_dir", str(tmp_path)])


def test_wrong_label_shape_mask_size_refused(lists, xray, tmp_path):
    images, _, val_list = lists
    masks = tmp_path / "masks"
    masks.mkdir()
    names = [line.split()[0] for line in val_list.read_text().splitlines()]
    for name in names:
        (masks / name).symlink_to(xray / "masks" / name)
    (masks / names[0]).unlink()
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(masks / names[0])
    tf = finetune.SegmentationTransform(32, "none", train=False)
    ds = finetune.ListDataset(images, val_list, tf, mask_dir=masks)
    with pytest.raises(ImageReadError, match=rf"{names[0]}: mask is 30x40 but its image .* is \d+x\d+"):
        ds[0]
    resized = finetune.ListDataset(images, val_list, tf, mask_dir=masks, resize_masks=True)[0]
    assert resized[0].shape == (3, 32, 32) and resized[1].shape == (1, 32, 32)
    assert finetune.get_args_parser().parse_args(
        ["segmentation", "--data_dir", "d", "--train_list", "a", "--val_list", "b", "--test_list", "c",
         "--resize_masks"]).resize_masks


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_input_skipped_and_named(lists, tmp_path, value):
    images, train_list, _ = lists
    pixels = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    pixels[10, 10] = value
    Image.fromarray(pixels, mode="F").save(tmp_path / "nan.tiff")
    with pytest.raises(ImageReadError, match="nan.tiff: 1 of 4096 pixel values are NaN or infinite"):
        load_image(tmp_path / "nan.tiff")
    first = train_list.read_text().splitlines()[0].split()[0]
    (tmp_path / first).symlink_to(images / first)
    listing = tmp_path / "list.txt"
    listing.write_text(f"nan.tiff{' 0' * 14}\n{first}{' 0' * 14}\n")
    ds = ImageListDataset(tmp_path, listing, TwoViewTransform("dira", 64))
    with pytest.warns(UserWarning, match="nan.tiff"):
        ds[0]
    assert [p.name for p in ds.skipped_files()] == ["nan.tiff"]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_wrong_ndim_extra_channels_read_as_rgb(tmp_path, mode):
    channels = {"RGBA": 4, "LA": 2}[mode]
    Image.fromarray(np.full((48, 40, channels), 120, np.uint8), mode=mode).save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    assert img.mode == "RGB" and img.size == (40, 48)
    y1, y2, target = TwoViewTransform("dira", 32)(img)
    assert y1.shape == y2.shape == (3, 32, 32) and target.shape == (1, 32, 32)


def test_run_folder_clash_refused_and_logs_kept_apart(lists, straight, tmp_path):
    before = {name: (straight / name).read_bytes() for name in ("metrics.csv", "config.json")}
    a = argv(lists, straight.parents[1], "--epochs", "4", "--moco-k", "16", "--lr", "0.1",
             "--resume", str(straight / "checkpoint.pth"))
    with pytest.raises(SystemExit, match=r"--resume refused: .*checkpoint.pth belongs to another configuration "
                                         r"\(--lr: 0.03 there, 0.1 now; --moco-k: 8 there, 16 now\)"):
        train.main(a)
    assert {name: (straight / name).read_bytes() for name in before} == before
    # a checkpoint from elsewhere into this run folder: the folder's config.json decides too
    other = tmp_path / "other"
    other_run = train.main(argv(lists, other, "--epochs", "1", "--max_steps_per_epoch", "1", "--lr", "0.1"))
    clash = argv(lists, other, "--epochs", "4", "--resume", str(straight / "checkpoint.pth"))
    with pytest.raises(SystemExit, match=r"config.json belongs to another configuration"):
        train.main(clash)
    # a fresh run in a used folder moves the earlier log aside: logs never mix
    first_log = (other_run / "metrics.csv").read_text()
    with pytest.warns(UserWarning, match="the earlier metrics.csv is now metrics.1.csv"):
        train.main(argv(lists, other, "--epochs", "1", "--max_steps_per_epoch", "1"))
    aside = list(other_run.glob("metrics.*.csv"))
    assert [p.name for p in aside] == ["metrics.1.csv"] and aside[0].read_text() == first_log
    assert len(read_rows(other_run)) == len(first_log.splitlines()) - 1


def test_nonfinite_loss_stops_naming_the_step(lists, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_NAN_STEP_ENV, "1")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 1 \(epoch 0, batch 1, generator\)"):
        train.main(argv(lists, tmp_path, "--epochs", "1"))
    assert not (tmp_path / "DiRA_moco" / "dira" / "checkpoint.pth").exists()


def test_wrong_checkpoint_refused_clearly(lists, straight, tmp_path):
    ckpt = torch.load(straight / "checkpoint.pth", weights_only=True)
    del ckpt["args"]  # as an original checkpoint: no flags to compare, the state dict decides
    ckpt["state_dict"]["module.queue"] = torch.zeros(128, 16)
    torch.save(ckpt, tmp_path / "other_queue.pth")
    with pytest.raises(SystemExit, match=r"--resume refused: .*other_queue.pth does not fit this model \(-a resnet18"):
        train.main(argv(lists, tmp_path, "--epochs", "4", "--resume", str(tmp_path / "other_queue.pth")))
    with pytest.raises(RuntimeError, match=r"other_queue.pth does not fit this generator"):
        train.main(argv(lists, tmp_path, "--epochs", "1", "--generator_pre_trained_weights",
                        str(tmp_path / "other_queue.pth"), "--moco-k", "8"))
    import torchvision

    from dira import transfer
    from shared.weights import WeightLoadError

    with pytest.raises(WeightLoadError, match="unet.pth"):  # a ResNet-18 U-Net into a ResNet-50
        transfer.load_into_resnet(torchvision.models.resnet50(weights=None), straight / "unet.pth")
