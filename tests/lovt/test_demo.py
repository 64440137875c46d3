"""The LoVT demo's own pieces: BatchNorm re-estimation, the Dice of its raw baseline, the sample supersets."""
import filecmp

import numpy as np
import pytest
import torch

from lovt.demo import pixel_dice, reestimate_batchnorm, sample_superset


def test_reestimated_batchnorm_holds_the_average_over_the_images():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2))
    images = 2.0 + 3.0 * torch.randn(8, 3, 12, 12)
    reestimate_batchnorm(net, images, batch_size=4)
    with torch.no_grad():
        first = net[0](images)
    assert torch.allclose(net[1].running_mean, first.mean((0, 2, 3)), atol=1e-5)  # both batches, equal weight
    assert not torch.allclose(net[1].running_var, torch.ones(4))
    assert not net.training and net[1].momentum == 0.1  # eval mode, the momentum given back
    assert int(net[1].num_batches_tracked) == 2


def test_pixel_dice_counts_every_pixel_of_the_split():
    target = np.zeros((2, 4, 4), bool)
    target[0, :2, :2] = True  # 4 pixels
    pred = np.zeros_like(target)
    pred[0, :2, :1] = True  # 2 of them
    pred[1, 0, 0] = True  # 1 false positive in another image
    assert pixel_dice(pred, target) == pytest.approx(2 * 2 / (3 + 4))
    assert pixel_dice(np.zeros_like(target), np.zeros_like(target)) == 0.0
    assert pixel_dice(np.zeros_like(target), target) == 0.0  # predicting nothing


def test_sample_superset_starts_with_the_shared_sample(sample_data, tmp_path):
    root = sample_superset(sample_data, tmp_path, mimic_patients=31, rsna_images=41)
    shared, larger = sample_data / "rsna-pneumonia", root / "rsna-pneumonia"
    images = sorted(p.name for p in (shared / "stage_2_train_images").iterdir())
    assert len(list((larger / "stage_2_train_images").iterdir())) == 41
    match, mismatch, errors = filecmp.cmpfiles(shared / "stage_2_train_images", larger / "stage_2_train_images",
                                               images, shallow=False)
    assert len(match) == 40 and not mismatch and not errors
    shared_jpg = sorted(p.relative_to(sample_data / "mimic-cxr-jpg")
                        for p in (sample_data / "mimic-cxr-jpg").rglob("*.jpg"))
    larger_jpg = sorted(p.relative_to(root / "mimic-cxr-jpg") for p in (root / "mimic-cxr-jpg").rglob("*.jpg"))
    assert set(shared_jpg) < set(larger_jpg)
    assert all(filecmp.cmp(sample_data / "mimic-cxr-jpg" / p, root / "mimic-cxr-jpg" / p, shallow=False)
               for p in shared_jpg)
    assert sample_superset(sample_data, tmp_path, 31, 41) == root  # written once
