import random
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from shared.genesis.self_discovery.engine import (
    extract_features,
    feature_files,
    list_volumes,
    load_autoencoder,
    load_resized,
    save_features,
    train_autoencoder,
)
from shared.genesis.self_discovery.models import Autoencoder3D
from shared.genesis.self_discovery.patterns import (
    PatternConfig,
    dense_tissue_score,
    find_corner,
    generate_patterns,
    output_name,
)
from shared.genesis.self_discovery.volumes import VolumeStore, resize_cube
from shared.runfolder import RunFolderClash

CUBE = (16, 16, 8)


def small_config(**kw):
    base = dict(input_rows=16, input_cols=16, input_deps=8, crop_rows=16, crop_cols=16, nb_instances=4,
                nb_instances_val=2, nb_classes=5, classes_per_block=2, minPatchSize=12, maxPatchSize=20,
                distance_threshold=2, len_border=2, len_border_z=1, lung_max=0.5, seed=0, png=False)
    base.update(kw)
    return PatternConfig(**base)


def make_volumes(root, n_train=8, n_val=3, shape=(40, 36, 20), hu=False, seed=0):
    """Lung-like volumes in [0, 1]: mostly dark, some bright blobs; the last training volume is short in z."""
    rng = np.random.default_rng(seed)
    paths = {"train": [], "validation": []}
    for split, n in (("train", n_train), ("validation", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            s = (shape[0], shape[1], 12) if split == "train" and i == n - 1 else shape
            vol = rng.uniform(0.0, 0.3, s).astype(np.float32)
            vol[rng.uniform(size=s) > 0.8] = 0.7
            if hu:
                vol = vol * 2000 - 1000
            path = root / split / f"p{split[0]}{i:02d}.npy"
            np.save(path, vol)
            paths[split].append(path)
    feats = {k: rng.normal(size=(len(v), 6)).astype(np.float32) for k, v in paths.items()}
    return paths, feats


def run(tmp_path, cfg, hu=False, name="out"):
    paths, feats = make_volumes(tmp_path / "data", hu=hu)
    written, meta = generate_patterns(paths["train"], paths["validation"], feats["train"], feats["validation"],
                                      tmp_path / name, cfg, progress=False)
    return paths, written, meta


def test_dense_tissue_score_matches_the_original_loop():
    rng = np.random.default_rng(1)
    window = rng.uniform(size=(5, 4, 9))
    depth, thr, len_depth = 6, 0.6, 3
    expected = 0.0
    for d in range(depth):
        for i in range(window.shape[0]):
            for j in range(window.shape[1]):
                k_hit = len_depth - 1
                for k in range(len_depth):
                    if window[i, j, d + k] >= thr:
                        k_hit = k
                        break
                expected += 1.0 - k_hit / (len_depth - 1)
    assert dense_tissue_score(window, depth, thr, len_depth) == pytest.approx(expected)


def test_files_shapes_labels_and_complete_blocks(tmp_path):
    cfg = small_config(multi_res=True)
    paths, written, meta = run(tmp_path, cfg)
    out = tmp_path / "out"
    # 5 classes in blocks of 2: fold1.0 and fold2.0 full, fold3.0 holds the last class (the original lost it)
    for block, classes in ((1, [0, 1]), (2, [2, 3]), (3, [4])):
        for res in (1, 2, 3):
            data = np.load(out / output_name("train_data", res, block))
            labels = np.load(out / output_name("train_label", res, block))
            assert data.shape == (len(classes) * 4, *CUBE) and data.dtype == np.float32
            assert labels.shape == (len(classes) * 4, 1) and labels.dtype == np.float64
            np.testing.assert_array_equal(labels[:, 0], np.repeat(classes, 4))  # class-major, global index
            assert 0.0 <= data.min() and data.max() <= 1.0 and data.std(axis=(1, 2, 3)).min() > 0
        val = np.load(out / output_name("val_data", 1, block))
        val_labels = np.load(out / output_name("val_label", 1, block))
        assert val.shape == (len(classes) * 2, *CUBE)
        np.testing.assert_array_equal(val_labels[:, 0], np.repeat(classes, 2))
    assert (out / "train_data1_vwGen_ex_ref_fold1.0.npy").exists()
    assert len(written) == 3 * 8 and not list(out.glob(".*partial"))


def test_metadata_parses_back_and_no_crop_leaves_its_volume(tmp_path):
    cfg = small_config(multi_res=True)
    paths, _, meta_path = run(tmp_path, cfg)
    meta = pd.read_csv(meta_path)
    assert len(meta) == 5 * 4 * 3 + 5 * 2
    assert set(meta.columns) >= {"split", "resolution", "class", "fold", "row", "path", "x", "y", "z", "size"}
    for r in meta.itertuples():
        shape = np.load(r.path, mmap_mode="r").shape
        assert r.x >= 0 and r.y >= 0 and r.z >= 0
        assert r.x + r.size <= shape[0] and r.y + r.size <= shape[1] and r.z + r.depth <= shape[2]
    # training and validation crops of a class share the corner, and come from the right split
    res1 = meta[meta.resolution == 1]
    assert (res1.groupby("class")[["x", "y", "z"]].nunique() == 1).all().all()
    assert set(meta[meta.split == "validation"].path) <= {str(p) for p in paths["validation"]}
    # a crop rebuilt from its metadata row equals the saved cube
    r = meta[(meta.split == "train") & (meta.resolution == 1)].iloc[5]
    saved = np.load(tmp_path / "out" / output_name("train_data", 1, int(float(r.fold))))[r.row]
    np.testing.assert_array_equal(np.load(r.path)[r.x:r.x + 16, r.y:r.y + 16, r.z:r.z + 8], saved)
    # the short training volume (z = 12) is only used where the cube fits
    short = meta[meta.path == str(paths["train"][-1])]
    assert (short.z + 8 <= 12).all()
    # the reference is each class's first, nearest, training patient
    first = meta[(meta.split == "train") & (meta.resolution == 1) & (meta.neighbour_rank == 0)]
    assert first.is_reference.all() and (first.feature_distance == 0).all()


def test_deterministic(tmp_path):
    cfg = small_config(multi_res=True, nb_classes=2)
    _, written_a, _ = run(tmp_path, cfg, name="a")
    _, written_b, _ = run(tmp_path, cfg, name="b")
    for a, b in zip(written_a, written_b):
        np.testing.assert_array_equal(np.load(a), np.load(b))


def test_without_multi_res_no_blank_files_unless_asked(tmp_path):
    run(tmp_path, small_config(nb_classes=2), name="fixed")
    assert sorted(p.name for p in (tmp_path / "fixed").glob("*.npy")) == sorted(
        output_name(k, 1, 1) for k in ("train_data", "train_label", "val_data", "val_label"))
    run(tmp_path, small_config(nb_classes=2, write_blank_resolutions=True), name="orig")
    blank = np.load(tmp_path / "orig" / output_name("train_data", 2, 1))
    assert blank.shape == (8, *CUBE) and not blank.any()
    assert not np.load(tmp_path / "orig" / output_name("train_label", 3, 1)).any()


def test_drop_last_sample_reproduces_the_off_by_one(tmp_path):
    _, _, meta = run(tmp_path, small_config(drop_last_sample=True), name="orig")
    out = tmp_path / "orig"
    assert len(pd.read_csv(meta)) == 2 * (2 * 4 - 1) + 2 * (2 * 2 - 1)  # metadata lists the saved rows only
    assert np.load(out / output_name("train_data", 1, 1)).shape[0] == 2 * 4 - 1
    assert np.load(out / output_name("val_label", 1, 2)).shape == (2 * 2 - 1, 1)
    assert not (out / output_name("train_data", 1, 3)).exists()  # the trailing class is never saved


def test_raw_hu_volumes_give_unit_range_crops_unless_raw_crops(tmp_path):
    run(tmp_path, small_config(nb_classes=1), hu=True, name="fixed")
    fixed = np.load(tmp_path / "fixed" / output_name("train_data", 1, 1))
    assert 0.0 <= fixed.min() and fixed.max() <= 1.0
    run(tmp_path, small_config(nb_classes=1, raw_crops=True), hu=True, name="raw")
    raw = np.load(tmp_path / "raw" / output_name("train_data", 1, 1))
    np.testing.assert_allclose((np.clip(raw, -1000, 1000) + 1000) / 2000, fixed, atol=1e-6)
    assert raw.min() < -500


def test_sticky_rejection_flag(tmp_path):
    paths, _ = make_volumes(tmp_path, n_train=2, n_val=0)
    store = VolumeStore(paths["train"])
    first = random.Random(7)
    cfg = small_config()
    hi = [40 - 16 - 1 - 2, 36 - 16 - 1 - 2, 20 - 8 - 3 - 1 - 1]
    taken = np.array([[first.randint(2, hi[0]), first.randint(2, hi[1]), first.randint(1, hi[2])]])
    fixed = find_corner(store, 0, taken, cfg, random.Random(7), 0.425)
    assert fixed is not None and np.linalg.norm(fixed - taken[0]) >= 2
    sticky = find_corner(store, 0, taken, small_config(sticky_rejection=True), random.Random(7), 0.425)
    assert sticky is None  # one collision rejected every later trial


def test_small_volumes_warn_and_too_few_usable_is_an_error(tmp_path):
    paths, feats = make_volumes(tmp_path / "data", n_train=4, n_val=2)
    np.save(paths["train"][0], np.zeros((10, 10, 4), np.float32))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ValueError, match=paths["train"][0].name):
        warnings.simplefilter("always")
        generate_patterns(paths["train"], paths["validation"], feats["train"], feats["validation"],
                          tmp_path / "out", small_config(nb_classes=1), progress=False)
    assert any(paths["train"][0].name in str(w.message) and "smaller than the crop" in str(w.message)
               for w in caught)
    with pytest.raises(ValueError, match="4 training volumes but 3"):
        generate_patterns(paths["train"], paths["validation"], feats["train"][:3], feats["validation"],
                          tmp_path / "out", small_config(nb_classes=1), progress=False)


def test_no_acceptable_corner_is_a_clear_error_without_partial_files(tmp_path):
    paths, feats = make_volumes(tmp_path / "data")
    with pytest.warns(UserWarning, match="no corner found"), pytest.raises(RuntimeError, match="every one of the 8"):
        generate_patterns(paths["train"], paths["validation"], feats["train"], feats["validation"],
                          tmp_path / "out", small_config(lung_max=0.0), progress=False)
    assert not list((tmp_path / "out").glob(".*partial")) and not list((tmp_path / "out").glob("*.npy"))


def test_prev_coordinates_regenerates_the_same_classes(tmp_path):
    cfg = small_config(nb_classes=2)
    paths, written, meta = run(tmp_path, cfg, name="a")
    feats = make_volumes(tmp_path / "data")[1]
    generate_patterns(paths["train"], paths["validation"], feats["train"], feats["validation"],
                      tmp_path / "b", small_config(nb_classes=3, seed=5), prev_coordinates=meta, progress=False)
    first_block = np.load(tmp_path / "b" / output_name("train_data", 1, 1))
    np.testing.assert_array_equal(first_block, np.load(written[0]))
    log = tmp_path / "a" / "train_data1_vwGen_exRef.txt"
    generate_patterns(paths["train"], paths["validation"], feats["train"], feats["validation"],
                      tmp_path / "c", small_config(nb_classes=2, seed=9), prev_coordinates=log, progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "c" / output_name("train_data", 1, 1)), first_block)


def test_pattern_png(tmp_path):
    run(tmp_path, small_config(nb_classes=2, png=True))
    png = tmp_path / "out" / "patterns.png"
    assert png.stat().st_size > 1000


def make_prepared(root, n_train=4, n_val=2, shape=(20, 20, 12)):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("validation", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            vol = np.clip(rng.normal(0.3, 0.1, shape), 0, 1).astype(np.float32)
            vol[: shape[0] // 2] += 0.4 * (i % 2)
            np.save(root / split / f"v{i}.npy", vol)
    return root


@pytest.mark.parametrize("arch", ["Unet", "Vnet"])
def test_autoencoder_shapes_and_keras_layer_names(arch):
    model = Autoencoder3D(arch, width=2)
    x = torch.rand(3, 1, 16, 16, 8)
    assert model(x).shape == x.shape and 0 < model(x).min() and model(x).max() < 1
    assert model.encode(x).shape == (3, 32, 2, 2, 1) and model.features(x).shape == (3, 32)
    keys = list(model.state_dict())
    assert keys[0] == "layers.depth_0.conv.weight" and "layers.depth_13.bn.running_var" in keys
    assert keys[-1] == "final_conv.bias" and "layers.depth_14.conv.weight" not in keys
    # the first decoder conv sees [up, skip] (32 + 16 channels) only in the U-Net (768 at width 32)
    assert model.layers["depth_8"].conv.in_channels == (32 + 16 if arch == "Unet" else 32)
    full = Autoencoder3D(arch)
    assert full.feature_dim == 512
    # the Keras U-Net's 16,320,257 trainable parameters; the skip-less one lacks 27*86016
    assert sum(p.numel() for p in full.parameters()) == {"Unet": 16_320_257, "Vnet": 13_997_825}[arch]


def test_autoencoder_loss_falls_and_resume_is_exact(tmp_path):
    data = make_prepared(tmp_path / "data")
    kw = dict(arch="Unet", width=2, input_shape=(16, 16, 8), batch_size=2, lr=1e-2, seed=3, progress=False,
              tensorboard=False)
    best = train_autoencoder(data, tmp_path / "full", nb_epoch=6, **kw)
    metrics = pd.read_csv(tmp_path / "full" / "Unet_autoencoder.metrics.csv")
    assert len(metrics) == 6 and metrics.loss.iloc[-1] < metrics.loss.iloc[0]
    ckpt = torch.load(best, weights_only=True)
    assert ckpt["config"] == {"arch": "Unet", "width": 2, "input_shape": [16, 16, 8]}
    train_autoencoder(data, tmp_path / "part", nb_epoch=3, **kw)
    train_autoencoder(data, tmp_path / "part", nb_epoch=6, resume=True, **kw)
    a = torch.load(tmp_path / "full" / "Unet_autoencoder_last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "part" / "Unet_autoencoder_last.pt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert len(pd.read_csv(tmp_path / "part" / "Unet_autoencoder.metrics.csv")) == 6
    # the same autoencoder name (Checkpoints/Autoencoder/Unet_autoencoder.*) with other settings: refused, named
    with pytest.raises(RunFolderClash, match="Unet_autoencoder.run.json holds a run of 'Unet_autoencoder' with "
                                             "other settings \\(lr: 0.01 there, 0.02 now\\).*--model_path"):
        train_autoencoder(data, tmp_path / "part", nb_epoch=7, resume=True, **dict(kw, lr=2e-2))


def test_features_are_per_patient_and_skip_unreadable(tmp_path):
    data = make_prepared(tmp_path / "data", n_train=3)
    (data / "train" / "v9_broken.npy").write_bytes(b"not numpy")
    model = Autoencoder3D("Vnet", width=2)
    with pytest.warns(UserWarning, match="v9_broken.npy"):
        feats, kept = extract_features(model, list_volumes(data / "train"), (16, 16, 8), batch_size=2,
                                       progress=False)
    assert feats.shape == (3, 32) and feats.dtype == np.float32 and [p.name for p in kept] == [
        "v0.npy", "v1.npy", "v2.npy"]
    one, _ = extract_features(model, kept[:1], (16, 16, 8), batch_size=1, progress=False)
    np.testing.assert_allclose(one[0], feats[0], atol=1e-5)  # inference BN: independent of the batch
    with pytest.warns(UserWarning, match="v9_broken.npy"):  # reading in worker processes: same result
        parallel, kept2 = load_resized(list_volumes(data / "train"), (16, 16, 8), progress=False, workers=2)
    np.testing.assert_array_equal(parallel, load_resized(kept, (16, 16, 8), progress=False)[0])
    assert kept2 == kept
    npy, listing = save_features(feats, kept, tmp_path / "train_features.npy")
    assert feature_files(npy, data / "train") == [p.resolve() for p in kept]
    model_path = tmp_path / "ae.pt"
    torch.save({"state_dict": model.state_dict(), "config": {"arch": "Vnet", "width": 2}}, model_path)
    assert load_autoencoder(model_path).arch == "Vnet"
    with pytest.raises(ValueError, match="--arch Vnet"):
        load_autoencoder(model_path, arch="Unet")


def test_too_few_volumes_for_a_batch_is_a_clear_error(tmp_path):
    data = make_prepared(tmp_path / "data", n_train=3, n_val=1)
    with pytest.raises(ValueError, match="fewer than --batch_size 2"):
        train_autoencoder(data, tmp_path / "ae", width=2, input_shape=(16, 16, 8), batch_size=2, nb_epoch=1,
                          progress=False, tensorboard=False)
    with pytest.raises(FileNotFoundError, match="no .npy volumes"):
        list_volumes(tmp_path)


def test_resize_cube_keeps_range_and_constants():
    rng = np.random.default_rng(0)
    cube = rng.uniform(size=(20, 20, 8)).astype(np.float32)
    assert resize_cube(cube, (20, 20, 8)) is not None and np.array_equal(resize_cube(cube, (20, 20, 8)), cube)
    for shape in ((16, 16, 8), (25, 25, 8)):
        out = resize_cube(cube, shape)
        assert out.shape == shape and out.dtype == np.float32
        assert cube.min() <= out.min() and out.max() <= cube.max()  # linear + Gaussian: no overshoot
    np.testing.assert_allclose(resize_cube(np.full((30, 30, 8), 0.25, np.float32), (16, 16, 8)), 0.25, rtol=1e-6)
    # anti-aliasing (scikit-image's default when shrinking): voxel noise is averaged away, not sampled
    noise = rng.uniform(size=(64, 64, 8)).astype(np.float32)
    assert resize_cube(noise, (16, 16, 8)).std() < 0.4 * noise.std()


def test_run_self_discovery_on_sample_ct(sample_data, tmp_path):
    from shared.genesis.self_discovery import run_self_discovery

    out = run_self_discovery(sample_data / "luna16", tmp_path, nb_classes=3, nb_instances=4, nb_instances_val=2)
    assert out["autoencoder"].exists() and out["png"].exists() and out["metadata"].exists()
    assert np.load(out["train_features"]).shape == (12, 64)  # 16 scans, a quarter for validation; 16 * width
    labels = np.load(out["save"] / output_name("train_label", 3, 1))[:, 0]
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 4))
    assert np.load(out["save"] / output_name("val_data", 1, 1)).shape == (6, 32, 32, 16)
