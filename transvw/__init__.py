"""TransVW (Haghighi et al., IEEE TMI 2021): transferable visual words, learned by self-discovery,
self-classification and self-restoration on 3D CT."""
