"""Training: phase 1 fits the head on cached embeddings, phase 2 fine-tunes the top of the base.

Both phases are seeded through ``keras.utils.set_random_seed`` (Python, NumPy and
TensorFlow generators), so a run repeats as far as the kernels are deterministic.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from sleeve_trainer.exceptions import DatasetTooSmall

__all__ = ["EpochCallback", "class_weights", "fine_tune", "fit_head"]

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
"""Called after each epoch with its 1-based number and its metrics."""

_BLOCK = re.compile(r"block_(\d+)_")
# Layers after the last inverted-residual block: the 1x1 convolution to 1280 channels.
_TOP_LAYERS = frozenset({"Conv_1", "Conv_1_bn", "out_relu"})


class _EpochReporter(keras.callbacks.Callback):  # type: ignore[misc]  # Keras has no stubs
    def __init__(self, on_epoch: EpochCallback) -> None:
        super().__init__()
        self._on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        self._on_epoch(epoch + 1, metrics)


def _check_split(name: str, x: np.ndarray, y: np.ndarray) -> None:
    if len(x) == 0:
        raise DatasetTooSmall(f"the {name} split is empty")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} labels")


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
    callbacks = [_EpochReporter(on_epoch)] if on_epoch is not None else []
    history = head.fit(
        np.asarray(train_x, dtype=np.float32),
        np.asarray(train_y, dtype=np.int64),
        validation_data=(np.asarray(val_x, dtype=np.float32), np.asarray(val_y, dtype=np.int64)),
        epochs=epochs,
        batch_size=batch_size,
        class_weight=class_weight,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    return _history(history)


class _FlippedBatches(keras.utils.PyDataset):  # type: ignore[misc]  # Keras has no stubs
    """Shuffled batches of uint8 images, each mirrored left to right with probability 1/2.

    Flipping here, not in the model, keeps augmentation out of the exported graph.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> None:
        super().__init__()
        self._images = images
        self._labels = labels
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(images))

    def __len__(self) -> int:
        return -(-len(self._images) // self._batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._order[index * self._batch_size : (index + 1) * self._batch_size]
        batch = self._images[rows].copy()
        flips = self._rng.random(len(rows)) < 0.5
        batch[flips] = batch[flips, :, ::-1, :]
        return batch, self._labels[rows]

    def on_epoch_end(self) -> None:
        self._order = self._rng.permutation(len(self._images))


def _unfreeze_top(base: keras.Model, unfreeze_blocks: int) -> list[str]:
    """Make the top ``unfreeze_blocks`` blocks trainable (BN excluded); returns their names."""
    numbers = {int(m.group(1)) for layer in base.layers if (m := _BLOCK.match(layer.name))}
    if not 0 <= unfreeze_blocks <= len(numbers):
        raise ValueError(f"unfreeze_blocks must be in [0, {len(numbers)}], got {unfreeze_blocks}")
    chosen = set(sorted(numbers)[len(numbers) - unfreeze_blocks :])
    # Keras propagates ``trainable`` to sublayers, so open the base, then close layers.
    base.trainable = True
    trained: list[str] = []
    for layer in base.layers:
        match = _BLOCK.match(layer.name)
        in_top = unfreeze_blocks > 0 and layer.name in _TOP_LAYERS
        in_block = match is not None and int(match.group(1)) in chosen
        # BN stays frozen: the provided weights fold BN into the convolutions.
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = (in_top or in_block) and not is_bn
        if layer.trainable and layer.weights:
            trained.append(layer.name)
    return trained


def fine_tune(
    classifier: keras.Model,
    base: keras.Model,
    train_images: np.ndarray,
    train_y: np.ndarray,
    val_images: np.ndarray,
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
    """Phase 2: train the head with the top ``unfreeze_blocks`` blocks of ``base``.

    ``classifier`` must be built on ``base``; images are uint8 (N, 224, 224, 3) and
    are mirrored at random. The last 1x1 convolution trains with the blocks whenever
    ``unfreeze_blocks`` >= 1. The base is frozen again afterwards (weights kept).
    """
    _check_split("training", train_images, train_y)
    _check_split("validation", val_images, val_y)
    if base not in classifier.layers:
        raise ValueError("classifier is not built on this base")
    keras.utils.set_random_seed(seed)
    try:
        trained = _unfreeze_top(base, unfreeze_blocks)
        logger.info("fine-tuning %d base layers: %s", len(trained), ", ".join(trained))
        # Compile after changing ``trainable``: Keras fixes the trained variables then.
        _compile(classifier, learning_rate)
        callbacks = [_EpochReporter(on_epoch)] if on_epoch is not None else []
        batches = _FlippedBatches(
            np.asarray(train_images, dtype=np.uint8),
            np.asarray(train_y, dtype=np.int64),
            batch_size,
            seed,
        )
        history = classifier.fit(
            batches,
            validation_data=(
                np.asarray(val_images, dtype=np.uint8),
                np.asarray(val_y, dtype=np.int64),
            ),
            validation_batch_size=batch_size,
            epochs=epochs,
            class_weight=class_weight,
            callbacks=callbacks,
            verbose=0,
        )
    finally:
        base.trainable = False
    return _history(history)
