"""Training: phase 1 fits the head on cached embeddings, phase 2 fine-tunes the top of the base.

Both phases are seeded through ``keras.utils.set_random_seed`` (Python, NumPy and
TensorFlow generators), so a run repeats as far as the kernels are deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from sleeve_trainer.exceptions import DatasetTooSmall
from sleeve_trainer.model import unfreeze_top

__all__ = ["EpochCallback", "class_weights", "fine_tune", "fit_head"]

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
"""Called after each epoch with its 1-based number and its metrics."""

_PATIENCE = 3  # epochs without a lower validation loss before a phase stops


class _EpochReporter(keras.callbacks.Callback):  # type: ignore[misc]  # Keras has no stubs
    def __init__(self, on_epoch: EpochCallback) -> None:
        super().__init__()
        self._on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        self._on_epoch(epoch + 1, metrics)


def _check_split(name: str, x: Sequence[np.ndarray] | np.ndarray, y: np.ndarray) -> None:
    if len(x) == 0:
        raise DatasetTooSmall(f"the {name} split is empty")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} labels")


def _callbacks(on_epoch: EpochCallback | None) -> list[keras.callbacks.Callback]:
    """Keep the epoch with the lowest validation loss (more epochs then only cost time),
    and report each epoch."""
    best = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=_PATIENCE, restore_best_weights=True
    )
    return [best] + ([_EpochReporter(on_epoch)] if on_epoch is not None else [])


def _history(history: keras.callbacks.History) -> dict[str, list[float]]:
    return {name: [float(v) for v in values] for name, values in history.history.items()}


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """Balanced weights, ``n / (num_classes * count)``, so each class adds equally to the loss."""
    labels = np.asarray(y)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
    empty = [index for index, count in enumerate(counts) if count == 0]
    if empty:
        raise DatasetTooSmall(f"no training examples for classes {empty}")
    total = float(counts.sum())
    return {index: total / (num_classes * float(count)) for index, count in enumerate(counts)}


def fit_head(
    head: keras.Model,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    class_weight: dict[int, float] | None,
    on_epoch: EpochCallback | None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Phase 1: train the head on embeddings; returns loss, accuracy, val_loss, val_accuracy."""
    _check_split("training", train_x, train_y)
    _check_split("validation", val_x, val_y)
    keras.utils.set_random_seed(seed)
    _compile(head, learning_rate)
    history = head.fit(
        np.asarray(train_x, dtype=np.float32),
        np.asarray(train_y, dtype=np.int64),
        validation_data=(np.asarray(val_x, dtype=np.float32), np.asarray(val_y, dtype=np.int64)),
        epochs=epochs,
        batch_size=batch_size,
        class_weight=class_weight,
        shuffle=True,
        callbacks=_callbacks(on_epoch),
        verbose=0,
    )
    return _history(history)


class _RandomViews(keras.utils.PyDataset):  # type: ignore[misc]  # Keras has no stubs
    """Shuffled batches of cached trunk activations, one view of each cover drawn at random
    per epoch (the augmentation: crops and mirror images, see ``views.py``)."""

    def __init__(
        self, activations: Sequence[np.ndarray], labels: np.ndarray, batch_size: int, seed: int
    ) -> None:
        super().__init__()
        self._activations = activations
        self._labels = labels
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(activations))

    def __len__(self) -> int:
        return -(-len(self._activations) // self._batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._order[index * self._batch_size : (index + 1) * self._batch_size]
        batch = np.stack(
            [
                self._activations[row][self._rng.integers(len(self._activations[row]))]
                for row in rows
            ]
        ).astype(np.float32)
        return batch, self._labels[rows]

    def on_epoch_end(self) -> None:
        self._order = self._rng.permutation(len(self._activations))


def fine_tune(
    top: keras.Model,
    head: keras.Model,
    base: keras.Model,
    train_activations: Sequence[np.ndarray],
    train_y: np.ndarray,
    val_activations: np.ndarray,
    val_y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    unfreeze_blocks: int,
    batch_size: int,
    on_epoch: EpochCallback | None,
    class_weight: dict[int, float] | None = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Phase 2: train the head with the top ``unfreeze_blocks`` blocks of ``base``, on the
    trunk's cached activations (``top`` is ``base`` above the cut, sharing its layers).

    Each training cover gives one of its views per epoch, drawn at random; validation uses
    the served view. The weights of the epoch with the lowest validation loss are kept, and
    the base is frozen again afterwards.
    """
    _check_split("training", train_activations, train_y)
    _check_split("validation", val_activations, val_y)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=top.input_shape[1:], dtype="float32", name="activations")
    model = keras.Model(inputs, head(top(inputs)), name="fine_tuned")
    try:
        trained = unfreeze_top(base, unfreeze_blocks)
        logger.info("fine-tuning %d base layers: %s", len(trained), ", ".join(trained))
        # Compile after changing ``trainable``: Keras fixes the trained variables then.
        _compile(model, learning_rate)
        history = model.fit(
            _RandomViews(train_activations, np.asarray(train_y, dtype=np.int64), batch_size, seed),
            validation_data=(
                np.asarray(val_activations, dtype=np.float32),
                np.asarray(val_y, dtype=np.int64),
            ),
            validation_batch_size=batch_size,
            epochs=epochs,
            class_weight=class_weight,
            callbacks=_callbacks(on_epoch),
            verbose=0,
        )
    finally:
        base.trainable = False
    return _history(history)
