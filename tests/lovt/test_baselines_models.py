"""Baseline objectives against hand-computed values, the per-epoch schedule (incl. PixelPro's zero-lr bug),
and short trainings whose exported backbone_weights.pt loads into the evaluation with every tensor matched."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from lovt.baselines.models import PPM, byol_loss, nt_xent, warmup_cosine_lr
from lovt.baselines.train import train_baseline
from lovt.evaluation.backbone import load_resnet50


def test_byol_and_nt_xent_by_hand():
    a = torch.tensor([[1.0, 0.0]])
    assert byol_loss(a, a).item() == pytest.approx(0.0) and byol_loss(a, -a).item() == pytest.approx(4.0)
    assert byol_loss(a, torch.tensor([[0.0, 3.0]])).item() == pytest.approx(2.0)
    # 2 images, views identical per image, images orthogonal: each row has logits (pos 1/t, neg 0, neg 0)
    z_i = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert nt_xent(z_i, z_i.clone(), t).item() == pytest.approx(expected, rel=1e-5)


def test_ppm_on_a_single_position_is_the_transform():
    ppm = PPM(8)
    x = torch.randn(2, 8, 1, 1)
    assert torch.allclose(ppm(x), ppm.transform(x), atol=1e-6)  # relu(cos(x, x))^2 = 1
    x = torch.randn(1, 8, 2, 2)
    g = ppm.transform(x).flatten(2)
    xn = torch.nn.functional.normalize(x.flatten(2), dim=1)
    w = torch.relu(xn[0].t() @ xn[0]) ** 2
    assert torch.allclose(ppm(x).flatten(2)[0, :, 0], (g[0] * w[0]).sum(1), atol=1e-5)


def test_warmup_cosine_schedule_and_pixelpro_bug():
    lrs = [warmup_cosine_lr(e, 1e-4, 1, 100) for e in range(100)]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(1e-4) and lrs[50] == pytest.approx(0.5e-4 * (1 + math.cos(
        math.pi * 49 / 99))) and lrs[-1] < 1e-7
    fixed = [warmup_cosine_lr(e, 1e-3, 0, 100) for e in range(100)]
    assert fixed[0] == pytest.approx(1e-3) and all(b < a for a, b in zip(fixed, fixed[1:]))
    assert all(warmup_cosine_lr(e, 1e-3, 0, 100, original_zero_warmup_bug=True) == 0.0 for e in range(100))


class Tiny(torch.utils.data.Dataset):
    """8 random grey images with 5 binary labels (items as lovt.data's ImageListDataset)."""

    def __init__(self, n=8):
        rng = np.random.default_rng(0)
        self.images = [Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)) for _ in range(n)]
        self.targets = torch.tensor(rng.integers(0, 2, (n, 5)), dtype=torch.float)
        self.targets[0], self.targets[1] = 1, 0  # every label has both classes (AUROC defined)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"scan": self.images[i], "target": self.targets[i]}


def _train(config, out, **kw):
    data = {"train": Tiny(4), "validation": Tiny(4)}  # one batch per epoch
    args = dict(input_size=32, load_size=40, batch_size=4, max_epochs=1, progress=False)
    if kw.get("init_weights"):
        return train_baseline(config, data, out, **{**args, **kw})
    with pytest.warns(UserWarning, match="random init"):  # the original starts from ImageNet
        return train_baseline(config, data, out, **{**args, **kw})


@pytest.mark.parametrize("config", ["chexpert_30", "simclr_30", pytest.param("byol_100", marks=pytest.mark.slow),
                                    pytest.param("pixelpro_100", marks=pytest.mark.slow)])
def test_baseline_trains_and_exports_a_complete_resnet(config, tmp_path):
    init = torch.load(_init_weights(tmp_path), weights_only=True)
    # 2 epochs: BYOL and SimCLR train epoch 0 at lr 0 (1 warm-up epoch, as the original)
    export = _train(config, tmp_path / "run", init_weights=tmp_path / "init.pt", max_epochs=2)
    resnet = load_resnet50(export)  # every ResNet tensor matched (fc, if any, ignored)
    trained = torch.load(export, weights_only=True)
    assert set(trained) - {"fc.weight", "fc.bias"} == set(resnet.state_dict())
    assert not torch.equal(trained["layer4.2.conv3.weight"], init["layer4.2.conv3.weight"])  # it trained
    assert (tmp_path / "run" / "metrics.csv").is_file() and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def _init_weights(tmp_path):
    import torchvision
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "init.pt")
    return tmp_path / "init.pt"


def test_pixelpro_original_schedule_leaves_the_weights(tmp_path):
    init = torch.load(_init_weights(tmp_path), weights_only=True)
    export = _train("pixelpro_30", tmp_path / "bug", init_weights=tmp_path / "init.pt", original_zero_warmup_bug=True)
    trained = torch.load(export, weights_only=True)
    assert torch.equal(trained["layer4.2.conv3.weight"], init["layer4.2.conv3.weight"])  # lr = 0: no change
    assert not torch.equal(trained["bn1.running_mean"], init["bn1.running_mean"])  # only BN statistics move


def test_resume_equals_uninterrupted(tmp_path):
    full = torch.load(_train("simclr_100", tmp_path / "full", max_epochs=2), weights_only=True)
    _train("simclr_100", tmp_path / "part", max_epochs=1)
    resumed = torch.load(_train("simclr_100", tmp_path / "part", max_epochs=2, resume=True), weights_only=True)
    assert all(torch.allclose(full[k].float(), resumed[k].float(), atol=1e-6) for k in full)


def test_normalization_is_half_unless_asked():
    from lovt.baselines.train import normalization

    ds = Tiny(2)
    ds.stats = {"num_samples": 2, "scan": {"pixel_mean": 0.4, "pixel_std": 0.3}}
    assert normalization({"train": ds}, False) == (0.5, 0.5)  # the original's baselines
    assert normalization({"train": ds}, True) == (0.4, 0.3)
    with pytest.warns(UserWarning, match="no scan statistics"):
        assert normalization({"train": Tiny(2)}, True) == (0.5, 0.5)
