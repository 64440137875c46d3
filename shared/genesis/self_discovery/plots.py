"""A picture of the discovered classes: each row one class, each column one patient's crop (central slice).

A class is one anatomical pattern when the crops in a row look alike although they come from different
patients; rows should look different from each other.
"""

from pathlib import Path

import numpy as np

from shared.runlog import save_image_grid


def save_pattern_grid(save, png_path, n_classes=4, per_class=8, resolution=1, fold=1):
    """Central axial slices of the first `per_class` crops of the first `n_classes` classes of one block."""
    save = Path(save)
    data = np.load(save / f"train_data{resolution}_vwGen_ex_ref_fold{float(fold)}.npy", mmap_mode="r")
    labels = np.load(save / f"train_label{resolution}_vwGen_ex_ref_fold{float(fold)}.npy")[:, 0]
    rows, names = [], []
    for c in np.unique(labels)[:n_classes]:
        idx = np.flatnonzero(labels == c)[:per_class]
        rows.append([np.asarray(data[i, :, :, data.shape[3] // 2]).T for i in idx])  # y down, x across
        names.append(f"class {int(c)}")
    titles = ["reference"] + [f"neighbour {j}" for j in range(1, per_class)]
    return save_image_grid(rows, png_path, titles=titles, row_labels=names, vmin=0.0, vmax=1.0)
