"""LoVT networks: scan encoder (ResNet), report encoder (BERT), heads, cross-modal attention."""
from lovt.models.bimodal import BiModalModel, ModalityModel
from lovt.models.config import (
                                BiModalModelConfig,
                                GlobalNceLossConfig,
                                LocalIntraSampleContrastiveLossConfig,
                                ReportAugmentationConfig,
                                ReportEncoderConfig,
                                ScanAugmentationConfig,
                                ScanEncoderConfig,
                                model_config,
)
from lovt.models.report_encoder import ReportEncoder, ReportTokenizer, build_tiny_bert, load_tokenizer
from lovt.models.scan_encoder import ResNetFeatureExtractor, ScanEncoder

__all__ = ["BiModalModel", "ModalityModel", "BiModalModelConfig", "GlobalNceLossConfig",
           "LocalIntraSampleContrastiveLossConfig", "ReportAugmentationConfig", "ReportEncoderConfig",
           "ScanAugmentationConfig", "ScanEncoderConfig", "model_config", "ReportEncoder", "ReportTokenizer",
           "build_tiny_bert", "load_tokenizer", "ResNetFeatureExtractor", "ScanEncoder"]
