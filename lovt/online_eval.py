"""Online CheXpert evaluation: linear probes on the detached pre-projection global vectors, trained alongside.

As in the original, each probe (Dropout 0.2 -> Linear(d_g -> 5)) has its own Adam(lr 1e-4) stepped at every training
batch on the 5 binary CheXpert labels (mean BCE); validation logs accuracy, AUROC and loss.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback
from torch import nn
from torchmetrics.classification import MultilabelAccuracy, MultilabelAUROC

NUM_LABELS = 5


@dataclass
class OnlineEvaluatorConfig:
    task: str = "chexpert_binary"
    source_modality: str = "a"  # a (scan) | b (report) | a&b
    nonlinear: bool = False
    d_hidden: int = 512
    dropout_prob: float = 0.2
    learning_rate: float = 1e-4  # added (the original hard-codes 1e-4)


class OnlineClassificationEvaluator(Callback):
    def __init__(self, name: str, task: str = "chexpert_binary", source_modality: str = "a", nonlinear=False,
                 d_hidden: int = 512, dropout_prob: float = 0.2, learning_rate: float = 1e-4):
        if task != "chexpert_binary":
            raise ValueError(f"unsupported online evaluation task {task!r}")
        if source_modality not in ("a", "b", "a&b"):
            raise ValueError(f"source_modality must be a, b or a&b, got {source_modality!r}")
        self.name, self.source = name, source_modality
        self.nonlinear, self.d_hidden, self.dropout_prob, self.lr = nonlinear, d_hidden, dropout_prob, learning_rate
        self.head = self.optimizer = None
        self._pending_state = None

    @property
    def state_key(self):
        return f"OnlineClassificationEvaluator[{self.name}]"

    def _features(self, outputs):
        feats = {"a": [outputs["yg_a"]], "b": [outputs["yg_b"]], "a&b": [outputs["yg_a"], outputs["yg_b"]]}
        return torch.cat(feats[self.source], dim=-1).float()

    def setup(self, trainer, pl_module, stage):
        if self.head is not None:
            return
        enc_a, enc_b = pl_module.model.model_a.encoder, pl_module.model.model_b.encoder
        d = {"a": enc_a.d_g, "b": enc_b.d_g, "a&b": enc_a.d_g + enc_b.d_g}[self.source]
        layers = [nn.Dropout(self.dropout_prob)]
        if self.nonlinear:
            layers += [nn.Linear(d, self.d_hidden), nn.BatchNorm1d(self.d_hidden), nn.ReLU()]
            d = self.d_hidden
        self.head = nn.Sequential(*layers, nn.Linear(d, NUM_LABELS)).to(pl_module.device)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=self.lr)
        self.train_acc = MultilabelAccuracy(num_labels=NUM_LABELS).to(pl_module.device)
        self.val_acc = MultilabelAccuracy(num_labels=NUM_LABELS).to(pl_module.device)
        self.val_auroc = MultilabelAUROC(num_labels=NUM_LABELS).to(pl_module.device)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if outputs is None or "chexpert" not in batch:
            return
        labels = batch["chexpert"].float()
        with torch.autocast(device_type=pl_module.device.type, enabled=False):
            self.head.train()
            logits = self.head(self._features(outputs))
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        acc = self.train_acc(logits.detach().sigmoid(), labels.long())
        bs = labels.shape[0]
        pl_module.log(f"train/online_{self.name}_acc", acc, on_step=True, on_epoch=False, batch_size=bs)
        pl_module.log(f"train/online_{self.name}_loss", loss.detach(), on_step=True, on_epoch=False, batch_size=bs)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if outputs is None or "chexpert" not in batch or trainer.sanity_checking:
            return
        labels = batch["chexpert"].float()
        with torch.no_grad(), torch.autocast(device_type=pl_module.device.type, enabled=False):
            self.head.eval()
            logits = self.head(self._features(outputs))
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        probs = logits.sigmoid()
        self.val_acc.update(probs, labels.long())
        self.val_auroc.update(probs, labels.long())
        pl_module.log(f"val/online_{self.name}_loss", loss, on_step=False, on_epoch=True,
                      batch_size=labels.shape[0], sync_dist=True)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.val_acc.update_count == 0:
            return
        pl_module.log(f"val/online_{self.name}_acc", self.val_acc.compute(), sync_dist=True)
        pl_module.log(f"val/online_{self.name}_auroc", self.val_auroc.compute(), sync_dist=True)
        self.val_acc.reset()
        self.val_auroc.reset()

    def state_dict(self):
        if self.head is None:
            return self._pending_state or {}
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict):
        if not state_dict:
            return
        if self.head is None:
            self._pending_state = state_dict
            return
        self.head.load_state_dict(state_dict["head"])
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self._pending_state = None


def build_online_evaluators(online_eval_cfg) -> list:
    """One callback per entry of the `online_eval` config node ({name: {task, source_modality, ...}})."""
    return [OnlineClassificationEvaluator(name, **dict(cfg)) for name, cfg in (online_eval_cfg or {}).items()]
