import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from shared.genesis.ct_volumes import (
    VolumeReadError,
    find_volumes,
    normalize_hu,
    prepare_dataset,
    read_volume,
    split_patients,
    volume_id,
)


def write_mhd(path, hu_xyz):
    """A LUNA16-style .mhd/.raw pair from an (x, y, z) int16 array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(hu_xyz.transpose(2, 1, 0)).astype(np.int16))
    image.SetSpacing((0.7, 0.7, 2.5))
    sitk.WriteImage(image, str(path))
    return path


def ramp(shape=(12, 10, 8)):
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (x * 200 + y * 10 + z - 1200).astype(np.int16)  # spans below -1000 and above 1000 HU


def test_mhd_reads_as_xyz_clipped_and_scaled(tmp_path):
    hu = ramp()
    vol = read_volume(write_mhd(tmp_path / "a.mhd", hu))
    assert vol.shape == (12, 10, 8) and vol.dtype == np.float32
    np.testing.assert_allclose(vol, (np.clip(hu, -1000, 1000) + 1000) / 2000, atol=1e-6)
    assert vol.min() == 0.0 and vol.max() == 1.0
    raw = read_volume(tmp_path / "a.mhd", normalize=False)
    np.testing.assert_array_equal(raw, hu)


def test_nifti_reads_in_index_order(tmp_path):
    hu = ramp((9, 7, 5))
    nib.save(nib.Nifti1Image(hu, np.diag([-1.0, -1.0, 2.0, 1.0])), tmp_path / "img0001.nii.gz")
    vol = read_volume(tmp_path / "img0001.nii.gz")
    np.testing.assert_allclose(vol, normalize_hu(hu))
    assert volume_id(tmp_path / "img0001.nii.gz") == "img0001"


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    path = write_mhd(tmp_path / "bad.mhd", ramp())
    raw = tmp_path / "bad.raw"
    raw.write_bytes(raw.read_bytes()[:100])  # truncated pixel data
    with pytest.raises(VolumeReadError, match="bad.mhd"):
        read_volume(path)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(VolumeReadError, match="junk.nii.gz"):
        read_volume(tmp_path / "junk.nii.gz")
    with pytest.raises(VolumeReadError, match="missing.mhd"):
        read_volume(tmp_path / "missing.mhd")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(VolumeReadError, match="flat.npy.*3-D"):
        read_volume(tmp_path / "flat.npy")


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no volumes found"):
        find_volumes(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_volumes(tmp_path / "nope")


def test_split_is_patient_wise_and_seeded(tmp_path):
    paths = [tmp_path / f"subset{k % 3}" / f"p{k:02d}.mhd" for k in range(20)]
    a = split_patients(paths, val_fraction=0.2, seed=3)
    assert a == split_patients(paths, val_fraction=0.2, seed=3)
    assert sum(v == "validation" for v in a.values()) == 4 and len(a) == 20
    assert a != split_patients(paths, val_fraction=0.2, seed=4)
    by_subset = split_patients(paths, val_subsets=[2])
    assert {k for k, v in by_subset.items() if v == "validation"} == {f"p{k:02d}" for k in range(2, 20, 3)}
    # the same patient listed twice (e.g. .mhd in two folders) is one id, in one split
    assert len(split_patients(paths + paths[:3], 0.2, 3)) == 20


def test_prepare_luna_layout_skips_bad_files_with_warning(tmp_path):
    root = tmp_path / "luna16"
    for k in range(5):
        write_mhd(root / f"subset{k % 2}" / f"1.2.{k}.mhd", ramp((16, 16, 12)) + k)
    write_mhd(root / "subset1" / "1.2.small.mhd", ramp((8, 8, 4)))
    bad = write_mhd(root / "subset0" / "1.2.bad.mhd", ramp((16, 16, 12)))
    bad.with_suffix(".raw").write_bytes(b"\0" * 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        csv_path = prepare_dataset(root, tmp_path / "dataset", val_fraction=0.4, seed=0,
                                   min_shape=(16, 16, 12), progress=False)
    messages = " ".join(str(w.message) for w in caught)
    assert "1.2.bad.mhd" in messages and "1.2.small.mhd" in messages and "smaller" in messages
    train = sorted((tmp_path / "dataset" / "train").glob("*.npy"))
    val = sorted((tmp_path / "dataset" / "validation").glob("*.npy"))
    assert len(train) + len(val) == 5 and len(val) >= 1 and len(train) >= 1
    assert not {p.name for p in train} & {p.name for p in val}
    vol = np.load(train[0])
    assert vol.dtype == np.float32 and vol.shape == (16, 16, 12) and 0 <= vol.min() <= vol.max() <= 1
    assert len(csv_path.read_text().splitlines()) == 6


def test_prepare_float16(tmp_path):
    write_mhd(tmp_path / "in" / "a.mhd", ramp())
    prepare_dataset(tmp_path / "in", tmp_path / "out", val_fraction=0, dtype="float16", progress=False)
    vol = np.load(tmp_path / "out" / "train" / "a.npy")
    assert vol.dtype == np.float16
    np.testing.assert_allclose(vol, normalize_hu(ramp()), atol=5e-4)
    np.testing.assert_allclose(read_volume(tmp_path / "out" / "train" / "a.npy", normalize=False), vol)


def test_prepare_fails_when_nothing_is_usable(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.nii.gz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="a.nii.gz"), pytest.raises(RuntimeError, match="none of the 1"):
        prepare_dataset(tmp_path / "in", tmp_path / "out", progress=False)


def test_imagesTr_folder_ignores_labels(tmp_path):
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(ramp((8, 8, 6)), np.eye(4)), tmp_path / folder / "img0001.nii.gz")
    assert find_volumes(tmp_path) == [tmp_path / "imagesTr" / "img0001.nii.gz"]
