"""Configuration dataclasses of LoVT, ConVIRT and CLIP pre-training.

Field names and defaults are the original's (`BiModalModelConfig`, `ScanEncoderConfig`, ...), so every Hydra
key of the original experiments maps 1:1. Fields added here (marked "added") default to the original behaviour.
The YAML files under lovt/configs/ start from these schemas (Hydra ConfigStore, see `register_configs`).
"""
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

# the augmentation configs live with the transforms (lovt/data), one definition for both sides
from lovt.data.transforms import ReportAugmentationConfig, ScanAugmentationConfig


@dataclass
class ScanEncoderConfig:
    modality: str = "scan"
    backbone_architecture: str = MISSING  # only 'resnet'
    # [hub repo, torchvision function]; only the function name is used (torchvision is installed, no torch.hub)
    backbone_model: list[str] = field(default_factory=lambda: ["pytorch/vision:v0.6.0", "resnet50"])
    # ImageNet-1k V1 weights, read from the local torch hub cache only (never downloaded at run time)
    backbone_pretrained: bool = False
    backbone_checkpoint: str | None = None  # a torchvision state dict (fc.* ignored) or 'baseline:<name>'
    backbone_args: dict[str, Any] = field(default_factory=dict)
    input_size: list[int] = field(default_factory=lambda: [224, 224])
    region_feature_layer: str = "conv5"
    global_feature_layer: str = "local"
    global_aggregator: str = "avg"  # avg | max | avgpool_attention
    local_weights_from_aggregator: bool = False
    attention_heads: int = 8  # added (the original hard-codes 8)
    add_region_pos_encodings: bool = False
    concat_global_with_regions: bool = False
    data_augmentation: ScanAugmentationConfig = field(default_factory=ScanAugmentationConfig)


@dataclass
class ReportEncoderConfig:
    modality: str = "report"
    # a Hugging Face model id resolved from the local cache, or any local folder (config.json + weights + vocab)
    language_encoder: str = MISSING
    max_length: int = 512
    freeze_embeddings: bool = True
    freeze_encoder_layers: int = 0
    global_aggregator: str = "max"  # max | avg | token_0 | avgpool_attention
    global_from_local: bool = False
    local_weights_from_aggregator: bool = False
    local_from: str = "tokens"  # only 'sentences' is implemented (all experiments use it)
    sentence_encoding_mode: str = "joint"
    sentence_aggregator: str = "max"  # max | avg
    attention_heads: int = 8  # added (the original hard-codes 8)
    # The original's attention-pool query is the sum of sentence vectors divided by S_max (padding counted).
    # true (added) divides by the number of real sentences instead.
    query_mean_ignores_padding: bool = False
    project_language_embeddings: bool = False
    d: int | None = None
    data_augmentation: ReportAugmentationConfig = field(default_factory=ReportAugmentationConfig)


@dataclass
class GlobalNceLossConfig:
    objective_type: str = "global_nce"
    similarity_temperature: float = 0.1
    temperature_trainable: bool = False
    negatives_from_same_modality: bool = True
    accuracy_topk: list[int] = field(default_factory=lambda: [1, 5])


@dataclass
class LocalIntraSampleContrastiveLossConfig:
    objective_type: str = "local_intra_sample_contrastive"
    similarity_temperature: float = 0.3
    temperature_trainable: bool = False
    distance_threshold: float = 0.3
    threshold_type: str = "relative"  # absolute | relative
    smooth_weights: bool = False
    smooth_lambda: float = 1.0
    negatives_from_same_modality: bool = False
    normalize_by_num_negatives: bool = True
    cross_sample_negatives: bool = False


@dataclass
class BiModalModelConfig:
    load_checkpoint_path: str | None = None
    component_loaded_from_checkpoint: list[str] = field(default_factory=lambda: ["model_a", "model_b"])
    encoder_a: Any = MISSING
    encoder_b: Any = MISSING
    # projections
    d_z: int = 512
    d_zg: int | None = None
    d_hidden: int = 2048
    projection_norm: str | None = "batch"
    projection_dropout_prob: float = 0.0
    # cross-modal attention
    attention_sim: str = "scaled_dot_product"
    attention_prob_dropout_prob: float = 0.0
    attended_dropout_prob: float = 0.0
    attention_norm: str | None = "batch"
    symmetric_attention: bool = True
    project_attention_keys: bool = True
    project_attention_values: bool = True
    project_attention_outputs: bool = True
    attention_temperature: float = 1.0
    attention_temperature_trainable: bool = False
    # local weights
    l_weights_a: str | None = None
    l_weights_b: str | None = None
    l_weights_stop_grad: bool = False
    # objectives
    ll_alignments_a: dict[str, Any] = field(default_factory=dict)
    ll_alignments_b: dict[str, Any] = field(default_factory=dict)
    g_alignment: Any | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)
    # training
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 1e-6
    optimizer: str = "Adam"
    lr_scheduler: list[str] = field(default_factory=lambda: ["cosine_annealing_per_epoch"])
    # added: how 'cosine_annealing_per_epoch' behaves after the first epoch.
    #  periodic (original): CosineAnnealingLR(T_max=steps/epoch) keeps running, lr oscillates with a 2-epoch period
    #  restart: the cosine restarts at the top of every epoch;  once: one cosine over all max_epochs
    cosine_annealing_mode: str = "periodic"
    max_lr: float | None = None
    warmup_steps: int = 10
    lr_reduce_patience: int = 12
    lr_reduce_factor: float = 0.5
    max_epochs: int = 1000
    augment_on_validation: bool = False
    terminate_on_nan: bool = True  # added: Lightning 2 removed Trainer(terminate_on_nan=...)
    compute_retrieval_metrics: bool = True
    compute_embedding_stats: bool = True
    compute_attention_stats: bool = True
    compute_metrics_for_train: bool = False


def to_dataclass(cls, cfg):
    """Merge a DictConfig/dict (or an instance) onto the dataclass defaults and return an instance."""
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    merged = OmegaConf.merge(OmegaConf.structured(cls), cfg or {})
    return OmegaConf.to_object(merged)


def model_config(cfg) -> BiModalModelConfig:
    """BiModalModelConfig with typed encoder and objective configs (accepts the Hydra node or a plain dict)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    enc_a, enc_b = cfg.pop("encoder_a"), cfg.pop("encoder_b")
    g, lla, llb = cfg.pop("g_alignment", None), cfg.pop("ll_alignments_a", {}), cfg.pop("ll_alignments_b", {})
    config = to_dataclass(BiModalModelConfig, {**cfg, "encoder_a": None, "encoder_b": None})
    config.encoder_a = to_dataclass(ScanEncoderConfig, enc_a)
    config.encoder_b = to_dataclass(ReportEncoderConfig, enc_b)
    config.g_alignment = None if g is None else to_dataclass(GlobalNceLossConfig, g)
    config.ll_alignments_a = {str(k): to_dataclass(LocalIntraSampleContrastiveLossConfig, v) for k, v in lla.items()}
    config.ll_alignments_b = {str(k): to_dataclass(LocalIntraSampleContrastiveLossConfig, v) for k, v in llb.items()}
    return config


def _plain(obj):
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)


def config_to_dict(config: BiModalModelConfig) -> dict:
    """Plain python dict (checkpoint hyper-parameters must load with torch.load(weights_only=True))."""
    return _plain(config)


def register_configs():
    """Register the schemas the YAML files start from (names as in the original ConfigStore)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="pretrain_model", name="base_model", node=BiModalModelConfig)
    cs.store(group="scan_encoder", name="base_scan_encoder", node=ScanEncoderConfig)
    cs.store(group="report_encoder", name="base_report_encoder", node=ReportEncoderConfig)
    cs.store(group="objective", name="base_global_contrastive", node=GlobalNceLossConfig)
    cs.store(group="objective", name="local_intra_contrastive", node=LocalIntraSampleContrastiveLossConfig)
