"""VoCo (CVPR 2024): volume-contrast pre-training of a SwinUNETR-v2 encoder, and BTCV fine-tuning."""
