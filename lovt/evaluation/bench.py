"""Training throughput of the downstream heads, frozen vs fine-tuned backbone (for lovt/bench.py).

    from lovt.evaluation.bench import head_records
    records = head_records(device="cuda", input_size=224, batch_size=32)   # shared.bench record dicts
"""

import torch

from shared.bench import device_name, record, throughput

from .backbone import ResNetFeatureExtractor
from .heads import LinearSegmenter, UNetSegmenter, YOLOv3Detector, dice_loss


def head_records(device=None, input_size=224, batch_size=8, heads=("yolov3", "unet", "linear"), repeats=3):
    """`downstream_<head>_<frozen|finetune>_train_images_per_s` for each head (linear: frozen only)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x = torch.randn(batch_size, 3, input_size, input_size, device=device)
    masks = (torch.rand(batch_size, 1, input_size, input_size, device=device) > 0.5).float()
    boxes = [{"boxes": torch.tensor([[input_size / 4, input_size / 4, input_size / 3, input_size / 3]],
                                    device=device), "classes": torch.zeros(1, device=device)}] * batch_size
    amp = device.type == "cuda"
    out = []
    builders = {"yolov3": lambda b: YOLOv3Detector(b, img_size=input_size), "unet": UNetSegmenter,
                "linear": LinearSegmenter}
    loss_fn = dice_loss()
    for head in heads:
        for frozen in ((True,) if head == "linear" else (True, False)):
            model = builders[head](ResNetFeatureExtractor()).to(device).train()
            if frozen:
                model.backbone.eval()
            opt = torch.optim.Adam(model.head_parameters() if frozen else model.parameters(), lr=1e-4)

            def step(model=model, opt=opt, frozen=frozen, head=head):
                with torch.autocast(device.type, enabled=amp):
                    y = model(x, frozen_backbone=frozen)
                    loss = model.loss(y, boxes)[0] if head == "yolov3" else loss_fn(y.float(), masks)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            value = throughput(step, batch_size, warmup=1, repeats=repeats, device=device)
            out.append(record(f"downstream_{head}_{'frozen' if frozen else 'finetune'}_train_images_per_s", value,
                              "images/s", device_name(device),
                              {"input_size": input_size, "batch_size": batch_size, "amp": amp}))
            del model, opt
    return out
