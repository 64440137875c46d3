"""The Genesis family engine: what Semantic Genesis and TransVW run, written once for both.

The public TransVW code is the Semantic Genesis code under other names, so both method folders are thin
front ends (their names, defaults and file names) over this package:

ct_volumes      reading LUNA16 .mhd/.raw and NIfTI scans, HU windowing, lung masks
self_discovery  autoencoder -> features -> pattern classes / visual words (the originals' self-discovery)
restoration     the four Models Genesis transforms and the elastic warp, batched in torch
data            pattern files -> (corrupted, original, class) batches
pretrain        the pre-training loop (YNet3D: restoration + classification), its CLI and checkpoints
finetune        classification and segmentation fine-tuning on LUNA16 nodule cubes
release         the weights release folder of a checkpoint (shared/release.py), for both export.py
demo, bench     `make demo-<method>` and `make bench-<method>`
genesis.mk      the make targets both methods share
"""
