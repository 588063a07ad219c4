"""Figures for reports: the confusion matrix of a classifier as a PNG with class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affectfuse.utils import atomic_path


def plot_confusion(cm, class_names, path, title: str = "", normalize: bool = True) -> Path:
    """Write a confusion matrix PNG: rows = true class, columns = predicted class.

    With ``normalize`` each row is divided by its support (recall on the diagonal; absent classes stay 0);
    every cell also shows its count.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    names = list(class_names)
    if cm.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(names)} class names")
    support = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0) if normalize else cm
    size = 1.5 + 0.75 * len(names)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class" if normalize else "count")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    threshold = shown.max() / 2 if shown.max() > 0 else 0.5
    for i in range(len(names)):
        for j in range(len(names)):
            text = f"{shown[i, j]:.2f}\n({int(cm[i, j])})" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > threshold else "black")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
