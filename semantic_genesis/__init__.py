"""Semantic Genesis (Haghighi et al., MICCAI 2020): self-discovery, self-classification and
self-restoration of anatomical patterns for 3D medical images."""
