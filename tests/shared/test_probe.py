import numpy as np
import pytest
import torch

from shared.probe import ProbeSet, pooled_features, probe_scores, should_probe, split_indices


def planted(n=300, c=64, classes=2, signal=3.0, seed=0):
    """Gaussian features; the class shifts a few channels by `signal` (0 = pure noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, c))
    for k in range(classes):
        x[y == k, 4 * k:4 * k + 4] += signal
    return x, y


def split(x, y, seed=0):
    tr, te = split_indices(y, 0.3, seed)
    return x[tr], y[tr], x[te], y[te]


@pytest.mark.parametrize("classes", [2, 4])
def test_planted_class_signal_is_found(classes):
    s = probe_scores(*split(*planted(classes=classes)))
    assert s["knn_auroc"] > 0.95 and s["linear_auroc"] > 0.95
    assert s["knn_acc"] > 0.85 and s["linear_acc"] > 0.85
    assert s["n_train"] + s["n_test"] == 300


@pytest.mark.parametrize("classes", [2, 4])
def test_noise_gives_chance(classes):
    s = probe_scores(*split(*planted(classes=classes, signal=0.0)))
    for key in ("knn_auroc", "linear_auroc"):
        assert abs(s[key] - 0.5) < 0.1, (key, s[key])
    assert s["knn_acc"] < 1.0 / classes + 0.15


def multilabel(n=300, c=32, labels=3, signal=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.4).astype(int)
    y[:, 2] = 0  # a label with a single class: left out of the mean, not a crash
    x = rng.normal(size=(n, c))
    x[:, :2] += signal * y[:, :2]
    return x, y


def test_multilabel_planted_and_noise():
    x, y = multilabel()
    s = probe_scores(*split(x, y))
    assert s["knn_auroc"] > 0.9 and s["linear_auroc"] > 0.9
    x, y = multilabel(signal=0.0)
    s = probe_scores(*split(x, y))
    assert abs(s["knn_auroc"] - 0.5) < 0.1 and abs(s["linear_auroc"] - 0.5) < 0.1


def test_deterministic():
    data = split(*planted(classes=3, signal=0.5))
    assert probe_scores(*data, seed=0) == probe_scores(*data, seed=0)


def test_split_is_stratified_and_seeded():
    y = np.array([0] * 80 + [1] * 20)
    tr, te = split_indices(y, 0.25, seed=1)
    assert len(te) == 25 and len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 100
    assert (y[te] == 1).sum() == 5  # 20% positives in the test split, as in the whole set
    assert np.array_equal(te, split_indices(y, 0.25, seed=1)[1])
    assert not np.array_equal(te, split_indices(y, 0.25, seed=2)[1])


def test_bad_input_is_named():
    x, y = planted()
    with pytest.raises(ValueError, match="single class"):
        probe_scores(x, np.zeros(len(x), int), x, y)
    with pytest.raises(ValueError, match="NaN"):
        probe_scores(np.full_like(x, np.nan), y, x, y)
    with pytest.raises(ValueError, match="300 feature rows but 10 labels"):
        probe_scores(x, y[:10], x, y)


@pytest.mark.parametrize("dims", [2, 3])
def test_pooled_features_2d_3d_restore_training_mode(dims):
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    drop = torch.nn.Dropout(0.9)
    net = torch.nn.Sequential(conv(1, 5, 3, padding=1), drop)
    net.train()
    x = torch.randn(7, 1, *([6] * dims))
    batches = [(x[:4], "label"), (x[4:], "label")]
    f1 = pooled_features(net, batches, "cpu")
    assert f1.shape == (7, 5) and f1.dtype == np.float32
    assert net.training  # restored
    # eval mode: dropout off, so two passes agree and equal the plain spatial mean
    np.testing.assert_allclose(f1, pooled_features(net, [x], "cpu"), rtol=1e-6)
    with torch.no_grad():
        expected = net[0](x).flatten(2).mean(-1).numpy()
    np.testing.assert_allclose(f1, expected, rtol=1e-5, atol=1e-6)


def test_probe_set_end_to_end(tmp_path):
    # a random conv encoder on images whose class is a bright square: the probe must see it
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 2
    x = torch.randn(120, 1, 12, 12, generator=g) * 0.3
    x[y == 1, :, 3:9, 3:9] += 2.0
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU())
    ps = ProbeSet.from_labelled(x, y.numpy(), seed=0, name="squares")
    scores = ps.evaluate(enc, "cpu", batch_size=50)
    assert set(scores) == {"probe_knn_acc", "probe_knn_auroc", "probe_linear_acc", "probe_linear_auroc"}
    assert scores["probe_linear_auroc"] > 0.95
    ps.save(tmp_path / "set.pt")
    again = ProbeSet.load(tmp_path / "set.pt")
    assert again.name == "squares" and again.evaluate(enc, "cpu") == scores


def test_should_probe():
    assert [s for s in range(7) if should_probe(s, 3)] == [3, 6]
    assert not any(should_probe(s, 0) for s in range(7))


def test_subsample_keeps_every_class_and_is_seeded():
    from shared.probe import subsample_indices
    y = np.array([0] * 50 + [1] * 6 + [2] * 4)
    for seed in range(5):
        keep = subsample_indices(y, 6, seed)
        assert len(keep) == 6 and set(y[keep]) == {0, 1, 2}
    assert np.array_equal(subsample_indices(y, 6, 1), subsample_indices(y, 6, 1))
    assert np.array_equal(subsample_indices(y, None), np.arange(60))
    assert np.array_equal(subsample_indices(y, 100), np.arange(60))
