"""Evaluation metrics and report figures; NumPy and Matplotlib only, no TensorFlow.

Figures are drawn on ``matplotlib.figure.Figure`` with an Agg canvas, never through
``pyplot``, so nothing here selects a backend or keeps figures in global state. Each figure
is titled with the model version, and that title is also the PNG's ``Title`` text chunk.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "CALIBRATION_BINS",
    "LOG_LOSS_CLIP",
    "CoverExample",
    "CoverPicks",
    "combine_histories",
    "draw_report_figures",
    "evaluate",
    "pick_covers",
    "plot_confusion_matrix",
    "plot_cover_grid",
    "plot_reliability_diagram",
    "plot_training_curves",
]

logger = logging.getLogger(__name__)

PHASE_KEY = "phase"
CALIBRATION_BINS = 15
LOG_LOSS_CLIP = 1e-15
_MISTAKES_SHOWN = 10
_TOP_K = (2, 3)
_DPI = 100
_GRID_COLUMNS = 5


def _ratio(numerator: float, denominator: float) -> float:
    # A class never predicted (or never present) scores 0 rather than NaN, as in sklearn.
    return numerator / denominator if denominator else 0.0


def _checked(
    y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` as int64 class indices and ``probabilities`` as (N, classes), or ValueError."""
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
    return truth.astype(np.int64), probs


def _top_k_accuracy(truth: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among their ``k`` most probable ones."""
    # Stable sort so ties rank the lower class index first, as argmax does.
    ranked = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((ranked == truth[:, None]).any(axis=1).mean())


def _log_loss(truth: np.ndarray, probs: np.ndarray) -> float:
    # Clipped so that one confident miss costs -ln(1e-15) ~ 34.5, not infinity.
    given = np.clip(probs[np.arange(len(truth)), truth], LOG_LOSS_CLIP, 1.0)
    return float(-np.log(given).mean())


def _calibration(
    confidence: np.ndarray, correct: np.ndarray
) -> tuple[float, list[dict[str, float | int | None]]]:
    """Expected calibration error and the per-bin figures of the reliability diagram."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    # Bins are closed on the right, (lower, upper]; the first one also holds 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, CALIBRATION_BINS - 1)
    counts = np.bincount(which, minlength=CALIBRATION_BINS)
    confidence_sums = np.bincount(which, weights=confidence, minlength=CALIBRATION_BINS)
    correct_sums = np.bincount(which, weights=correct, minlength=CALIBRATION_BINS)
    # sum over bins of (n_b / N) * |accuracy_b - confidence_b|, with the n_b cancelled.
    ece = float(np.abs(correct_sums - confidence_sums).sum() / len(confidence))
    bins: list[dict[str, float | int | None]] = [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": int(counts[b]),
            "confidence": float(confidence_sums[b] / counts[b]) if counts[b] else None,
            "accuracy": float(correct_sums[b] / counts[b]) if counts[b] else None,
        }
        for b in range(CALIBRATION_BINS)
    ]
    return ece, bins


def evaluate(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro F1, top-k accuracy, log loss, calibration, per-class scores and the
    confusion matrix.

    ``y_true`` holds class indices into ``labels``; ``probabilities`` is (N, len(labels)).
    Values are plain Python numbers, ready for JSON:

    - ``top2_accuracy``, ``top3_accuracy``: the true class is among the 2 (3) most probable
      (ties rank the lower class index first, as argmax does).
    - ``log_loss``: the mean of -ln p, p being the probability given to the true class,
      clipped to [``LOG_LOSS_CLIP``, 1] so that a confident miss is finite.
    - ``expected_calibration_error``: confidence is a sample's top probability; samples fall in
      ``CALIBRATION_BINS`` (15) equal-width bins of [0, 1], each closed on the right
      ((lower, upper], the first one also holds 0); ECE = sum over bins of
      (n_b / N) * |accuracy_b - mean confidence_b|. ``calibration_bins`` gives each bin's
      ``lower``, ``upper``, ``count``, ``confidence`` and ``accuracy`` (the last two None
      when it is empty).
    - ``per_class`` precision, recall, F1 and support; ``confusion_matrix`` rows are true
      classes, columns predicted ones.
    """
    truth, probs = _checked(y_true, probabilities, labels)
    num_classes = len(labels)
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

    ece, bins = _calibration(probs.max(axis=1), (predicted == truth).astype(np.float64))
    return {
        "accuracy": float(true_positives.sum() / len(truth)),
        "macro_f1": float(np.mean(f1_scores)),
        **{f"top{k}_accuracy": _top_k_accuracy(truth, probs, k) for k in _TOP_K},
        "log_loss": _log_loss(truth, probs),
        "expected_calibration_error": ece,
        "calibration_bins": bins,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def _png(figure: Figure, title: str) -> bytes:
    """The figure as PNG, ``title`` drawn on top and stored as the PNG's Title text."""
    figure.suptitle(title)
    FigureCanvasAgg(figure)  # attaches itself: render with Agg whatever the global backend
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Title": title})
    return buffer.getvalue()


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray, labels: list[str], *, version: str
) -> bytes:
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
    return _png(figure, f"{version} — confusion matrix")


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


def plot_training_curves(history: Mapping[str, Sequence[float | None]], *, version: str) -> bytes:
    """PNG with loss and accuracy per epoch, training against validation.

    If ``history`` has a ``phase`` series (one number per epoch, as made by
    ``combine_histories``), a dashed line marks where each new phase starts. A missing value
    may be NaN or None (as stored in JSON).
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
            values = np.asarray(history.get(key, []), dtype=float)  # None becomes NaN
            if values.size:
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
    return _png(figure, f"{version} — training curves")


def plot_reliability_diagram(
    bins: Sequence[Mapping[str, Any]], expected_calibration_error: float, *, version: str
) -> bytes:
    """PNG of accuracy against confidence per bin (``calibration_bins`` of ``evaluate``) with
    the diagonal of perfect calibration, and below it how many covers each bin holds."""
    if not bins:
        raise ValueError("no calibration bins to draw")
    lower = np.array([b["lower"] for b in bins], dtype=float)
    widths = np.array([b["upper"] for b in bins], dtype=float) - lower
    counts = np.array([b["count"] for b in bins], dtype=np.int64)
    filled = counts > 0
    accuracy = np.array([b["accuracy"] for b in bins], dtype=float)[filled]
    confidence = np.array([b["confidence"] for b in bins], dtype=float)[filled]
    ece = f"ECE {expected_calibration_error:.3f}"

    figure = Figure(figsize=(6.0, 7.0), dpi=_DPI, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(
        lower[filled],
        accuracy,
        width=widths[filled],
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    # The gap up (or down) to the bin's mean confidence: what the ECE sums, weighted.
    top.bar(
        lower[filled],
        confidence - accuracy,
        bottom=accuracy,
        width=widths[filled],
        align="edge",
        facecolor=(1.0, 0.0, 0.0, 0.15),
        edgecolor="tab:red",
        hatch="//",
        label="gap to mean confidence",
    )
    top.plot([0.0, 1.0], [0.0, 1.0], "--", color="grey", label="perfect calibration")
    top.set(xlim=(0.0, 1.0), ylim=(0.0, 1.0), ylabel="accuracy")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(lower, counts, width=widths, align="edge", edgecolor="black", color="tab:grey")
    bottom.set(xlabel="confidence (top probability)", ylabel="covers")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(figure, f"{version} — reliability diagram ({ece})")


@dataclass(frozen=True)
class CoverExample:
    """A test cover as the grid shows it."""

    pixels: np.ndarray  # (H, W, 3) uint8
    true_label: str
    predicted_label: str
    confidence: float

    @property
    def correct(self) -> bool:
        return self.true_label == self.predicted_label


@dataclass(frozen=True)
class CoverPicks:
    """The covers of the grid: the most confident correct answer of each genre that has one
    (in label order), and the most confident mistakes (most confident first)."""

    correct: list[CoverExample]
    mistakes: list[CoverExample]


def pick_covers(
    images: Sequence[np.ndarray] | np.ndarray,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    labels: list[str],
    *,
    mistakes: int = _MISTAKES_SHOWN,
) -> CoverPicks:
    """The covers the grid shows, out of the test split (``images`` aligned with ``y_true``)."""
    truth, probs = _checked(y_true, probabilities, labels)
    if len(images) != len(truth):
        raise ValueError(f"{len(images)} images for {len(truth)} answers")
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    best_correct: dict[int, int] = {}
    worst_mistakes: list[int] = []
    # Most confident first; the stable sort keeps test-split order among ties.
    for i in np.argsort(-confidence, kind="stable").tolist():
        if predicted[i] == truth[i]:
            best_correct.setdefault(int(truth[i]), i)
        elif len(worst_mistakes) < mistakes:
            worst_mistakes.append(i)

    def example(i: int) -> CoverExample:
        return CoverExample(
            pixels=np.asarray(images[i]),
            true_label=labels[truth[i]],
            predicted_label=labels[predicted[i]],
            confidence=float(confidence[i]),
        )

    return CoverPicks(
        correct=[example(best_correct[c]) for c in sorted(best_correct)],
        mistakes=[example(i) for i in worst_mistakes],
    )


def plot_cover_grid(picks: CoverPicks, *, version: str) -> bytes:
    """PNG grid of test covers in two sections, the most confident correct answer per genre
    and the most confident mistakes, each cover captioned with its true genre, the predicted
    one and its probability (green when right, red when wrong)."""
    sections = (
        ("most confident correct answer per genre", picks.correct, "no correct answer"),
        ("most confident mistakes", picks.mistakes, "no mistakes"),
    )
    rows = [max(1, math.ceil(len(examples) / _GRID_COLUMNS)) for _, examples, _ in sections]
    figure = Figure(
        figsize=(2.2 * _GRID_COLUMNS, 0.5 + 2.7 * sum(rows)), dpi=_DPI, layout="constrained"
    )
    subfigures = figure.subfigures(len(sections), 1, squeeze=False, height_ratios=rows).flat
    for subfigure, (heading, examples, none), count in zip(subfigures, sections, rows, strict=True):
        subfigure.suptitle(heading)
        grid = subfigure.subplots(count, _GRID_COLUMNS, squeeze=False)
        for axes in grid.flat:
            axes.set_axis_off()
        if not examples:
            subfigure.text(0.5, 0.5, none, ha="center", va="center", color="grey")
        for axes, cover in zip(grid.flat, examples, strict=False):
            axes.imshow(cover.pixels)
            axes.set_title(
                f"true: {cover.true_label}\n"
                f"predicted: {cover.predicted_label} ({cover.confidence:.0%})",
                fontsize=9,
                color="tab:green" if cover.correct else "tab:red",
            )
    return _png(figure, f"{version} — test covers")


def draw_report_figures(
    *,
    version: str,
    labels: list[str],
    metrics: Mapping[str, Any],
    history: Mapping[str, Sequence[float | None]],
    covers: CoverPicks,
) -> dict[str, bytes]:
    """Every report image of ``version`` as PNG, by its name in
    ``sleeve_common.registry.REPORT_IMAGES`` (``metrics`` as made by ``evaluate``,
    ``history`` by ``combine_histories``)."""
    return {
        "confusion_matrix": plot_confusion_matrix(
            metrics["confusion_matrix"], labels, version=version
        ),
        "training_curves": plot_training_curves(history, version=version),
        "reliability_diagram": plot_reliability_diagram(
            metrics["calibration_bins"], metrics["expected_calibration_error"], version=version
        ),
        "cover_grid": plot_cover_grid(covers, version=version),
    }
