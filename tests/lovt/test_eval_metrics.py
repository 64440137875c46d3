"""Downstream metrics against values computed by hand."""

import numpy as np
import pytest
import torch

from lovt.evaluation.metrics import FROC, DetectionMAP, SegmentationMetrics, box_iou_plus1


def _t(x):
    return torch.tensor(x, dtype=torch.float)


def test_iou_uses_plus_one_pixel_convention():
    # 10x10-pixel box (0..9) vs its upper 10x6 part (0..9, 0..5): 60 / 100
    assert box_iou_plus1([[0, 0, 9, 9]], [[0, 0, 9, 5]])[0, 0] == pytest.approx(0.6)
    assert box_iou_plus1([[0, 0, 9, 9]], [[20, 20, 29, 29]])[0, 0] == 0.0


def test_map_several_boxes_and_scores():
    # image A: G1, G2; image B: G3.  p1 finds G1, p2 duplicates G1 (soft matching: G1 taken, G2 has IoU 0 -> FP),
    # p3 overlaps G3 with IoU exactly 0.6 (TP only for thresholds < 0.6), p4 hits nothing.  3 GT boxes.
    targets = [{"boxes": _t([[0, 0, 9, 9], [50, 50, 9, 9]]), "classes": torch.zeros(2)},
               {"boxes": _t([[0, 0, 9, 9]]), "classes": torch.zeros(1)}]
    preds = [{"boxes": _t([[0, 0, 9, 9], [0, 0, 9, 9], [100, 100, 5, 5]]), "conf": _t([0.9, 0.8, 0.6]),
              "classes": torch.zeros(3)},
             {"boxes": _t([[0, 0, 9, 5]]), "conf": _t([0.7]), "classes": torch.zeros(1)}]
    m = DetectionMAP()
    m.update(preds, targets)
    out = m.compute()
    # t < 0.6: TP FP TP FP -> precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3:
    #   recall thresholds 0.00..0.33 (34 points) -> 1, 0.34..0.66 (33 points) -> 2/3, the rest 0 -> 56/101
    # t >= 0.6: only p1 is a TP -> recall 1/3 -> 34/101
    assert out["mAP@0.5"] == pytest.approx(56 / 101)
    assert out["mAP@0.75"] == pytest.approx(34 / 101)
    assert out["mAP"] == pytest.approx((4 * 56 + 4 * 34) / 8 / 101)
    assert out["opacity_mAP"] == pytest.approx(out["mAP"])


def test_map_perfect_empty_and_order():
    gt = [{"boxes": _t([[10, 10, 20, 20]]), "classes": torch.zeros(1)}, {"boxes": torch.zeros(0, 4)}]
    perfect = DetectionMAP()
    perfect.update([{"boxes": _t([[10, 10, 20, 20]]), "conf": _t([0.5])}, {"boxes": torch.zeros(0, 4),
                                                                          "conf": torch.zeros(0)}], gt)
    assert perfect.compute()["mAP"] == pytest.approx(1.0)
    nothing = DetectionMAP()
    nothing.update([{"boxes": torch.zeros(0, 4), "conf": torch.zeros(0)}] * 2, gt)
    assert nothing.compute()["mAP"] == 0.0
    # a false positive ranked above the true positive (on the empty image): precision 1/2 at recall 1
    ranked = DetectionMAP()
    ranked.update([{"boxes": _t([[10, 10, 20, 20]]), "conf": _t([0.5])},
                   {"boxes": _t([[0, 0, 5, 5]]), "conf": _t([0.9])}], gt)
    assert ranked.compute()["mAP"] == pytest.approx(0.5)


def test_map_soft_matching_takes_the_next_ground_truth():
    # two overlapping GTs; the second prediction's best GT is taken, so it matches the other one (IoU 0.8)
    gt = [{"boxes": _t([[0, 0, 9, 9], [0, 2, 9, 9]]), "classes": torch.zeros(2)}]
    pred = [{"boxes": _t([[0, 1, 9, 9], [0, 1, 9, 9]]), "conf": _t([0.9, 0.8])}]
    m = DetectionMAP(iou_thresholds=(0.5,), extra_reported_thresholds=(0.5,))
    m.update(pred, gt)
    assert m.compute()["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        DetectionMAP(extra_reported_thresholds=(0.9,))


def _froc_case():
    # image 0 holds B1 (0..10) and B2 (20..30); 7 more images without boxes
    targets = [{"boxes": _t([[0, 0, 10, 10], [20, 20, 10, 10]])}] + [{"boxes": torch.zeros(0, 4)}] * 7
    preds = [{"boxes": _t([[4, 4, 2, 2], [24, 24, 2, 2]]), "conf": _t([0.9, 0.7])},  # centres (5,5), (25,25)
             {"boxes": _t([[50, 50, 4, 4]]), "conf": _t([0.8])}] + [{"boxes": torch.zeros(0, 4),
                                                                     "conf": torch.zeros(0)}] * 6
    return preds, targets


def test_froc_hand_computed_and_padding():
    preds, targets = _froc_case()
    # 0.9 hits B1; 0.8 is an FP -> 1/8 FP per image reaches 0.125: sensitivity 1/2 recorded;
    # 0.7 hits B2 but no further threshold is reached -> [1/2] padded with itself = 0.5
    f = FROC()
    f.update(preds, targets)
    assert f.compute() == pytest.approx(0.5)
    fixed = FROC(pad_with_final=True)
    fixed.update(preds, targets)
    assert fixed.compute() == pytest.approx((0.5 + 6 * 1.0) / 7)


def test_froc_one_threshold_per_prediction_and_borders():
    # 2 images: centre on B1's border is a hit; one FP makes FP/image = 0.5 but records only 0.125's entry
    targets = [{"boxes": _t([[0, 0, 10, 10], [20, 20, 10, 10]])}, {"boxes": torch.zeros(0, 4)}]
    preds = [{"boxes": _t([[8, 8, 4, 4], [24, 24, 2, 2], [90, 90, 2, 2]]), "conf": _t([0.9, 0.7, 0.6])},
             {"boxes": _t([[0, 0, 2, 2]]), "conf": _t([0.8])}]
    f = FROC()
    f.update(preds, targets)
    # 0.9 hit (centre (10,10) on the border); 0.8 FP -> record 1/2; 0.7 hit -> 0.5 >= 0.25 -> record 1;
    # 0.6 FP -> 1.0 >= 0.5 -> record 1; padded with 1 -> (0.5 + 6) / 7
    assert f.compute() == pytest.approx(6.5 / 7)
    empty = FROC()
    empty.update([{"boxes": torch.zeros(0, 4), "conf": torch.zeros(0)}], [{"boxes": torch.zeros(0, 4)}])
    assert empty.compute() == 1.0
    missed = FROC()
    missed.update([{"boxes": torch.zeros(0, 4), "conf": torch.zeros(0)}], [{"boxes": _t([[0, 0, 5, 5]])}])
    assert missed.compute() == 0.0


def _masks(cells, shape=(1, 4, 4)):
    m = torch.zeros(shape)
    for c, y, x in cells:
        m[c, y, x] = 1
    return m


def test_dice_with_empty_masks():
    # image 1: GT 4 pixels, prediction 2 of them + 2 others; image 2: empty GT, empty prediction
    gt = torch.stack([_masks([(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)]), _masks([])])
    pred = torch.stack([_masks([(0, 0, 0), (0, 0, 1), (0, 3, 3), (0, 3, 2)]), _masks([])])
    m = SegmentationMetrics(["opacity"])
    m.update(pred * 0.9, gt)  # probabilities 0.9 / 0
    out = m.compute()
    assert out["opacity_dice"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))  # TP 2, FP 2, FN 2
    assert out["opacity_pos_dice"] == pytest.approx(0.5)  # only image 1 is positive
    assert out["opacity_iou"] == pytest.approx(2 / 6)
    assert out["avg_dice"] == out["opacity_dice"]
    # false positives on the empty image lower the dataset Dice: TP 2, FP 2 + 4, FN 2
    m.reset()
    m.update(torch.stack([pred[0], torch.ones(1, 4, 4) * (torch.arange(16).view(1, 4, 4) < 4)]) * 0.9, gt)
    assert m.compute()["opacity_dice"] == pytest.approx(4 / 12)
    # nothing anywhere: torchmetrics' zero-division value 0
    m.reset()
    m.update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    assert m.compute()["opacity_dice"] == 0.0


def test_dice_threshold_and_average_over_targets():
    gt = torch.stack([torch.cat([_masks([(0, 0, 0)]), _masks([(0, 1, 1)])])])  # 1 x 2 targets x 4 x 4
    probs = torch.zeros(1, 2, 4, 4)
    probs[0, 0, 0, 0] = 0.51  # counts (> 0.5)
    probs[0, 1, 1, 1] = 0.5  # misses
    m = SegmentationMetrics(["a", "b"])
    m.update(probs, gt)
    out = m.compute()
    assert out["a_dice"] == 1.0 and out["b_dice"] == 0.0
    assert out["avg_dice"] == pytest.approx(0.5)
    assert np.isclose(out["a_precision"], 1.0) and out["b_recall"] == 0.0
