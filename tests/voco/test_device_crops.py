"""--crops_on device: the same crops, labels and augmentation as the worker path, and the augmentation
drawn as MONAI's own RandFlip / RandRotate90 / RandShiftIntensity draw it (the original's path)."""

import itertools

import numpy as np
import pytest
import torch
from monai.transforms import Compose, Flip, RandFlip, RandRotate90, RandShiftIntensity, Rotate90, ShiftIntensity
from scipy import stats

from voco import train
from voco.data import (
    VoCoCrops,
    VoCoDataset,
    _plain,
    base_dataset,
    load_datalist,
    overlap_labels,
    pretrain_transforms,
)
from voco.device_crops import (
    VolumesWithParameters,
    augment_batch,
    device_crops,
    draw_parameters,
    overlap_labels_torch,
    resolve_crops_on,
)
from voco.engine import train_step
from voco.models import VoCo

CPU = torch.device("cpu")


def _device_batch(crops, volumes, seeds):
    items = [{"volume": v, **draw_parameters(crops, np.random.default_rng(s))} for v, s in zip(volumes, seeds)]
    return device_crops(torch.utils.data.default_collate(items), crops, CPU)


def test_same_parameters_give_identical_outputs():
    crops = VoCoCrops(roi_small=8, base_roi=12, num_crops=2, sw_batch_size=3, flip_prob=0.5, rot_prob=0.5,
                      shift_prob=0.5)
    volumes = [torch.rand(1, 24, 24, 12) for _ in range(4)]
    seeds = [[0, 1, i] for i in range(4)]
    out = _device_batch(crops, volumes, seeds)
    ref = torch.utils.data.default_collate([crops(v, np.random.default_rng(s)) for v, s in zip(volumes, seeds)])
    for key in ("image", "crops", "labels", "corners"):
        assert out[key].shape == ref[key].shape and out[key].dtype == ref[key].dtype, key
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=0, msg=key)
    params = draw_parameters(crops, np.random.default_rng(seeds[0]))  # every branch was exercised
    assert params["flips"].any() and (params["rot_k"] > 0).any() and (params["shift"] != 0).any()


def test_labels_and_augmentation_pieces():
    corners = np.random.default_rng(0).integers(0, 289, size=(40, 2))
    torch.testing.assert_close(overlap_labels_torch(torch.from_numpy(corners)),
                               torch.from_numpy(overlap_labels(corners)), rtol=0, atol=0)
    x = torch.arange(2 * 27, dtype=torch.float32).reshape(2, 1, 3, 3, 3)
    out = augment_batch(x.clone(), torch.tensor([[True, False, False], [False, False, True]]),
                        torch.tensor([1, 0]), torch.tensor([0.0, 0.5], dtype=torch.float64), [0, 1, 2], (0, 1))
    torch.testing.assert_close(out[0], torch.rot90(x[0].flip(1), 1, (1, 2)))
    torch.testing.assert_close(out[1], x[1].flip(3) + 0.5)
    # what MONAI's public array transforms compute for the same parameters
    torch.testing.assert_close(out[0], _plain(Rotate90(k=1, spatial_axes=(0, 1))(Flip(spatial_axis=0)(x[0]))))
    torch.testing.assert_close(out[1], _plain(ShiftIntensity(0.5)(Flip(spatial_axis=2)(x[1]))))


def test_wrong_volume_size_is_named(tmp_path):
    crops = VoCoCrops(roi_small=8, base_roi=8, num_crops=2, sw_batch_size=1)

    class Base:
        def __getitem__(self, i):
            return {"image": torch.rand(1, 16, 16, 9)}

    ds = VolumesWithParameters(VoCoDataset([{"image": "stale/vol.nii.gz"}], Base(), crops, skip_bad=False))
    with pytest.raises(ValueError, match=r"stale/vol.nii.gz.*\(16, 16, 9\)"):
        ds[0]
    assert resolve_crops_on("auto", "cpu") == "workers" and resolve_crops_on("auto", "cuda") == "device"


def _signature(out, plain):
    """Per crop: the index of the first flip/rot90 combination that maps the plain crop onto the output up
    to a constant (a canonical name of the orientation), and that constant (the intensity shift)."""
    combos = list(itertools.product((0, 1), (0, 1), (0, 1), range(4)))
    names, shifts = [], []
    for o, p in zip(out.reshape(-1, *out.shape[-3:]), plain.reshape(-1, *plain.shape[-3:])):
        for c, (f0, f1, f2, k) in enumerate(combos):
            g = p
            for axis, f in enumerate((f0, f1, f2)):
                g = g.flip(axis) if f else g
            d = o - torch.rot90(g, k, (0, 1))
            if float(d.max() - d.min()) < 1e-5:
                names.append(c)
                shifts.append(float(d.mean()))
                break
        else:
            raise AssertionError("output crop is no flip/rot90 of the plain crop")
    return np.array(names), np.array(shifts)


def _contingency_p(a, b):
    values = np.union1d(a, b)
    table = np.array([[np.sum(a == v) for v in values], [np.sum(b == v) for v in values]])
    return stats.chi2_contingency(table)[1]


def _monai_augmented(plain_crops, seed, flip_prob=0.2, rot_prob=0.2, shift_prob=0.1):
    """The original's augmentation: MONAI's random transforms, one crop at a time."""
    aug = Compose([RandFlip(prob=flip_prob, spatial_axis=0), RandFlip(prob=flip_prob, spatial_axis=1),
                   RandFlip(prob=flip_prob, spatial_axis=2), RandRotate90(prob=rot_prob, max_k=3),
                   RandShiftIntensity(offsets=0.1, prob=shift_prob)])
    aug.set_random_state(seed=seed)
    return torch.stack([_plain(aug(c)) for c in plain_crops])


def test_distributions_match_the_monai_path():
    """Many draws with disjoint seeds: the orientations (flips + rot90) and intensity shifts of the device
    path are distributed as MONAI's RandFlip / RandRotate90 / RandShiftIntensity give them (the original's
    per-crop path); its crop positions and overlap labels as the original's randint centres."""
    crops = VoCoCrops(roi_small=6, base_roi=6, num_crops=3, sw_batch_size=3)
    plain = VoCoCrops(roi_small=6, base_roi=6, num_crops=3, sw_batch_size=3, aug=False)
    vol = torch.rand(1, 18, 18, 6)
    n = 240
    device = [_device_batch(crops, [vol] * 24, [[2, i] for i in range(a, a + 24)]) for a in range(0, n, 24)]
    device_plain = [plain(vol, np.random.default_rng([2, i])) for i in range(n)]
    reference_plain = [plain(vol, np.random.default_rng([1, i])) for i in range(n)]
    legacy = np.random.RandomState(0)  # the original: np.random.randint(half, n r - half) per crop centre
    reference_corners = legacy.randint(3, 15, size=(n * 3, 2)) - 3

    def stacked(outs, key):
        return torch.cat([o[key].reshape(-1, *o[key].shape[-(2 if key in ("labels", "corners") else 4):])
                          for o in outs])

    def every_crop(outs):
        return torch.cat((stacked(outs, "image"), stacked(outs, "crops")))

    results = {}
    ref_in = every_crop(reference_plain)
    for name, out, plain_out in (("device", every_crop(device), every_crop(device_plain)),
                                 ("monai", _monai_augmented(ref_in, 3), ref_in)):
        orientation, shift = _signature(out, plain_out)
        results[name] = {"orientation": orientation, "shifted": np.abs(shift) > 1e-6, "shift": shift}
    d, m = results["device"], results["monai"]
    d["corners"], m["corners"] = stacked(device, "corners").numpy().ravel(), reference_corners.ravel()
    d["nonzero_labels"] = (stacked(device, "labels") > 0).sum(-1).numpy()
    m["nonzero_labels"] = (torch.from_numpy(overlap_labels(reference_corners, 6, 3)) > 0).sum(-1).numpy()
    assert d["corners"].min() == 0 and d["corners"].max() == 11  # centres randint(half, n r - half)
    for key in ("corners", "nonzero_labels", "orientation", "shifted"):
        assert _contingency_p(d[key], m[key]) > 1e-3, key
    assert stats.ks_2samp(d["shift"][d["shifted"]], m["shift"][m["shifted"]]).pvalue > 1e-3
    for r in (d, m):  # and both are the distribution the parameters say
        assert abs(np.mean(r["orientation"] == 0) - 0.8**4) < 0.04  # no flip on 3 axes, no rot90
        assert abs(np.mean(r["shifted"]) - 0.1) < 0.02
        assert np.abs(r["shift"]).max() <= 0.1


def test_training_step_with_device_crops_loss_falls(btcv_root):
    items = load_datalist(btcv_root / "btcv.json")[:1]
    crops = VoCoCrops(roi_small=64, base_roi=32, num_crops=2, sw_batch_size=1)
    ds = VolumesWithParameters(VoCoDataset(items, base_dataset(items, pretrain_transforms(size=crops.volume_size)),
                                           crops, skip_bad=False))
    batch = ds.device_crops(torch.utils.data.default_collate([ds[0]]), CPU)
    assert batch["image"].shape == (1, 1, 1, 64, 64, 64) and batch["crops"].shape == (1, 4, 1, 64, 64, 64)
    torch.manual_seed(0)
    model = VoCo(feature_size=12, hidden_dim=16, out_dim=16, window_size=2, use_checkpoint=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, amsgrad=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = [train_step(model, model.student, batch, opt, sched, scaler, CPU, False, torch.float16)["loss"]
              for _ in range(3)]
    assert losses[-1] < losses[0], losses


def test_train_cli_with_device_crops_trains_like_the_worker_path(btcv_root, tmp_path, capsys):
    """Same seed, same crops: a step with --crops_on device ends bit-identical to one with --crops_on workers
    (so resuming a run with the other setting, or on another machine, changes nothing)."""
    finals = {}
    for where in ("workers", "device"):
        state = train.main(["--logdir", str(tmp_path / where), "--json_list", str(btcv_root / "btcv.json"),
                            "--batch_size", "1", "--num_steps", "1", "--lrdecay", "False", "--lr", "1e-3",
                            "--workers", "0", "--feature_size", "12", "--hidden_dim", "32", "--out_dim", "32",
                            "--window_size", "2", "--use_checkpoint", "False", "--base_roi", "32",
                            "--num_crops", "2", "--roi_x", "64", "--sw_batch_size", "1", "--crops_on", where])
        assert state["global_step"] == 1 and f"crops on {where}" in capsys.readouterr().out
        finals[where] = torch.load(tmp_path / where / "final_model.pth", weights_only=True)
    for k, v in finals["workers"].items():
        torch.testing.assert_close(finals["device"][k], v, rtol=0, atol=0, msg=k)
