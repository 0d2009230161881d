"""Simple baselines, trained and scored on the model's own split: what the model must beat.

- ``colour_histogram``: a joint RGB histogram (8 levels per channel) of the served view;
- ``linear_probe``: the frozen base's pooled embedding of the served view.

Each is a softmax regression (the head without dropout) on standardised features, trained
like the head (class weights, early stopping on the validation split). The report stores
their scores and by how much the model beats each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from sleeve_trainer.fit import fit_head
from sleeve_trainer.model import build_head
from sleeve_trainer.report import evaluate

__all__ = ["colour_histograms", "compare_with_baselines", "score_baseline"]

_LEVELS = 8  # per channel: 512 bins
_EPOCHS = 100  # an upper bound; early stopping ends sooner
_LEARNING_RATE = 1e-3
_BATCH = 64
_SCORES = ("accuracy", "macro_f1", "top2_accuracy", "top3_accuracy", "log_loss")


def colour_histograms(images: Iterable[np.ndarray]) -> np.ndarray:
    """uint8 (H, W, 3) images to (N, 512) float32 shares of pixels per RGB bin."""
    return np.stack([_histogram(image) for image in images])


def _histogram(image: np.ndarray) -> np.ndarray:
    # One image at a time: the bin index of a whole batch would need 8 bytes per value.
    levels = (image // (256 // _LEVELS)).astype(np.int32).reshape(-1, 3)
    bins = (levels[:, 0] * _LEVELS + levels[:, 1]) * _LEVELS + levels[:, 2]
    return (np.bincount(bins, minlength=_LEVELS**3) / len(bins)).astype(np.float32)


def score_baseline(
    features: tuple[np.ndarray, np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray, np.ndarray],
    labels: list[str],
    *,
    class_weight: dict[int, float],
    seed: int,
) -> dict[str, float]:
    """Train a softmax regression on (train, val, test) ``features`` and score it on test."""
    train_x, val_x, test_x = (np.asarray(x, dtype=np.float32) for x in features)
    train_y, val_y, test_y = targets
    mean, scale = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    probe = build_head(len(labels), dropout=0.0, embedding_size=train_x.shape[1], seed=seed)
    fit_head(
        probe,
        (train_x - mean) / scale,
        train_y,
        (val_x - mean) / scale,
        val_y,
        epochs=_EPOCHS,
        learning_rate=_LEARNING_RATE,
        batch_size=_BATCH,
        class_weight=class_weight,
        on_epoch=None,
        seed=seed,
    )
    probabilities = np.asarray(probe.predict((test_x - mean) / scale, verbose=0))
    scores = evaluate(test_y, probabilities, labels)
    return {name: float(scores[name]) for name in _SCORES}


def compare_with_baselines(
    metrics: dict[str, Any], baselines: dict[str, dict[str, float]]
) -> dict[str, dict[str, Any]]:
    """Each baseline's scores with ``model_gain``: the model's figure minus the baseline's
    (for log loss, the baseline's minus the model's: positive is better either way)."""
    compared: dict[str, dict[str, Any]] = {}
    for name, scores in baselines.items():
        gain = {
            score: (value - metrics[score]) if score == "log_loss" else (metrics[score] - value)
            for score, value in scores.items()
        }
        compared[name] = {**scores, "model_gain": gain}
    return compared
