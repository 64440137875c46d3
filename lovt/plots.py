"""Pictures: each sentence's attention over the image regions, drawn on the image."""
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def plot_sentence_attention(scan, sentences, probs, structure, png_path, title=None, max_sentences=8):
    """scan: CxHxW (normalised), probs: SxN attention of every sentence over the N = h*w regions (a2b)."""
    image = scan[0] if scan.ndim == 3 else scan
    image = (image - image.min()) / (image.max() - image.min() + 1e-8)
    h, w = structure
    n = min(len(sentences) or probs.shape[0], probs.shape[0], max_sentences)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.6 * (n + 1), 3.2), squeeze=False)
    axes[0, 0].imshow(image, cmap="gray")
    axes[0, 0].set_title(title or "image", fontsize=8)
    for s in range(n):
        heat = probs[s].reshape(1, 1, h, w).float()
        heat = F.interpolate(heat, size=image.shape, mode="bilinear", align_corners=False)[0, 0]
        ax = axes[0, s + 1]
        ax.imshow(image, cmap="gray")
        ax.imshow(heat, cmap="jet", alpha=0.45)
        text = sentences[s] if s < len(sentences) else f"sentence {s}"
        ax.set_title("\n".join(textwrap.wrap(text, 28)[:4]), fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
    return Path(png_path)


def plot_attention_examples(examples, out_dir, epoch: int):
    """examples: list of (scan, sentences, probs SxN, (h, w), study_id) collected during validation."""
    paths = []
    for scan, sentences, probs, structure, study in examples:
        paths.append(plot_sentence_attention(torch.as_tensor(scan), sentences, probs, structure,
                                             Path(out_dir) / f"attention_epoch{epoch:04d}_{study}.png",
                                             title=f"study {study}"))
    return paths
