"""LoVT: localized representation learning from chest X-rays and their reports (with ConVIRT and CLIP variants)."""
