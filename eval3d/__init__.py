"""One 3D evaluation for every 3D pre-training: the same CT tasks, budgets, splits and seeds for any encoder."""
