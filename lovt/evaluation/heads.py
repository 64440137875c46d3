"""The three downstream heads of LoVT's localized evaluation, on a ResNet-50 backbone.

- `YOLOv3Detector`: YOLOv3 head on conv3/conv4/conv5 with BobLiu20's loss and NMS decoding.
- `UNetSegmenter`: ResNet-50 U-Net (kevinlu1211's ResUNet decoder) with skips from input, conv1..conv4.
- `LinearSegmenter`: 1x1 conv on conv5, logits bilinearly upsampled to the mask size.

Every model has `backbone` (a ResNetFeatureExtractor), `head_parameters()`, and
`forward(x, frozen_backbone)`; with `frozen_backbone` the backbone runs under no_grad (callers also put
it in eval mode so BatchNorm statistics stay frozen). Detection boxes are (x, y, w, h) in input pixels.
"""

from collections import OrderedDict

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .backbone import ResNetFeatureExtractor

# pixels in the 224 frame, per scale (stride 32, 16, 8); COCO's YOLOv3 anchors x 0.54 (64.64 kept as published)
ANCHORS_224 = (((64.64, 48.6), (84.24, 106.92), (201.42, 176.04)),
               ((16.2, 32.94), (33.48, 24.3), (31.86, 64.26)),
               ((5.4, 7.02), (8.64, 16.2), (17.82, 12.42)))


def _features(backbone, x, layers, frozen):
    if frozen:
        with torch.no_grad():
            return backbone(x, layers)
    return backbone(x, layers)


def cbl(c_in, c_out, k):
    """conv (no bias) + BatchNorm + LeakyReLU(0.1)."""
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(c_in, c_out, k, 1, (k - 1) // 2, bias=False),
                                     bn=nn.BatchNorm2d(c_out), relu=nn.LeakyReLU(0.1)))


def yolo_embedding(filters, c_in, c_out):
    """5 alternating 1x1/3x3 CBLs (the 5th output is the branch tap), a 3x3 CBL and the 1x1 predictor."""
    f0, f1 = filters
    m = nn.ModuleList([cbl(c_in, f0, 1), cbl(f0, f1, 3), cbl(f1, f0, 1), cbl(f0, f1, 3), cbl(f1, f0, 1),
                       cbl(f0, f1, 3)])
    m.add_module("conv_out", nn.Conv2d(f1, c_out, 1, 1, 0, bias=True))
    return m


def iou_plus1(box, boxes):
    """IoU of one corner box with each of `boxes` (Nx4) with the "+1" pixel convention."""
    lt, rb = torch.maximum(box[:2], boxes[:, :2]), torch.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt + 1).clamp(min=0).prod(1)
    area = (box[2:] - box[:2] + 1).prod()
    areas = (boxes[:, 2:] - boxes[:, :2] + 1).prod(1)
    return inter / (area + areas - inter + 1e-16)


class YOLOv3Loss(nn.Module):
    """Loss of one scale (BobLiu20's YOLOv3 loss): prediction B x A x H x W x (5 + C) with x, y, conf, cls
    through a sigmoid and w, h raw. For each ground-truth box: centre cell (gi, gj) in grid units, the
    anchor of highest IoU with (0, 0, w, h) ("+1" convention) is the positive; cells/anchors with IoU > 0.5
    leave the no-object mask. L = 2.5 BCE(x) + 2.5 BCE(y) + 2.5 MSE(w) + 2.5 MSE(h) + BCE(conf, mask)
    + 0.5 BCE(conf * noobj, 0) (+ class BCE, 0 for one class); each a mean over all B*A*H*W cells."""

    def __init__(self, anchors, num_classes, img_size, ignore_threshold=0.5, lambda_xy=2.5, lambda_wh=2.5):
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float))  # A x 2, input pixels
        self.num_anchors, self.num_classes, self.img_size = len(anchors), num_classes, img_size
        self.ignore_threshold, self.lambda_xy, self.lambda_wh = ignore_threshold, lambda_xy, lambda_wh

    def split(self, out):
        b, _, h, w = out.shape
        p = out.view(b, self.num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2)  # BxAxHxWx(5+C)
        return torch.sigmoid(p[..., 0]), torch.sigmoid(p[..., 1]), p[..., 2], p[..., 3], \
            torch.sigmoid(p[..., 4]), torch.sigmoid(p[..., 5:])

    @torch.no_grad()
    def build_targets(self, targets, anchors, h, w, device):
        b = len(targets)
        mask = torch.zeros(b, self.num_anchors, h, w, device=device)
        noobj = torch.ones_like(mask)
        tx, ty, tw, th = (torch.zeros_like(mask) for _ in range(4))
        tcls = torch.zeros(b, self.num_anchors, h, w, self.num_classes, device=device)
        anchor_boxes = torch.zeros(self.num_anchors, 4, device=device)
        anchor_boxes[:, 2:] = anchors
        for i, target in enumerate(targets):
            boxes = target["boxes"].to(device).float().reshape(-1, 4)
            classes = target.get("classes", torch.zeros(len(boxes))).long()
            gw, gh = boxes[:, 2] * w / self.img_size, boxes[:, 3] * h / self.img_size
            gx, gy = boxes[:, 0] * w / self.img_size + gw / 2, boxes[:, 1] * h / self.img_size + gh / 2
            gi, gj = gx.int().clamp_max(w - 1), gy.int().clamp_max(h - 1)
            for k in range(len(boxes)):
                ious = iou_plus1(torch.stack([gx.new_zeros(()), gx.new_zeros(()), gw[k], gh[k]]), anchor_boxes)
                noobj[i, ious > self.ignore_threshold, gj[k], gi[k]] = 0
                n = int(torch.argmax(ious))
                mask[i, n, gj[k], gi[k]] = 1
                tx[i, n, gj[k], gi[k]], ty[i, n, gj[k], gi[k]] = gx[k] - gi[k], gy[k] - gj[k]
                tw[i, n, gj[k], gi[k]] = torch.log(gw[k] / anchors[n, 0] + 1e-16)
                th[i, n, gj[k], gi[k]] = torch.log(gh[k] / anchors[n, 1] + 1e-16)
                tcls[i, n, gj[k], gi[k], 0 if self.num_classes == 1 else int(classes[k])] = 1
        return mask, noobj, tx, ty, tw, th, tcls

    def forward(self, out, targets):
        """out: B x A(5+C) x H x W (fp32); targets: list of {'boxes' Kx4 xywh, 'classes' K}."""
        h, w = out.shape[2:]
        anchors = self.anchors / torch.tensor([self.img_size / w, self.img_size / h], device=out.device)
        x, y, pw, ph, conf, cls = self.split(out)
        mask, noobj, tx, ty, tw, th, tcls = self.build_targets(targets, anchors, h, w, out.device)
        bce, mse = F.binary_cross_entropy, F.mse_loss
        parts = {"x": bce(x * mask, tx * mask), "y": bce(y * mask, ty * mask), "w": mse(pw * mask, tw * mask),
                 "h": mse(ph * mask, th * mask),
                 "conf": bce(conf * mask, mask) + 0.5 * bce(conf * noobj, noobj * 0.0)}
        parts["cls"] = (bce(cls * mask.unsqueeze(-1), tcls * mask.unsqueeze(-1)) if self.num_classes > 1
                        else out.new_zeros(()))
        loss = self.lambda_xy * (parts["x"] + parts["y"]) + self.lambda_wh * (parts["w"] + parts["h"]) \
            + parts["conf"] + parts["cls"]
        return loss, {k: v.detach() for k, v in parts.items()}

    @torch.no_grad()
    def decode(self, out):
        """B x (A*H*W) x (4 + 1 + C): centre x, centre y, w, h in input pixels, objectness, class scores."""
        b, _, h, w = out.shape
        stride_x, stride_y = self.img_size / w, self.img_size / h
        x, y, pw, ph, conf, cls = self.split(out)
        gy, gx = torch.meshgrid(torch.arange(h, device=out.device), torch.arange(w, device=out.device),
                                indexing="ij")
        boxes = torch.stack([(x + gx) * stride_x, (y + gy) * stride_y,
                             torch.exp(pw) * self.anchors[:, 0].view(1, -1, 1, 1),
                             torch.exp(ph) * self.anchors[:, 1].view(1, -1, 1, 1)], -1)
        return torch.cat([boxes.reshape(b, -1, 4), conf.reshape(b, -1, 1), cls.reshape(b, -1, self.num_classes)], -1)


def non_max_suppression(decoded, conf_thres=0.2, nms_thres=0.4):
    """Per image: keep objectness >= conf_thres, then per class greedy NMS (IoU with the "+1" convention,
    obtained from torchvision's NMS on boxes grown by one pixel). Returns [{'boxes' xywh, 'conf', 'classes'}]."""
    results = []
    for det in decoded:
        det = det[det[:, 4] >= conf_thres]
        xyxy = torch.cat([det[:, :2] - det[:, 2:4] / 2, det[:, :2] + det[:, 2:4] / 2], 1)
        classes = det[:, 5:].argmax(1) if det.shape[1] > 5 else torch.zeros(len(det), dtype=torch.long)
        grown = torch.cat([xyxy[:, :2], xyxy[:, 2:] + 1], 1)
        keep = torchvision.ops.batched_nms(grown, det[:, 4], classes, nms_thres)
        xyxy = xyxy[keep]
        results.append({"boxes": torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1), "conf": det[keep, 4],
                        "classes": classes[keep]})
    return results


class YOLOv3Detector(nn.Module):
    """YOLOv3 on ResNet-50 conv3 (28x28), conv4 (14x14), conv5 (7x7) for a 224 input; 3 anchors per scale."""

    def __init__(self, backbone=None, num_classes=1, img_size=224, anchors=ANCHORS_224, conf_thres=0.2,
                 nms_thres=0.4):
        super().__init__()
        self.backbone = backbone if backbone is not None else ResNetFeatureExtractor()
        self.num_classes, self.img_size = num_classes, img_size
        self.conf_thres, self.nms_thres = conf_thres, nms_thres
        anchors = [[(w * img_size / 224, h * img_size / 224) for w, h in scale] for scale in anchors]
        out = [len(a) * (5 + num_classes) for a in anchors]
        self.embedding0 = yolo_embedding([512, 1024], 2048, out[0])
        self.embedding1_cbl = cbl(512, 256, 1)
        self.embedding1 = yolo_embedding([256, 512], 1024 + 256, out[1])
        self.embedding2_cbl = cbl(256, 128, 1)
        self.embedding2 = yolo_embedding([128, 256], 512 + 128, out[2])
        self.losses = nn.ModuleList(YOLOv3Loss(a, num_classes, img_size) for a in anchors)

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    @staticmethod
    def _branch(embedding, x):
        for i, module in enumerate(embedding):
            x = module(x)
            if i == 4:
                tap = x
        return x, tap

    def forward(self, x, frozen_backbone=False):
        """x: Bx3xSxS -> raw outputs of the 3 scales (stride 32, 16, 8), each B x A(5+C) x h x w."""
        f = _features(self.backbone, x, ("conv3", "conv4", "conv5"), frozen_backbone)
        out0, tap0 = self._branch(self.embedding0, f["conv5"])
        x1 = F.interpolate(self.embedding1_cbl(tap0), scale_factor=2, mode="nearest")
        out1, tap1 = self._branch(self.embedding1, torch.cat([x1, f["conv4"]], 1))
        x2 = F.interpolate(self.embedding2_cbl(tap1), scale_factor=2, mode="nearest")
        out2, _ = self._branch(self.embedding2, torch.cat([x2, f["conv3"]], 1))
        return [out0, out1, out2]

    def loss(self, outputs, targets):
        """Sum over scales, in fp32 outside autocast (as the original)."""
        with torch.autocast(outputs[0].device.type, enabled=False):
            losses = [crit(o.float(), targets) for crit, o in zip(self.losses, outputs)]
        total = sum(loss for loss, _ in losses)
        parts = {k: sum(p[k] for _, p in losses) for k in losses[0][1]}
        return total, parts

    @torch.no_grad()
    def predict(self, outputs):
        decoded = torch.cat([crit.decode(o.float()) for crit, o in zip(self.losses, outputs)], 1)
        return non_max_suppression(decoded, self.conf_thres, self.nms_thres)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in, c_out):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """ConvTranspose2d(k 2, s 2), concat the skip, two ConvBlocks."""

    def __init__(self, c_in, c_out, c_skip):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(c_in, c_out, 2, 2)
        self.conv = nn.Sequential(ConvBlock(c_out + c_skip, c_out), ConvBlock(c_out, c_out))

    def forward(self, x, skip):
        x = self.upsample(x)
        if x.shape[2:] != skip.shape[2:]:  # odd input sizes: torchvision's convs round up
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
        return self.conv(torch.cat([x, skip], 1))


class UNetSegmenter(nn.Module):
    """ResNet-50 U-Net: bridge 2 x ConvBlock(2048) at conv5, up blocks to conv4, conv3, conv2, conv1 and the
    (normalized) input, 1x1 conv 64 -> #targets. The decoder is always new and always trained."""

    def __init__(self, backbone=None, num_targets=1):
        super().__init__()
        self.backbone = backbone if backbone is not None else ResNetFeatureExtractor()
        self.bridge = nn.Sequential(ConvBlock(2048, 2048), ConvBlock(2048, 2048))
        self.up_blocks = nn.ModuleList([UpBlock(2048, 1024, 1024), UpBlock(1024, 512, 512), UpBlock(512, 256, 256),
                                        UpBlock(256, 128, 64), UpBlock(128, 64, 3)])
        self.out = nn.Conv2d(64, num_targets, 1)

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def forward(self, x, frozen_backbone=False):  # -> B x T x S x S logits
        f = _features(self.backbone, x, tuple(LAYER_ORDER), frozen_backbone)
        y = self.bridge(f["conv5"])
        for block, skip in zip(self.up_blocks, ("conv4", "conv3", "conv2", "conv1", "input")):
            y = block(y, f[skip])
        return self.out(y)


LAYER_ORDER = ("input", "conv1", "conv2", "conv3", "conv4", "conv5")


class LinearSegmenter(nn.Module):
    """1x1 conv 2048 -> #targets on conv5; logits upsampled bilinearly (align_corners=False) to the input size."""

    def __init__(self, backbone=None, num_targets=1):
        super().__init__()
        self.backbone = backbone if backbone is not None else ResNetFeatureExtractor()
        self.classifier = nn.Conv2d(2048, num_targets, 1)

    def head_parameters(self):
        return list(self.classifier.parameters())

    def forward(self, x, frozen_backbone=True):
        f = _features(self.backbone, x, ("conv5",), frozen_backbone)
        return F.interpolate(self.classifier(f["conv5"]), size=x.shape[2:], mode="bilinear", align_corners=False)


def dice_loss():
    """The 18 tasks' segmentation loss: smp's binary Dice from logits (smooth 0, eps 1e-7, over the batch;
    several targets are flattened into one binary problem, as the original)."""
    return smp.losses.DiceLoss(mode="binary", from_logits=True, smooth=0.0, eps=1e-7)


HEADS = {"yolov3": YOLOv3Detector, "unet": UNetSegmenter, "linear": LinearSegmenter}
