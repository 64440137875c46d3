"""Downstream metrics of LoVT's localized evaluation, written from their definitions.

- `DetectionMAP`: the RSNA-challenge mAP the original computes with bes-dev's `MeanAveragePrecision2d`
  (IoU thresholds 0.40:0.05:0.75, 'soft' COCO-like matching, 101-point interpolated AP, "+1" pixel IoU).
- `FROC`: the object-CXR challenge fROC (a prediction hits when its box centre lies in a ground-truth box;
  sensitivities at 0.125 ... 8 false positives per image, averaged).
- `SegmentationMetrics`: dataset-level (micro) Dice per target with torchmetrics' binary F1 at threshold
  0.5, plus precision, recall, IoU and the per-image Dice averaged over positive images.

Boxes everywhere are (x, y, w, h) with (x, y) the top-left corner, as in the downstream csv files.
"""

import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex, BinaryPrecision, BinaryRecall

MAP_IOU_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
RECALL_THRESHOLDS = np.arange(0.0, 1.01, 0.01)  # 101 points, 0.00 ... 1.00
FROC_FPS = (0.125, 0.25, 0.5, 1, 2, 4, 8)


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def xywh_to_xyxy(boxes):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def box_iou_plus1(a, b):
    """IoU of corner boxes a (Nx4) and b (Mx4) with the "+1" pixel convention (a box x1..x2 covers
    x2 - x1 + 1 pixels), as bes-dev's and the YOLOv3 code's IoU; returns NxM."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.maximum(rb - lt + 1.0, 0.0), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2] + 1.0, axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2] + 1.0, axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def interpolated_ap(precision, recall, recall_thresholds=RECALL_THRESHOLDS):
    """AP = mean over recall thresholds t of max(precision where recall >= t), 0 where recall never
    reaches t (COCO's 101-point interpolation as bes-dev computes it)."""
    ap = 0.0
    for t in recall_thresholds:
        reached = recall >= t
        ap += (precision[reached].max() if reached.any() else 0.0) / len(recall_thresholds)
    return float(ap)


def _match(iou_row, matched, threshold):
    """'soft' matching of one prediction: walk its ground truths by decreasing IoU; the first unmatched
    one with IoU > threshold makes it a true positive; an IoU <= threshold ends the walk (false positive)."""
    for idx in np.argsort(iou_row)[::-1]:
        if iou_row[idx] <= threshold:
            return -1
        if idx not in matched:
            return int(idx)
    return -1


class DetectionMAP:
    """Accumulates predictions over a whole split; `compute()` gives mAP, mAP@0.5, mAP@0.75, <class>_mAP.

    Per class and IoU threshold: all predictions of the split sorted by confidence (stable, descending),
    matched as in `_match` (each ground truth at most once per image), cumulative precision/recall with
    recall = TP / max(#GT, 1), AP by `interpolated_ap`; mAP = mean over thresholds and classes.
    """

    def __init__(self, class_names=("opacity",), iou_thresholds=MAP_IOU_THRESHOLDS,
                 recall_thresholds=RECALL_THRESHOLDS, extra_reported_thresholds=(0.5, 0.75)):
        self.class_names = list(class_names)
        self.iou_thresholds = [float(t) for t in iou_thresholds]
        self.recall_thresholds = np.asarray(recall_thresholds)
        for t in extra_reported_thresholds:
            if not any(np.isclose(t, u) for u in self.iou_thresholds):
                raise ValueError(f"{t} is not one of the IoU thresholds {self.iou_thresholds}")
        self.extra = [u for t in extra_reported_thresholds for u in self.iou_thresholds if np.isclose(t, u)]
        self.reset()

    def reset(self):
        self.num_images = 0
        self.num_gt = np.zeros(len(self.class_names), np.int64)
        self.table = [[] for _ in self.class_names]  # per class: (image, confidence, IoU row)

    def update(self, predictions, targets):
        """predictions: list of {'boxes' Kx4 xywh, 'conf' K, 'classes' K}; targets: {'boxes', 'classes'}."""
        for pred, target in zip(predictions, targets):
            p_boxes, p_conf = xywh_to_xyxy(_numpy(pred["boxes"])), _numpy(pred["conf"]).reshape(-1)
            p_cls = _numpy(pred.get("classes", np.zeros(len(p_conf)))).reshape(-1)
            g_boxes = xywh_to_xyxy(_numpy(target["boxes"]))
            g_cls = _numpy(target.get("classes", np.zeros(len(g_boxes)))).reshape(-1)
            for c in range(len(self.class_names)):
                gt_c, pr = g_boxes[g_cls == c], p_cls == c
                self.num_gt[c] += len(gt_c)
                ious = box_iou_plus1(p_boxes[pr], gt_c) if len(gt_c) else np.zeros((int(pr.sum()), 0))
                for conf, iou_row in zip(p_conf[pr], ious):
                    self.table[c].append((self.num_images, float(conf), iou_row))
            self.num_images += 1

    def average_precision(self, class_id, threshold):
        rows = self.table[class_id]
        order = np.argsort(-np.array([r[1] for r in rows]), kind="stable")
        tp = np.zeros(len(rows))
        matched = {}
        for d, i in enumerate(order):
            image, _, iou_row = rows[i]
            idx = _match(iou_row, matched.setdefault(image, set()), threshold)
            if idx >= 0:
                tp[d] = 1.0
                matched[image].add(idx)
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(1.0 - tp)
        recall = tp_cum / max(float(self.num_gt[class_id]), 1.0)
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        return interpolated_ap(precision, recall, self.recall_thresholds)

    def compute(self):
        ap = np.array([[self.average_precision(c, t) for c in range(len(self.class_names))]
                       for t in self.iou_thresholds])  # thresholds x classes
        out = {"mAP": float(ap.mean())}
        for c, name in enumerate(self.class_names):
            out[f"{name}_mAP"] = float(ap[:, c].mean())
        for t in self.extra:
            out[f"mAP@{t:g}"] = float(ap[self.iou_thresholds.index(t)].mean())
        return out


class FROC:
    """Object-CXR fROC. Predictions of all images sorted by probability; a prediction whose box centre
    lies inside (borders included) a ground-truth box of its image hits every such box not hit before;
    one inside no box is a false positive. When FP / #images first reaches the next of `fps`, the
    sensitivity (hit boxes / all boxes) is recorded (at most one threshold per prediction, as the
    original). fROC = mean of the recorded sensitivities, the list padded with its last value; with none
    recorded, the final sensitivity (1.0 when there is no box at all).

    `pad_with_final=True` pads with the final sensitivity instead of the last recorded one (the
    original's padding ignores hits after the last threshold reached).
    """

    def __init__(self, fps=FROC_FPS, pad_with_final=False):
        self.fps = tuple(fps)
        self.pad_with_final = pad_with_final
        self.reset()

    def reset(self):
        self.preds = []  # (probability, image index, centre x, centre y)
        self.gt = []

    def update(self, predictions, targets):
        for pred, target in zip(predictions, targets):
            image = len(self.gt)
            self.gt.append(xywh_to_xyxy(_numpy(target["boxes"])))
            boxes = _numpy(pred["boxes"]).reshape(-1, 4)
            centres = boxes[:, :2] + boxes[:, 2:] / 2
            for prob, (cx, cy) in zip(_numpy(pred["conf"]).reshape(-1), centres):
                self.preds.append((float(prob), image, float(cx), float(cy)))

    def compute(self):
        num_images, num_boxes = len(self.gt), sum(len(g) for g in self.gt)
        if num_images == 0:
            raise ValueError("FROC.compute() called before any update()")
        order = sorted(range(len(self.preds)), key=lambda i: -self.preds[i][0])  # stable
        hit, fps_reached, sens = set(), 0, []
        false_positives = 0
        for i in order:
            _, image, cx, cy = self.preds[i]
            boxes = self.gt[image]
            inside = (boxes[:, 0] <= cx) & (cx <= boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy <= boxes[:, 3])
            hit.update((image, int(b)) for b in np.flatnonzero(inside))
            false_positives += int(not inside.any())
            if false_positives / num_images >= self.fps[fps_reached]:
                sens.append(len(hit) / num_boxes)
                fps_reached += 1
                if fps_reached == len(self.fps):
                    break
        final = len(hit) / num_boxes if num_boxes else 1.0
        if not sens:
            return final
        pad = final if self.pad_with_final else sens[-1]
        return float(np.mean(sens + [pad] * (len(self.fps) - len(sens))))


class SegmentationMetrics:
    """Per target: `<t>_dice` (2TP / (2TP + FP + FN) over every pixel of the split, torchmetrics' binary
    F1 on probabilities > 0.5 (torchmetrics >= 1 thresholds with '>', the original's 0.x with '>=', which
    differs only for a logit of exactly 0); 0 when the split has no positive pixel and none is predicted),
    `<t>_precision`, `<t>_recall`, `<t>_iou`, `<t>_pos_dice` (mean per-image Dice over images whose
    mask is not empty); `avg_dice` = mean of the targets' Dice."""

    def __init__(self, target_names, threshold=0.5):
        self.target_names = list(target_names)
        self.threshold = threshold
        self.metrics = [MetricCollection({"dice": BinaryF1Score(threshold), "precision": BinaryPrecision(threshold),
                                          "recall": BinaryRecall(threshold), "iou": BinaryJaccardIndex(threshold)})
                        for _ in self.target_names]
        self.reset()

    def reset(self):
        for m in self.metrics:
            m.reset()
        self.pos_dice = [[] for _ in self.target_names]

    @torch.no_grad()
    def update(self, probs, masks):
        """probs: BxTxHxW probabilities; masks: BxTxHxW in {0, 1}."""
        probs, masks = probs.detach().float().cpu(), masks.detach().long().cpu()
        for t, m in enumerate(self.metrics):
            m.update(probs[:, t], masks[:, t])
            pred, gt = probs[:, t] > self.threshold, masks[:, t] > 0
            inter = (pred & gt).flatten(1).sum(1)
            denom = pred.flatten(1).sum(1) + gt.flatten(1).sum(1)
            for i in torch.nonzero(gt.flatten(1).any(1)).flatten():
                self.pos_dice[t].append(float(2 * inter[i] / denom[i]))

    def compute(self):
        out = {}
        for name, m, pos in zip(self.target_names, self.metrics, self.pos_dice):
            for key, value in m.compute().items():
                out[f"{name}_{key}"] = float(value)
            out[f"{name}_pos_dice"] = float(np.mean(pos)) if pos else 0.0
        out["avg_dice"] = float(np.mean([out[f"{n}_dice"] for n in self.target_names]))
        return out
