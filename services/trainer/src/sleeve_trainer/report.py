"""Evaluation metrics and report figures; NumPy and Matplotlib only, no TensorFlow.

Figures are drawn on ``matplotlib.figure.Figure`` with an Agg canvas, never through
``pyplot``, so nothing here selects a backend or keeps figures in global state.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["combine_histories", "evaluate", "plot_confusion_matrix", "plot_training_curves"]

logger = logging.getLogger(__name__)

PHASE_KEY = "phase"
_DPI = 100


def _ratio(numerator: float, denominator: float) -> float:
    # A class never predicted (or never present) scores 0 rather than NaN, as in sklearn.
    return numerator / denominator if denominator else 0.0


def evaluate(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro F1, top-2 accuracy, per-class scores and the confusion matrix.

    ``y_true`` holds class indices into ``labels``; ``probabilities`` is (N, len(labels)).
    Confusion-matrix rows are true classes, columns predicted ones. Values are plain
    Python numbers, ready for JSON.
    """
    truth = np.asarray(y_true)
    probs = np.asarray(probabilities)
    num_classes = len(labels)
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probabilities must be (N, {num_classes}), got {probs.shape}")
    if truth.ndim != 1 or len(truth) != len(probs):
        raise ValueError(f"y_true must be (N,) with N={len(probs)}, got {truth.shape}")
    if not len(truth):
        raise ValueError("nothing to evaluate")
    if truth.min() < 0 or truth.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    truth = truth.astype(np.int64)
    predicted = probs.argmax(axis=1)

    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted_counts = matrix.sum(axis=0)

    per_class: dict[str, dict[str, float | int]] = {}
    f1_scores: list[float] = []
    for index, label in enumerate(labels):
        tp = float(true_positives[index])
        precision = _ratio(tp, float(predicted_counts[index]))
        recall = _ratio(tp, float(support[index]))
        f1 = _ratio(2 * precision * recall, precision + recall)
        f1_scores.append(f1)
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(support[index]),
        }

    # Stable sort so ties rank the lower class index first, as argmax does.
    top2 = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    top2_hits = (top2 == truth[:, None]).any(axis=1)

    return {
        "accuracy": float(true_positives.sum() / len(truth)),
        "macro_f1": float(np.mean(f1_scores)),
        "top2_accuracy": float(top2_hits.mean()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)  # attaches itself: render with Agg whatever the global backend
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_confusion_matrix(matrix: Sequence[Sequence[int]] | np.ndarray, labels: list[str]) -> bytes:
    """PNG of the confusion matrix: counts written in cells, colour = share of the true class."""
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix must be {len(labels)}x{len(labels)}, got {counts.shape}")
    row_sums = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)

    size = max(4.0, 0.7 * len(labels) + 2.0)
    figure = Figure(figsize=(size + 1.0, size), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of true class")
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row in range(len(labels)):
        for column in range(len(labels)):
            # Light text on dark cells keeps every count readable.
            colour = "white" if shares[row, column] > 0.5 else "black"
            axes.text(column, row, str(counts[row, column]), ha="center", va="center", color=colour)
    return _png(figure)


def combine_histories(*phases: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """Concatenate per-phase histories, adding a ``phase`` series (1, 1, ..., 2, 2, ...)."""
    combined: dict[str, list[float]] = {PHASE_KEY: []}
    for number, history in enumerate(phases, start=1):
        epochs = max((len(values) for values in history.values()), default=0)
        for name, values in history.items():
            series = combined.setdefault(name, [float("nan")] * len(combined[PHASE_KEY]))
            series.extend(float(v) for v in values)
            series.extend([float("nan")] * (epochs - len(values)))
        for name, series in combined.items():
            if name != PHASE_KEY and name not in history:
                series.extend([float("nan")] * epochs)
        combined[PHASE_KEY].extend([float(number)] * epochs)
    return combined


def plot_training_curves(history: Mapping[str, Sequence[float]]) -> bytes:
    """PNG with loss and accuracy per epoch, training against validation.

    If ``history`` has a ``phase`` series (one number per epoch, as made by
    ``combine_histories``), a dashed line marks where each new phase starts.
    """
    panels = ("loss", "accuracy")
    if not any(history.get(key) for name in panels for key in (name, f"val_{name}")):
        raise ValueError(f"history has no loss or accuracy series: {sorted(history)}")
    phases = list(history.get(PHASE_KEY, []))
    boundaries = [i for i in range(1, len(phases)) if phases[i] != phases[i - 1]]

    figure = Figure(figsize=(10.0, 4.0), dpi=_DPI, layout="constrained")
    for position, name in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), position)
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            values = list(history.get(key, []))
            if values:
                epochs = np.arange(1, len(values) + 1)
                axes.plot(epochs, values, style, marker="o", markersize=3, label=key)
        for boundary in boundaries:
            # Between the last epoch of one phase and the first of the next.
            axes.axvline(boundary + 0.5, color="grey", linestyle=":", linewidth=1)
            axes.annotate(
                f"phase {phases[boundary]:g}",
                xy=(boundary + 0.5, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8,
                color="grey",
            )
        axes.set_title(name)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    return _png(figure)
