"""The notebook's figures, drawn with matplotlib: digit grids, accuracy per digit, the
confusion matrix.

Each function returns a `matplotlib.figure.Figure` made without pyplot (no global figure
state, no GUI backend): a notebook shows a returned figure as a PNG (`%matplotlib inline`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

WRONG = "tab:red"


def digit_grid(images: np.ndarray, labels: Sequence[int],
               predicted: Optional[Sequence[int]] = None, columns: int = 8,
               title: str = "") -> Figure:
    """Images (uint8 [N, 28, 28] or [N, 784]) with their labels under each; with
    `predicted`, the prediction under each and the wrong ones framed and labelled in red."""
    images = np.asarray(images).reshape(len(images), 28, 28)
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(1.2 * columns, 1.45 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= len(images):
            ax.set_axis_off()
            continue
        ax.imshow(images[index], cmap="gray_r", vmin=0, vmax=255)
        label = int(labels[index])
        if predicted is None:
            ax.set_xlabel(str(label))
            continue
        guess = int(predicted[index])
        if guess == label:
            ax.set_xlabel(f"{guess}")
        else:
            ax.set_xlabel(f"{guess} (is {label})", color=WRONG, fontweight="bold")
            for spine in ax.spines.values():
                spine.set_edgecolor(WRONG)
                spine.set_linewidth(3)
    if title:
        figure.suptitle(title)
    return figure


def wrong_first(labels: Sequence[int], predicted: Sequence[int], count: int = 32,
                wrong: int = 8) -> np.ndarray:
    """Indices of `count` examples to show: up to `wrong` mispredicted ones, then the first
    of the others, in their original order."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    mistakes = np.flatnonzero(labels != predicted)[:wrong]
    others = np.setdiff1d(np.arange(len(labels)), mistakes)[:max(0, count - len(mistakes))]
    return np.sort(np.concatenate([mistakes, others]))


def per_class_accuracy(accuracy: pd.DataFrame, title: str = "Accuracy per digit") -> Figure:
    """Grouped bars: one group per digit (the rows), one bar per model (the columns)."""
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / max(1, len(accuracy.columns))
    for i, model in enumerate(accuracy.columns):
        ax.bar(accuracy.index + (i - (len(accuracy.columns) - 1) / 2) * width,
               accuracy[model], width, label=model)
    ax.set_xticks(accuracy.index)
    ax.set_xlabel("digit")
    ax.set_ylabel("accuracy")
    lowest = float(np.nanmin(accuracy.to_numpy())) if accuracy.size else 0.0
    ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    return figure


def confusion_matrix(counts: np.ndarray, title: str = "Confusion matrix") -> Figure:
    """Counts [true digit, predicted digit], each cell annotated; the diagonal is right."""
    counts = np.asarray(counts)
    figure = Figure(figsize=(5.8, 5), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax, shrink=0.8)
    classes = range(len(counts))
    ax.set_xticks(classes)
    ax.set_yticks(classes)
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    threshold = counts.max() / 2 if counts.size else 0
    for true in classes:
        for guess in classes:
            value = counts[true, guess]
            if value:
                ax.text(guess, true, f"{value:g}", ha="center", va="center", fontsize=7,
                        color="white" if value > threshold else "black")
    ax.set_title(title)
    return figure
