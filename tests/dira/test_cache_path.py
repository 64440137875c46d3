"""The cached data path (`--data_path cache`): the batched two views and distortion against the
per-sample reference (dira.data), and training from the cache against training from the files."""

import csv
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter
from scipy import stats

import dira.data as D
from dira import cache_data, prepare_chestxray14, train
from dira.batch_augment import NONE, OUT_PAINT, SWAP, BatchDistortion, BatchTwoView
from shared.augment2d import stack_padded


class Scripted:
    """Stands in for `random` in dira.data: hands the reference the values our parameters hold."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)

    def randint(self, a, b):
        v = self.values.pop(0)
        assert a <= v <= b, f"{v} outside the reference's randint({a}, {b})"
        return v


def script(p, b, size):
    """The reference's sequence of random draws that produces sample b of DistortionParams p."""
    kind = int(p.kind[b])
    out = [(0.1, 0.32, 0.5, 0.9)[kind]]
    if kind == SWAP:
        for x1, y1, x2, y2, bx, by in p.swaps[b].tolist():
            out += [bx, by, x1, y1, x2, y2]
    elif kind != NONE:
        for k in range(10):
            if not p.valid[b, k]:
                break
            x, y, bx, by = p.rects[b, k].tolist()
            out += [size - bx, size - by] if kind == OUT_PAINT else [bx, by]
            out += [x, y, 0.05 if k < 9 and not p.valid[b, k + 1] else 0.5]
    return out


@pytest.mark.parametrize("strict", [False, True])
def test_distortion_equals_reference_given_same_draws(strict, monkeypatch):
    size, n = 64, 120
    batched = BatchDistortion(size, strict)
    p = batched.draw(n, torch.Generator().manual_seed(0))
    assert set(p.kind.tolist()) == {0, 1, 2, 3}
    imgs = torch.randint(1, 256, (n, 1, size, size), dtype=torch.uint8)
    x = imgs.float() / 255
    loop, masks = batched(x, p, impl="loop"), batched(x, p, impl="masks")
    assert torch.equal(loop, masks)
    reference = D.Distortion(size, strict)
    for b in range(n):
        monkeypatch.setattr(D, "random", Scripted(script(p, b, size)))
        ref = reference(np.repeat(imgs[b, 0].numpy()[..., None], 3, 2))
        assert np.array_equal(ref[..., 0], (loop[b, 0] * 255).round().byte().numpy()), b


def _zeroed_and_moved(out, src):
    return [float((out == 0).mean()), float(((out != src) & (out != 0)).mean())]


def test_distortion_draws_follow_reference():
    size, n = 48, 2000
    src = np.arange(1, size * size + 1, dtype=np.float32).reshape(size, size)  # every pixel distinct, none 0
    random.seed(0)
    reference = D.Distortion(size)
    ref = np.array([_zeroed_and_moved(reference(src), src) for _ in range(n)])
    batched = BatchDistortion(size)
    out = batched(torch.from_numpy(src).expand(n, 1, size, size), batched.draw(n, torch.Generator().manual_seed(1)))
    ours = np.array([_zeroed_and_moved(o[0].numpy(), src) for o in out])
    for k, what in enumerate(("zeroed share", "moved share")):
        assert stats.ks_2samp(ref[:, k], ours[:, k]).pvalue > 0.01, what


@pytest.fixture(scope="module")
def gray_images(xray):
    return [np.asarray(Image.open(p).convert("L")) for p in sorted((xray / "images").glob("*.png"))[:8]]


def test_two_views_follow_reference_pipeline(gray_images):
    """Model-free statistics of the outputs (restoration MSE of the input itself, brightness and contrast
    of the views) have the same distribution as the per-sample PIL pipeline's on the same pixels."""
    n, size = 480, 64
    torch.manual_seed(0)
    random.seed(0)
    tf = D.TwoViewTransform("dira", size)
    ref = []
    for k in range(n):
        y1, y2, target = tf(Image.fromarray(gray_images[k % 8]))
        ref.append([float(((y1[0] - target[0]) ** 2).mean()), float(y2.mean()), float(y1.std())])
    images, sizes = stack_padded(gray_images * (n // 8))
    y1, y2, target = BatchTwoView("dira", size)(images, sizes, generator=torch.Generator().manual_seed(1))
    assert y1.shape == y2.shape == (n, 3, size, size) and target.shape == (n, 1, size, size)
    ours = np.stack([((y1[:, 0] - target[:, 0]) ** 2).mean((1, 2)).numpy(), y2.mean((1, 2, 3)).numpy(),
                     y1.flatten(1).std(1).numpy()], 1)
    for k, what in enumerate(("restoration MSE", "view-2 mean", "view-1 std")):
        assert stats.ks_2samp(np.array(ref)[:, k], ours[:, k]).pvalue > 0.01, what


@pytest.mark.parametrize("impl", ["loop", "matmul"])
def test_view_close_to_pil_given_same_params(gray_images, impl):
    """Same parameters through PIL (the reference) and the batched path: the same image up to PIL's
    8-bit rounding after every step and its box-filter blur."""
    aug = BatchTwoView("dira", 64)
    aug.view.crop_impl = impl
    images, sizes = stack_padded(gray_images)
    params = aug.draw(sizes, torch.Generator().manual_seed(0))["view1"]
    params.jitter.apply[:] = True
    out = aug.view.finish(aug.view.crop(images, params), params)
    for i, img in enumerate(gray_images):
        p = params[i]
        x = TF.resized_crop(Image.fromarray(img), *p.boxes.tolist(), [64, 64])
        for op in p.jitter.order.tolist():
            x = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue][op](
                x, float(p.jitter.factors[op]))
        x = x.filter(ImageFilter.GaussianBlur(radius=float(p.sigma))) if p.blur else x
        x = TF.hflip(x) if p.flip else x
        diff = (out[i, 0] - torch.from_numpy(np.asarray(x, dtype=np.float32) / 255)).abs()
        assert diff.mean() < 2 / 255 and diff.max() < 5 / 255, (i, float(diff.mean()) * 255, float(diff.max()) * 255)


@pytest.mark.parametrize("flip_target", [False, True])
def test_target_is_view1_crop_before_colour_and_flip(gray_images, flip_target):
    aug = BatchTwoView("dira", 32, flip_target=flip_target, with_clean_view=True)
    images, sizes = stack_padded(gray_images)
    params = aug.draw(sizes, torch.Generator().manual_seed(0))
    v1 = params["view1"]
    v1.jitter.apply[:], v1.blur[:], v1.flip[:] = False, False, torch.arange(8) % 2 == 0
    params["distort1"].kind[:] = NONE
    y1, y2, target, clean = aug.apply(images, params)
    assert torch.equal(y1, clean) and torch.equal(y1[:, :1].expand(-1, 3, -1, -1), y1)
    flipped = target.flip(-1)
    for i in range(8):
        expect_same = not v1.flip[i] or flip_target
        assert torch.equal(y1[i, :1], target[i] if expect_same else flipped[i]), i
    di = BatchTwoView("di", 32)(images, sizes)
    assert len(di) == 2 and di[0].shape == (8, 3, 32, 32)


def _epoch_rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("val_loss")]


def test_train_from_cache_matches_files_path(xray, tmp_path, tiny_argv, tiny_lists):
    images, train_list, val_list = tiny_lists
    # a cache at the sample's native 256 px keeps the decoded pixels as they are
    for lst in (train_list, val_list):
        cache_data.build_list_cache(images, lst, tmp_path / "cache", 256, progress=False, log=lambda s: None)
    common = ("--mode", "dira", "--epochs", "2", "--lr", "0.1")
    with pytest.raises(FileNotFoundError, match="prepare_chestxray14.py"):
        train.main(tiny_argv(*common, "--data_path", "cache", "--cache_dir", str(tmp_path / "nothing"),
                             out=tmp_path / "x"))
    files = train.main(tiny_argv(*common, out=tmp_path / "files"))
    cached = train.main(tiny_argv(*common, "--data_path", "cache", "--cache_dir", str(tmp_path / "cache"),
                                  "--cache_size", "256", "--augment_on", "device", out=tmp_path / "cache_run"))
    assert (cached / "checkpoint.pth").is_file() and (cached / "D_checkpoint.pth").is_file()
    assert (cached / "restoration_epoch0001.png").is_file()
    a, b = _epoch_rows(files), _epoch_rows(cached)
    assert len(a) == len(b) == 2
    # Within noise: over seeds 0-2 the files path's epoch losses spread by up to ~0.2 (dis) and ~25 %
    # (restoration); a wrong target or distortion moves the restoration loss by a factor of 2 or more.
    for ra, rb in zip(a, b):
        assert abs(float(ra["train_loss"]) - float(rb["train_loss"])) < 0.4
        assert 0.6 < float(rb["train_res_loss"]) / float(ra["train_res_loss"]) < 1.6


def test_workers_loader_and_prepare_cache(xray, tmp_path):
    out = tmp_path / "lists"
    prepare_chestxray14.main([str(xray), "--out", str(out), "--cache", str(tmp_path / "cache"),
                              "--cache_size", "64"])
    val = out / "Xray14_val_official.txt"
    cache = cache_data.open_list_cache(val, tmp_path / "cache", 64)
    assert len(cache) == len(val.read_text().split("\n")) - 1 and min(cache[0].shape) == 64
    args = train.parse_args(["imgs", "--img_size", "32", "--mode", "dir"])
    loader = cache_data.make_loader(cache, None, 4, 1, torch.device("cpu"), cache_data.cache_augment(args),
                                    "workers")
    y1, y2, target = next(iter(loader))
    assert y1.shape == (4, 3, 32, 32) and target.shape == (4, 1, 32, 32) and 0 <= float(y1.min())
    assert cache_data.augment_device("auto", torch.device("cpu")) == "workers"


def test_bench_data_path_functions_run(tmp_path):
    from dira import bench

    bench.make_pngs(tmp_path, 4, 96)
    reads, augmented, on_device = bench.cached_loader_benchmark(tmp_path, 0, 2, 1, cache_size=64, img_size=32)
    assert reads > 0 and augmented > 0 and on_device > 0
    ips, wait = bench.pipeline_benchmark(tmp_path, "dira", 2, torch.device("cpu"), 0, steps=1, amp="none",
                                         channels_last=False, arch="resnet18", img_size=32, moco_k=8, cache_size=64)
    assert ips > 0 and 0 <= wait < 1


def test_resume_from_cache_equals_uninterrupted(tmp_path, tiny_argv, tiny_lists):
    """Device-side draws come from the checkpointed global RNG, so --resume stays exact on this path."""
    images, train_list, val_list = tiny_lists
    for lst in (train_list, val_list):
        cache_data.build_list_cache(images, lst, tmp_path / "cache", 256, progress=False, log=lambda s: None)
    common = ("--mode", "dir", "--preview_images", "0", "--max_steps_per_epoch", "1", "--data_path", "cache",
              "--cache_dir", str(tmp_path / "cache"), "--cache_size", "256", "--augment_on", "device")
    straight = train.main(tiny_argv(*common, "--epochs", "2", out=tmp_path / "a"))
    first = train.main(tiny_argv(*common, "--epochs", "1", out=tmp_path / "b"))
    resumed = train.main(tiny_argv(*common, "--epochs", "2", "--resume", str(first / "checkpoint.pth"),
                                   out=tmp_path / "b"))
    a = torch.load(straight / "checkpoint.pth", weights_only=True)["state_dict"]
    b = torch.load(resumed / "checkpoint.pth", weights_only=True)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
