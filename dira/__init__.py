"""DiRA: discriminative, restorative and adversarial self-supervised pre-training (Haghighi et al., CVPR 2022)."""
