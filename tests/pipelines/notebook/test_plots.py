"""The notebook's figures: what each shows, and that it renders."""

from __future__ import annotations

import io

import matplotlib.colors
import numpy as np
import pandas as pd

from pipelines.notebook import plots


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _images(n):
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def test_a_digit_grid_shows_each_image_with_its_label():
    figure = plots.digit_grid(_images(10), list(range(10)), columns=4, title="digits")
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 10 and len(figure.axes) == 12  # 3 rows of 4, 2 left blank
    assert [ax.get_xlabel() for ax in shown] == [str(d) for d in range(10)]
    assert _png(figure).startswith(b"\x89PNG")


def test_wrong_predictions_are_labelled_and_framed_in_red():
    figure = plots.digit_grid(_images(3), [1, 2, 3], predicted=[1, 7, 3])
    right, wrong, _ = [ax for ax in figure.axes if ax.images]
    red = matplotlib.colors.to_rgba(plots.WRONG)
    assert wrong.get_xlabel() == "7 (is 2)"
    assert wrong.xaxis.label.get_color() == plots.WRONG
    assert all(spine.get_edgecolor() == red for spine in wrong.spines.values())
    assert right.get_xlabel() == "1"
    assert right.xaxis.label.get_color() != plots.WRONG
    assert not any(spine.get_edgecolor() == red for spine in right.spines.values())


def test_the_served_sample_puts_mistakes_in_among_the_first_examples():
    labels = np.arange(100) % 10
    predicted = labels.copy()
    predicted[[51, 62, 73]] = 0
    shown = plots.wrong_first(labels, predicted, count=10, wrong=2)
    assert shown.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 51, 62]
    assert plots.wrong_first(labels, labels, count=5).tolist() == [0, 1, 2, 3, 4]


def test_accuracy_per_digit_has_a_bar_per_digit_and_model():
    accuracy = pd.DataFrame({"variant": np.linspace(0.9, 1.0, 10),
                             "version 3": np.linspace(0.95, 0.99, 10)})
    figure = plots.per_class_accuracy(accuracy)
    [ax] = figure.axes
    assert [len(bars) for bars in ax.containers] == [10, 10]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["variant", "version 3"]
    assert _png(figure).startswith(b"\x89PNG")


def test_the_confusion_matrix_annotates_every_non_zero_cell():
    counts = np.diag(np.full(10, 90.0))
    counts[3, 5] = 7
    figure = plots.confusion_matrix(counts)
    ax = figure.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["90"] * 10 + ["7"])
    assert ax.get_xlabel() == "predicted digit" and ax.get_ylabel() == "true digit"
    assert _png(figure).startswith(b"\x89PNG")
