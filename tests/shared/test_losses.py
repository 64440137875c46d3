import pytest
import torch

from shared.losses import dice_coef_loss, dice_score, multiclass_dice_loss, soft_dice_loss


def test_dice_coef_loss_hand_computed():
    y_true = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # intersection 1, sums 2 and 2: Dice = (2*1 + 1) / (2 + 2 + 1) = 0.6
    assert dice_coef_loss(y_true, torch.tensor([1.0, 0.0, 1.0, 0.0])).item() == pytest.approx(0.4)
    # soft prediction: intersection 0.5, sums 1 and 2: Dice = (1 + 1) / (3 + 1) = 0.5
    soft = dice_coef_loss(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.full((4,), 0.5))
    assert soft.item() == pytest.approx(0.5)
    # smoothing 0: plain Dice 2*1/4
    assert dice_coef_loss(y_true, torch.tensor([1.0, 0.0, 1.0, 0.0]), smooth=0).item() == pytest.approx(0.5)


def test_empty_masks():
    empty = torch.zeros(2, 1, 4, 4)
    assert dice_coef_loss(empty, empty).item() == pytest.approx(0.0)  # nothing to find, nothing found
    # empty target, 16 false-positive voxels of 1.0: Dice = 1 / (16 + 1)
    full = torch.ones(1, 1, 4, 4)
    assert dice_coef_loss(torch.zeros(1, 1, 4, 4), full).item() == pytest.approx(1 - 1 / 17)


def test_dice_score_is_per_sample_and_channel():
    probs = torch.zeros(2, 2, 2, 2)
    target = torch.zeros(2, 2, 2, 2)
    probs[0, 0] = 1
    target[0, 0] = 1            # sample 0 class 0: perfect (8 + 1) / (4 + 4 + 1)
    target[1, 1, 0, 0] = 1      # sample 1 class 1: missed one voxel: 1 / (1 + 1)
    score = dice_score(probs, target)
    assert score.shape == (2, 2)
    assert score[0, 0].item() == pytest.approx(1.0)
    assert score[1, 1].item() == pytest.approx(0.5)
    assert score[0, 1].item() == pytest.approx(1.0)  # both empty
    loss = soft_dice_loss(probs, target, reduction="none")
    assert torch.allclose(loss, 1 - score)
    assert soft_dice_loss(probs, target).item() == pytest.approx((1 - score).mean().item())
    with pytest.raises(ValueError, match="differ in shape"):
        dice_score(probs, target[:, :1])
    with pytest.raises(ValueError, match="reduction"):
        soft_dice_loss(probs, target, reduction="max")


def test_multiclass_dice_loss_is_low_for_confident_correct_logits():
    labels = torch.randint(0, 3, (2, 5, 5))
    good = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float() * 20
    bad = torch.roll(good, 1, dims=1)
    assert multiclass_dice_loss(good, labels).item() < 0.01
    assert multiclass_dice_loss(bad, labels).item() > 0.9
