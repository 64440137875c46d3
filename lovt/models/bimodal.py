"""LoVT / ConVIRT / CLIP as one module: two encoders, projection heads, cross-modal attention and the losses.

Shapes (LoVT at 224 px): regions N=49 of d_a=2048, sentences S (padded) of d_b=768, projections d_z=512.
"""

from torch import nn

from lovt.losses import GlobalNceLoss, LocalIntraSampleContrastiveLoss, total_loss
from lovt.models.components import MLP, CrossAttention, SequenceMLP
from lovt.models.config import BiModalModelConfig, model_config
from lovt.models.report_encoder import ReportEncoder
from lovt.models.scan_encoder import ScanEncoder


class ModalityModel(nn.Module):
    """Encoder + local (position-wise) and global projection MLPs of one modality."""

    def __init__(self, encoder: nn.Module, config: BiModalModelConfig):
        super().__init__()
        self.encoder = encoder
        d_zg = config.d_zg or config.d_z
        self.project_local = SequenceMLP(encoder.d_l, config.d_z, config.d_hidden, config.projection_norm,
                                         config.projection_dropout_prob)
        self.project_global = MLP(encoder.d_g, d_zg, config.d_hidden, config.projection_norm,
                                  config.projection_dropout_prob)

    def forward(self, *args, **kwargs):
        out = self.encoder(*args, **kwargs)
        out["zl"] = self.project_local(out["local"])  # BxNxd_z
        out["zg"] = self.project_global(out["global"])  # Bxd_zg
        return out


class LossModule(nn.Module):
    def __init__(self, config: BiModalModelConfig, max_size_a, max_size_b):
        super().__init__()
        self.g_alignment = None if config.g_alignment is None else GlobalNceLoss(**vars(config.g_alignment))
        self.ll_alignments_a = nn.ModuleDict({k: LocalIntraSampleContrastiveLoss(max_size_a, **vars(v))
                                              for k, v in config.ll_alignments_a.items()})
        self.ll_alignments_b = nn.ModuleDict({k: LocalIntraSampleContrastiveLoss(max_size_b, **vars(v))
                                              for k, v in config.ll_alignments_b.items()})

    @staticmethod
    def _name(side, key, n, direction):
        return f"local_{side}_{direction}" if n == 1 else f"local_{side}_{key}_{direction}"


class BiModalModel(nn.Module):
    """Image-report alignment model; `forward(batch)` returns (total loss, named losses, metrics, outputs)."""

    def __init__(self, config, models_base_path: str | None = None):
        super().__init__()
        config = model_config(config) if not isinstance(config, BiModalModelConfig) else config
        if config.attention_sim != "scaled_dot_product" or not config.symmetric_attention:
            raise ValueError("only the symmetric scaled-dot-product cross-attention is implemented (used by all)")
        if config.attention_temperature_trainable:
            raise ValueError("attention_temperature_trainable is not implemented (unused)")
        self.config = config
        self.model_a = ModalityModel(ScanEncoder(config.encoder_a, models_base_path), config)
        self.model_b = ModalityModel(ReportEncoder(config.encoder_b), config)
        self.loss_module = LossModule(config, self.model_a.encoder.max_region_size,
                                      self.model_b.encoder.max_region_size)
        self.has_local = bool(config.ll_alignments_a) or bool(config.ll_alignments_b)
        if self.has_local:
            self.ll_attention = CrossAttention(config.d_z, config.attention_norm, config.attention_temperature)
        for mode in (config.l_weights_a, config.l_weights_b):
            if mode not in (None, "from_aggregation"):
                raise ValueError(f"l_weights must be null or 'from_aggregation', got {mode!r}")

    def _local_weights(self, mode, out):
        if mode is None:
            return None
        if out["weights"] is None:
            raise ValueError("l_weights 'from_aggregation' needs local_weights_from_aggregator=true and "
                             "global_aggregator=avgpool_attention in that encoder")
        return out["weights"].detach() if self.config.l_weights_stop_grad else out["weights"]

    def forward(self, batch):
        a = self.model_a(batch["scan"])
        b = self.model_b(**batch["report"])
        losses, metrics = {}, {}
        if self.loss_module.g_alignment is not None:
            g_losses, g_metrics = self.loss_module.g_alignment(a["zg"], b["zg"])
            losses.update(g_losses)
            metrics.update(g_metrics)
        att = {}
        if self.has_local:
            ll_a, ll_b = self.loss_module.ll_alignments_a, self.loss_module.ll_alignments_b
            att = self.ll_attention(a["zl"], b["zl"], b["mask"], compute_a2b=len(ll_b) > 0,
                                    compute_b2a=len(ll_a) > 0)
            w_a, w_b = self._local_weights(self.config.l_weights_a, a), self._local_weights(self.config.l_weights_b, b)
            for key, loss in ll_a.items():  # regions vs report-attended regions
                for direction, v in loss(a["zl"], att["b2a"], a["structure"], None, w_a).items():
                    losses[LossModule._name("a", key, len(ll_a), direction)] = v
            for key, loss in ll_b.items():  # sentences vs image-attended sentences
                for direction, v in loss(b["zl"], att["a2b"], b["structure"], b["mask"], w_b).items():
                    losses[LossModule._name("b", key, len(ll_b), direction)] = v
        loss = total_loss(losses, self.config.loss_weights)
        outputs = {"yg_a": a["global"], "yg_b": b["global"], "zg_a": a["zg"], "zg_b": b["zg"],
                   "weights_a": a["weights"], "weights_b": b["weights"], "structure_a": a["structure"],
                   "mask_b": b["mask"], **{f"att_{k}": v for k, v in att.items()}}
        return loss, losses, metrics, outputs
