"""Figures of TensorBoard's image tabs, which the comparison's HTML report shows too:
prediction grids and confusion matrices, rendered to PNG.

matplotlib (Agg, no display) draws them; imported only when a figure is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (a plot title or legend
    entry that would otherwise run past the figure's edge)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=True)) or text


def prediction_grid(
    images: np.ndarray,
    labels: Sequence[int],
    predictions: Sequence[int],
    class_names: Sequence[str],
    columns: int = 4,
) -> Any:
    """A grid of test images captioned ``True: cat, Pred: dog``; wrong ones in red.

    Four columns of 130-pixel cells with 12-pixel captions: TensorBoard shows an image
    scaled to its card (about 500 pixels wide), where a wider grid's captions became
    unreadable."""
    plt = pyplot()
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.8, rows * 2.1), dpi=72, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= count:
            continue
        truth, guess = class_names[int(labels[index])], class_names[int(predictions[index])]
        ax.imshow(images[index])
        ax.set_title(f"True: {truth}\nPred: {guess}", fontsize=12, color="black" if truth == guess else "red")
    fig.tight_layout()
    return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    index = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> Any:
    """The confusion matrix as a heat map, rows normalised, counts written in the cells."""
    plt = pyplot()
    totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(6, 5.2), dpi=80)
    ax.imshow(matrix / totals, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in ticks:
        for j in ticks:
            share = matrix[i, j] / totals[i, 0]
            ax.text(
                j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6, color="white" if share > 0.5 else "black"
            )
    if title:
        ax.set_title(wrap(title, 55), fontsize=10)  # a long column label wraps, never clipped
    fig.tight_layout()
    return fig


def png_bytes(figure: Any) -> tuple[bytes, int, int]:
    """Render a matplotlib figure to PNG; returns (bytes, height, width)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    width, height = figure.canvas.get_width_height()
    return buffer.getvalue(), height, width
