"""Downstream heads: parameter counts of the original, output shapes, YOLO targets, losses."""

import math

import pytest
import torch

from lovt.evaluation.backbone import ResNetFeatureExtractor, count_parameters
from lovt.evaluation.heads import LinearSegmenter, UNetSegmenter, YOLOv3Detector, YOLOv3Loss, dice_loss


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return ResNetFeatureExtractor()


def test_backbone_layers_and_sizes(backbone):
    assert count_parameters(backbone) == 23_508_032  # ResNet-50 without fc
    f = backbone(torch.randn(1, 3, 64, 64), ("input", "conv1", "conv3", "conv5"))
    assert {k: tuple(v.shape[1:]) for k, v in f.items()} == {
        "input": (3, 64, 64), "conv1": (64, 32, 32), "conv3": (512, 8, 8), "conv5": (2048, 2, 2)}


def test_yolo_parameter_count_and_output_shapes(backbone):
    det = YOLOv3Detector(backbone, img_size=64)
    assert sum(p.numel() for p in det.head_parameters()) == 21_626_934  # the original's YOLOv3 head, C = 1
    outs = det(torch.randn(2, 3, 64, 64), frozen_backbone=True)
    assert [tuple(o.shape) for o in outs] == [(2, 18, 2, 2), (2, 18, 4, 4), (2, 18, 8, 8)]
    preds = det.predict(outs)
    assert len(preds) == 2 and preds[0]["boxes"].shape[1] == 4
    assert len(preds[0]["boxes"]) == len(preds[0]["conf"]) == len(preds[0]["classes"])


def test_yolo_targets_by_hand():
    crit = YOLOv3Loss(((64.64, 48.6), (84.24, 106.92), (201.42, 176.04)), 1, 224)
    anchors = crit.anchors / 32  # grid units at 7x7
    # box (96, 96, 64, 48): centre (128, 120) -> grid (4.0, 3.75), size (2, 1.5) -> anchor 0 (IoU 0.986)
    mask, noobj, tx, ty, tw, th, _ = crit.build_targets([{"boxes": torch.tensor([[96.0, 96, 64, 48]])}],
                                                        anchors, 7, 7, "cpu")
    assert mask.sum() == 1 and mask[0, 0, 3, 4] == 1
    assert tx[0, 0, 3, 4] == pytest.approx(0.0) and ty[0, 0, 3, 4] == pytest.approx(0.75)
    assert tw[0, 0, 3, 4] == pytest.approx(math.log(2 / (64.64 / 32)), rel=1e-5)
    assert th[0, 0, 3, 4] == pytest.approx(math.log(1.5 / (48.6 / 32)), rel=1e-5)
    assert noobj[0, 0, 3, 4] == 0 and noobj[0, 1, 3, 4] == 1 and noobj.sum() == 3 * 49 - 1


def test_yolo_loss_of_a_perfect_prediction_is_lower_and_decode_is_exact():
    crit = YOLOv3Loss(((64.64, 48.6), (84.24, 106.92), (201.42, 176.04)), 1, 224)
    target = [{"boxes": torch.tensor([[96.0, 96, 64, 48]])}]
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    out = torch.full((1, 3, 6, 7, 7), -20.0)  # B x A x (5+C) x H x W
    out[0, :, 2:4] = 0.0
    out[0, 0, :, 3, 4] = torch.tensor([0.0, logit(0.75), math.log(2 / 2.02), math.log(1.5 / 1.51875), 20.0, 20.0])
    out[0, 0, 0, 3, 4] = -20.0  # sigmoid -> ~0 = tx
    good, parts = crit(out.view(1, 18, 7, 7), target)
    bad, _ = crit(torch.zeros(1, 18, 7, 7), target)
    assert good < 0.01 < bad
    decoded = crit.decode(out.view(1, 18, 7, 7))[0]
    best = decoded[decoded[:, 4].argmax()]
    assert best[:4].tolist() == pytest.approx([128.0, 120.0, 64.0, 48.0], abs=1e-3)


def test_yolo_head_learns_a_box(backbone):
    torch.manual_seed(0)
    det = YOLOv3Detector(backbone, img_size=64)
    backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[10.0, 12, 20, 16]]), "classes": torch.zeros(1)},
               {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0)}]
    opt = torch.optim.Adam(det.head_parameters(), lr=1e-3)
    losses = []
    for _ in range(8):  # the head's BatchNorm makes the first Adam steps jumpy
        loss, parts = det.loss(det(x, frozen_backbone=True), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"x", "y", "w", "h", "conf", "cls"}
    assert losses[-1] < 0.7 * losses[0]
    assert all(p.grad is None for p in backbone.parameters())  # frozen backbone gets no gradient


def test_unet_and_linear_shapes_and_dice_loss(backbone):
    x = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, 0, 10:30, 10:30] = 1
    unet = UNetSegmenter(backbone, num_targets=1)
    logits = unet(x, frozen_backbone=True)
    assert logits.shape == (2, 1, 64, 64)
    loss = dice_loss()(logits, masks)
    loss.backward()
    assert 0 < loss.item() <= 1 and unet.out.weight.grad is not None
    lin = LinearSegmenter(backbone, num_targets=8)
    assert lin(x).shape == (2, 8, 64, 64)
    assert sum(p.numel() for p in lin.head_parameters()) == 2048 * 8 + 8
    # Dice loss of a perfect logit map is ~0, multi-target masks are one flattened binary problem
    perfect = (masks * 40 - 20).repeat(1, 8, 1, 1)
    assert dice_loss()(perfect, masks.repeat(1, 8, 1, 1)).item() < 1e-6


def test_perfect_yolo_outputs_give_map_one(backbone):
    """Raw outputs encoding the ground-truth box exactly -> NMS -> the box, mAP 1 (decode/NMS/metric chain)."""
    from lovt.evaluation.metrics import DetectionMAP

    det = YOLOv3Detector(backbone, img_size=224)
    outs = [torch.full((1, 18, s, s), -20.0) for s in (7, 14, 28)]
    for o in outs:
        o.view(1, 3, 6, *o.shape[2:])[:, :, 2:4] = 0.0
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    cell = outs[0].view(1, 3, 6, 7, 7)[0, 0, :, 3, 4]  # scale 0, anchor 0, row 3, col 4
    cell[:] = torch.tensor([-20.0, logit(0.75), math.log(64 / 64.64), math.log(48 / 48.6), 20.0, 20.0])
    preds = det.predict(outs)
    assert len(preds[0]["boxes"]) == 1
    assert preds[0]["boxes"][0].tolist() == pytest.approx([96.0, 96.0, 64.0, 48.0], abs=1e-3)
    m = DetectionMAP()
    m.update(preds, [{"boxes": torch.tensor([[96.0, 96, 64, 48]]), "classes": torch.zeros(1)}])
    assert m.compute()["mAP"] == pytest.approx(1.0)


def test_bench_records():
    from lovt.evaluation.bench import head_records

    records = head_records(device="cpu", input_size=32, batch_size=2, heads=("linear",), repeats=1)
    assert [r["name"] for r in records] == ["downstream_linear_frozen_train_images_per_s"]
    assert records[0]["unit"] == "images/s" and records[0]["value"] > 0 and records[0]["config"]["input_size"] == 32
