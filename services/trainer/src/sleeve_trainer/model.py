"""The network: a frozen MobileNetV2 base, a small softmax head, and the uint8 classifier.

Pixel scaling lives inside the graph (``preprocess``), so the embedding path used in
phase 1 and the exported classifier scale images identically, and clients send the
uint8 arrays made by ``sleeve_common.images.decode_model_input``.

The base is always called with ``training=False``: the provided weights fold batch
normalisation into the convolutions, so BN layers must keep their stored statistics.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import keras

from sleeve_common.model_signature import INPUT_DTYPE, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from sleeve_trainer.exceptions import TrainerError

__all__ = [
    "EMBEDDING_SIZE",
    "IMAGENET",
    "build_classifier",
    "build_head",
    "build_top",
    "build_trunk",
    "cut_layer",
    "load_base",
    "preprocess",
    "unfreeze_top",
]

logger = logging.getLogger(__name__)

IMAGENET = "imagenet"
"""``weights`` value that lets Keras download the official ImageNet file."""

_BLOCK = re.compile(r"block_(\d+)_")

EMBEDDING_SIZE = 1280
"""Width of MobileNetV2 1.0's pooled feature vector."""


def load_base(weights: str) -> keras.Model:
    """MobileNetV2 1.0 without its top, average-pooled to 1280 values, all layers frozen.

    ``weights`` is ``"imagenet"`` (download) or the path of a Keras ``.h5`` file.
    """
    if weights != IMAGENET:
        path = Path(weights)
        if not path.is_file():
            raise TrainerError(
                f"base weights not found: {path} (SLEEVE_BASE_WEIGHTS names the MobileNetV2 "
                f"no-top .h5 file, or is `{IMAGENET}` to download it)"
            )
    try:
        base = keras.applications.MobileNetV2(
            input_shape=INPUT_SHAPE,
            alpha=1.0,
            include_top=False,
            weights=weights,
            pooling="avg",
        )
    except Exception as exc:
        # keras.utils.get_file reports a failed download as a bare Exception (or an OSError).
        if weights == IMAGENET:
            raise TrainerError(
                f"cannot download the ImageNet weights ({exc}); offline, set "
                "SLEEVE_BASE_WEIGHTS to the path of a local copy of "
                "mobilenet_v2_1.0_224_imagenet_no_top.h5"
            ) from exc
        if not isinstance(exc, OSError | ValueError):
            raise
        raise TrainerError(
            f"cannot load base weights {weights!r} (SLEEVE_BASE_WEIGHTS): {exc}"
        ) from exc
    base.trainable = False
    logger.info("loaded base %s from %s", base.name, weights)
    return base


def preprocess(images: Any) -> Any:
    """Symbolic uint8 NHWC images to float32 in [-1, 1], MobileNetV2's expected range."""
    floats = keras.ops.cast(images, "float32")
    return keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="preprocess")(floats)


def _image_input() -> Any:
    return keras.Input(shape=INPUT_SHAPE, dtype=INPUT_DTYPE, name=INPUT_NAME)


def cut_layer(base: keras.Model, unfreeze_blocks: int) -> str:
    """The layer whose output feeds the top ``unfreeze_blocks`` blocks (the last layer of the
    block below them): below it the base stays frozen, above it fine-tuning may train."""
    numbers = sorted({int(m.group(1)) for layer in base.layers if (m := _BLOCK.match(layer.name))})
    if not 1 <= unfreeze_blocks < len(numbers):
        raise ValueError(f"unfreeze_blocks must be in [1, {len(numbers)}), got {unfreeze_blocks}")
    below = f"block_{numbers[-unfreeze_blocks - 1]}_"
    last: str = [layer.name for layer in base.layers if layer.name.startswith(below)][-1]
    return last


def build_trunk(base: keras.Model, cut: str) -> keras.Model:
    """uint8 images to the activations at ``cut``, scaled exactly as in the classifier: the
    part of the base that training leaves frozen."""
    trunk = keras.Model(base.input, base.get_layer(cut).output)
    images = _image_input()
    return keras.Model(images, trunk(preprocess(images), training=False), name="trunk")


def build_top(base: keras.Model, cut: str) -> keras.Model:
    """The base above ``cut``: its activations to the pooled embedding. It shares its layers
    (and so its weights) with ``base``, so training it trains the exported classifier."""
    return keras.Model(base.get_layer(cut).output, base.output, name="top")


def build_head(
    num_classes: int,
    *,
    dropout: float,
    embedding_size: int = EMBEDDING_SIZE,
    seed: int = 0,
) -> keras.Model:
    """Dropout and a softmax layer on the pooled embedding; seeded so runs repeat."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    embedding = keras.Input(shape=(embedding_size,), dtype="float32", name="embedding")
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(embedding)
    probabilities = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name=OUTPUT_NAME,
    )(x)
    return keras.Model(embedding, probabilities, name="head")


def build_classifier(base: keras.Model, head: keras.Model) -> keras.Model:
    """The exported model: uint8 NHWC ``image`` in, class probabilities out.

    It shares its layers (and so its weights) with ``base`` and ``head``.
    """
    images = _image_input()
    features = base(preprocess(images), training=False)
    # No training flag on the head: its dropout should act while fine-tuning.
    probabilities = head(features)
    return keras.Model(images, probabilities, name="sleeve_classifier")


def unfreeze_top(base: keras.Model, unfreeze_blocks: int) -> list[str]:
    """Make the top ``unfreeze_blocks`` blocks and the last 1x1 convolution trainable (batch
    normalisation excluded: the provided weights fold it into the convolutions); returns the
    names of the layers with weights that will train."""
    cut = cut_layer(base, unfreeze_blocks) if unfreeze_blocks else None
    # Keras propagates ``trainable`` to sublayers, so open the base, then close layers.
    base.trainable = True
    above = False
    trained: list[str] = []
    for layer in base.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = above and not is_bn
        if layer.trainable and layer.weights:
            trained.append(layer.name)
        above = above or layer.name == cut
    return trained
