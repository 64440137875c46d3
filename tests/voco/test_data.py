import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Resize

from voco.data import (
    SafeDataset,
    VoCoCrops,
    VoCoDataset,
    base_dataset,
    btcv_transforms,
    flatten_batch,
    load_datalist,
    overlap_labels,
    pretrain_transforms,
)
from voco.finetune import get_parser as finetune_parser
from voco.make_json import make_json


def test_overlap_labels_hand_computed():
    # aligned with base crop (1, 2): all of it there
    y = overlap_labels([[96, 192]])
    assert y.shape == (1, 16) and y.dtype == np.float64
    assert y[0, 4 * 1 + 2] == 1.0 and y.sum() == 1.0
    # half-way between (0, 0) and (1, 0) along x
    y = overlap_labels([[48, 0]])[0]
    assert y[0] == 0.5 and y[4] == 0.5 and np.count_nonzero(y) == 2
    # the spec's worked example: centre (251, 181) -> corner (203, 133)
    y = overlap_labels([[203, 133]])[0]
    expected = {9: 85 * 59, 10: 85 * 37, 13: 11 * 59, 14: 11 * 37}
    for k, area in expected.items():
        assert y[k] == pytest.approx(area / 9216)
    assert y[9] == pytest.approx(0.544, abs=1e-3) and np.count_nonzero(y) == 4
    # the farthest allowed corner (centre 335) touches the last row of the grid by 1 voxel
    y = overlap_labels([[287, 287]])[0]
    assert y[10] == pytest.approx(1 / 9216) and y[15] == pytest.approx(95 * 95 / 9216)
    assert y[11] == pytest.approx(95 / 9216) and y[14] == pytest.approx(95 / 9216)
    # tiny geometry (2x2 grid of 32): every label row sums to 1
    rng = np.random.default_rng(0)
    corners = rng.integers(16, 48, size=(50, 2)) - 16
    y = overlap_labels(corners, base_roi=32, num_crops=2)
    assert y.shape == (50, 4)
    np.testing.assert_allclose(y.sum(1), 1.0)


def block_volume(n=2, r=8):
    """Working volume whose base-crop block k = n*i + j has the constant value k + 1."""
    vol = torch.zeros(1, n * r, n * r, r)
    for i in range(n):
        for j in range(n):
            vol[0, i * r:(i + 1) * r, j * r:(j + 1) * r] = n * i + j + 1
    return vol


def test_crop_geometry_and_labels_match_the_volume():
    n, r = 3, 8
    crops = VoCoCrops(roi_small=r, base_roi=r, num_crops=n, sw_batch_size=5, aug=False)
    out = crops(block_volume(n, r), np.random.default_rng(1))
    assert out["image"].shape == (5, 1, r, r, r) and out["crops"].shape == (n * n, 1, r, r, r)
    assert out["labels"].shape == (5, n * n) and out["labels"].dtype == torch.float64
    for k in range(n * n):  # base crop k is block k (i over x outer, j over y inner)
        assert torch.all(out["crops"][k] == k + 1)
    values = torch.arange(1, n * n + 1, dtype=torch.float64)
    for s in range(5):  # a random crop's mean is its label-weighted block value: labels = areas
        assert out["image"][s].double().mean() == pytest.approx(float(out["labels"][s] @ values))
        cx, cy = (out["corners"][s] + r // 2).tolist()
        assert r // 2 <= cx < n * r - r // 2 and r // 2 <= cy < n * r - r // 2


def test_crops_resized_like_monai_resize_and_seeded():
    crops = VoCoCrops(roi_small=8, base_roi=16, num_crops=2, sw_batch_size=2, aug=False)
    vol = torch.rand(1, 32, 32, 16)
    out = crops(vol, np.random.default_rng(3))
    ref = Resize((8, 8, 8), mode="trilinear", align_corners=True)(vol[:, :16, 16:, :])
    torch.testing.assert_close(out["crops"][1], torch.as_tensor(ref))
    aug = VoCoCrops(roi_small=8, base_roi=16, num_crops=2, sw_batch_size=2, aug=True,
                    flip_prob=0.5, rot_prob=0.5, shift_prob=0.5)
    a, b = aug(vol, np.random.default_rng(7)), aug(vol, np.random.default_rng(7))
    torch.testing.assert_close(a["crops"], b["crops"])
    c = aug(vol, np.random.default_rng(8))
    assert not torch.equal(a["crops"], c["crops"])


def test_pipeline_on_sample_ct_and_sample_major_batch(btcv_root):
    items = load_datalist(btcv_root / "btcv.json")
    crops = VoCoCrops(roi_small=16, base_roi=16, num_crops=2, sw_batch_size=2)
    ds = VoCoDataset(items[:2], base_dataset(items[:2], pretrain_transforms(size=crops.volume_size)),
                     crops, skip_bad=False)
    vol = ds.load(0)
    assert tuple(vol.shape) == (1, 32, 32, 16) and 0.0 <= float(vol.min()) and float(vol.max()) <= 1.0
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    img, base, labels = flatten_batch(batch)
    assert img.shape == (4, 1, 16, 16, 16) and base.shape == (8, 1, 16, 16, 16)
    torch.testing.assert_close(img[2], batch["image"][1, 0])  # row b*n + t = crop t of volume b
    torch.testing.assert_close(base[5], batch["crops"][1, 1])
    torch.testing.assert_close(labels.sum(-1), torch.ones(2, 2, dtype=torch.float64))


def _nifti(path, arr):
    nib.save(nib.Nifti1Image(np.asarray(arr), np.eye(4)), str(path))
    return path


def test_bad_inputs_name_the_file(tmp_path):
    crops = VoCoCrops(roi_small=16, base_roi=16, num_crops=2, sw_batch_size=1)
    tf = pretrain_transforms(size=crops.volume_size)
    flat = _nifti(tmp_path / "flat.nii.gz", np.zeros((40, 40), np.int16))
    air = _nifti(tmp_path / "air.nii.gz", np.full((40, 40, 20), -1000, np.int16))
    good = _nifti(tmp_path / "good.nii.gz", np.full((40, 40, 20), 100, np.int16))
    for bad, words in ((flat, "3-D"), (air, "foreground")):
        items = [{"image": str(bad)}]
        ds = VoCoDataset(items, base_dataset(items, tf), crops, skip_bad=False)
        with pytest.raises(ValueError, match=words) as err:
            ds[0]
        assert str(bad) in str(err.value)
    # a long run skips the bad volume with a warning and uses the next one
    items = [{"image": str(air)}, {"image": str(good)}]
    ds = VoCoDataset(items, base_dataset(items, tf), crops, skip_bad=True)
    with pytest.warns(UserWarning, match="air.nii.gz"):
        assert ds[0]["image"].shape == (1, 1, 16, 16, 16)
    # json problems: missing key, missing file
    (tmp_path / "no_image.json").write_text(json.dumps({"training": [{"label": "x.nii.gz"}]}))
    with pytest.raises(KeyError, match="no_image.json.*'image'"):
        load_datalist(tmp_path / "no_image.json")
    (tmp_path / "missing.json").write_text(json.dumps({"training": [{"image": "gone.nii.gz"}]}))
    with pytest.raises(FileNotFoundError, match="gone.nii.gz"):
        load_datalist(tmp_path / "missing.json")
    with pytest.raises(KeyError, match="'training'"):
        (tmp_path / "empty.json").write_text("{}")
        load_datalist(tmp_path / "empty.json")


def test_make_json(tmp_path):
    (tmp_path / "vols" / "sub").mkdir(parents=True)
    (tmp_path / "vols" / "labelsTr").mkdir()
    for name in ("a.nii.gz", "sub/b.nii", "labelsTr/a.nii.gz", "notes.txt"):
        (tmp_path / "vols" / name).write_bytes(b"x")
    spec = make_json(tmp_path / "vols", tmp_path / "list.json", val_fraction=0.5)
    assert sorted(e["image"] for e in spec["training"] + spec["validation"]) == ["a.nii.gz", "sub/b.nii"]
    assert len(spec["validation"]) == 1
    assert len(load_datalist(tmp_path / "list.json", tmp_path / "vols")) == 1


def test_finetune_volume_smaller_than_the_patch_is_padded_and_bad_labels_name_the_file(tmp_path):
    args = finetune_parser().parse_args(["--roi_x", "32", "--roi_y", "32", "--roi_z", "32",
                                         "--sw_batch_size", "2"])
    image = np.full((30, 30, 12), 100, np.int16)  # 1 mm voxels -> 20x20x8 at 1.5 mm, under the 32^3 patch
    label = np.zeros((30, 30, 12), np.uint8)
    label[10:20, 10:20, 4:8] = 6
    items = [{"image": str(_nifti(tmp_path / "small.nii.gz", image)),
              "label": str(_nifti(tmp_path / "small_label.nii.gz", label))}]
    ds = SafeDataset(base_dataset(items, btcv_transforms(args, train=True)), items, skip_bad=False)
    patches = ds[0]
    assert len(patches) == 2 and all(tuple(p["image"].shape) == (1, 32, 32, 32) for p in patches)
    assert all(tuple(p["label"].shape) == (1, 32, 32, 32) for p in patches)
    flat = [{"image": items[0]["image"], "label": str(_nifti(tmp_path / "flat_label.nii.gz", label[:, :, 0]))}]
    ds = SafeDataset(base_dataset(flat, btcv_transforms(args, train=False)), flat, skip_bad=False)
    with pytest.raises(ValueError, match="3-D") as err:
        ds[0]
    assert "flat_label.nii.gz" in str(err.value)
