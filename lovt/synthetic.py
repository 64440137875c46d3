"""Synthetic image-report pairs and tiny-model settings, for tests, the benchmark and quick checks.

The pairs are learnable: each study has a random subset of findings; each finding draws a bright blob at its own
place in the image and adds its sentence to the report, so matching images and reports is possible.
"""
from pathlib import Path

import torch
from torch.utils.data import Dataset

FINDINGS = [
    ("the heart is enlarged .", (0.55, 0.5)),
    ("there is a small left pleural effusion .", (0.8, 0.75)),
    ("right upper lobe opacity is seen .", (0.25, 0.3)),
    ("mild pulmonary edema is present .", (0.5, 0.3)),
    ("left basilar atelectasis .", (0.8, 0.25)),
    ("a right pneumothorax is noted .", (0.2, 0.7)),
]
NORMAL = ["no acute cardiopulmonary process .", "lungs are clear ."]
CORPUS = [s for s, _ in FINDINGS] + NORMAL + ["the cardiomediastinal silhouette is normal ."]


class SyntheticImageTextDataset(Dataset):
    """Items as lovt.data.ImageTextDataset: {"scan": 3xHxW, "sentences", "chexpert": (5,), "study_id", ...}."""

    def __init__(self, n: int = 16, size: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        for i in range(n):
            present = (torch.rand(len(FINDINGS), generator=g) < 0.4).nonzero().flatten().tolist() or [i % 6]
            img = 0.1 * torch.randn(size, size, generator=g)
            for k in present:
                cy, cx = FINDINGS[k][1]
                img += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
            sentences = [FINDINGS[k][0] for k in present] + [NORMAL[i % 2]]
            labels = torch.tensor([float(k in present) for k in range(5)])
            self.items.append({"scan": img.expand(3, -1, -1).clone(), "sentences": sentences, "chexpert": labels,
                               "study_id": f"s{50000000 + i}", "patient_id": f"p{10000000 + i}", "view_index": 0})
        self.stats = {"scan": {"pixel_mean": 0.0, "pixel_std": 1.0}}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return dict(self.items[i])


def tiny_overrides(bert_dir, size: int = 64, batch_size: int = 4, arch: str = "resnet50", d: int = 32) -> list:
    """Hydra overrides that shrink any experiment to CPU scale (tiny BERT, small images and heads, fp32)."""
    return [f"pretrain_model.encoder_a.backbone_model=[pytorch/vision:v0.6.0,{arch}]",
            "pretrain_model.encoder_a.backbone_pretrained=false",
            f"pretrain_model.encoder_a.input_size=[{size},{size}]",
            f"pretrain_model.encoder_b.language_encoder={Path(bert_dir).resolve()}",
            "pretrain_model.encoder_b.max_length=128",
            f"pretrain_model.d_z={d}", f"pretrain_model.d_hidden={2 * d}", f"pretrain_model.batch_size={batch_size}",
            "trainer.precision=32-true", "trainer.accumulate_grad_batches=1", "num_dataloader_workers=0"]


def build_tiny_language_model(folder, **kwargs) -> Path:
    from lovt.models.report_encoder import build_tiny_bert

    return build_tiny_bert(folder, CORPUS, **kwargs)
