"""Image-only baselines of LoVT's comparison: CheXpert-supervised, BYOL, SimCLR, PixelPro.

    python lovt/baselines/train.py byol_100 [--init_weights resnet50-0676ba61.pth] [--models_base_path models]

Each run exports `checkpoints/backbone_weights.pt` (torchvision ResNet-50 layout) and is moved to
<models_base_path>/baselines/<name>, where `python lovt/evaluate.py evaluate_baseline_downstream <name>`
finds it.
"""
