"""Soft Dice, as the Models Genesis family's fine-tuning uses it, and its multi-class form.

    Dice(p, y) = (2 * sum(p * y) + s) / (sum(p) + sum(y) + s)        loss = 1 - Dice

The smoothing `s` (1.0 by default, as in the Semantic Genesis / TransVW README snippet) keeps the loss
defined on empty masks: an empty prediction of an empty mask scores Dice 1.
"""

import torch


def dice_coef_loss(y_true, y_pred, smooth=1.0):
    """The READMEs' `torch_dice_coef_loss`: one Dice over all voxels of the whole batch."""
    y_true, y_pred = torch.flatten(y_true), torch.flatten(y_pred)
    intersection = torch.sum(y_true * y_pred)
    return 1.0 - (2.0 * intersection + smooth) / (torch.sum(y_true) + torch.sum(y_pred) + smooth)


def dice_score(probs, target, smooth=1.0, dims=None):
    """Soft Dice per sample and channel: N x C x ... -> N x C (dims: the axes summed, default spatial)."""
    if probs.shape != target.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} differ in shape")
    dims = tuple(range(2, probs.dim())) if dims is None else dims
    target = target.to(probs.dtype)
    intersection = (probs * target).sum(dims)
    return (2.0 * intersection + smooth) / (probs.sum(dims) + target.sum(dims) + smooth)


def soft_dice_loss(probs, target_onehot, smooth=1.0, reduction="mean"):
    """1 - Dice per sample and class (N x C x ...), reduced by 'mean', 'sum' or 'none' (N x C)."""
    loss = 1.0 - dice_score(probs, target_onehot, smooth)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def multiclass_dice_loss(logits, labels, smooth=1.0, include_background=False):
    """Soft Dice on softmax(logits) against integer labels N x ... (values 0..C-1)."""
    n_classes = logits.shape[1]
    probs = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(labels.long(), n_classes).movedim(-1, 1).to(probs.dtype)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    return soft_dice_loss(probs, onehot, smooth)
