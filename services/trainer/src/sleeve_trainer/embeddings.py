"""Embeddings of covers under the frozen base, and an on-disk cache of them.

Phase 1 trains only the head, so each cover goes through the base once per view
(as is, and mirrored for augmentation). The cache keeps those vectors between
training runs, keyed by the base weights' digest, the cover's sha256 and the view.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import keras
import numpy as np

from sleeve_common.model_signature import INPUT_SHAPE
from sleeve_trainer.exceptions import TrainerError
from sleeve_trainer.model import IMAGENET, build_embedder

__all__ = [
    "EmbeddingCache",
    "compute_embeddings",
    "embed_with_cache",
    "weights_id",
]

logger = logging.getLogger(__name__)

# Bump when the embedding path changes (scaling, pooling, input size): old cache
# entries were computed differently and must not be mixed with new ones.
_EMBEDDING_VERSION = "v1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_CHUNK = 1 << 20


def weights_id(weights: str) -> str:
    """Digest naming a base: sha256 of the weights file, or a fixed name for ``imagenet``."""
    if weights == IMAGENET:
        # Keras downloads one fixed, checksummed file for this configuration.
        return "imagenet-mobilenet_v2_1.0_224_no_top"
    path = Path(weights)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise TrainerError(f"cannot read base weights {path}: {exc}") from exc
    return digest.hexdigest()


def _batches(images: Iterable[np.ndarray] | np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    if isinstance(images, np.ndarray):
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size]
        return
    pending: list[np.ndarray] = []
    for image in images:
        pending.append(image)
        if len(pending) == batch_size:
            yield np.stack(pending)
            pending = []
    if pending:
        yield np.stack(pending)


def compute_embeddings(
    base: keras.Model,
    images: Iterable[np.ndarray] | np.ndarray,
    *,
    batch_size: int,
    flip: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pooled base features of uint8 (224, 224, 3) images: float32 array (N, 1280).

    ``flip`` mirrors every image left to right first (the augmented view).
    ``on_batch`` gets the number of images embedded so far after each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    embedder = build_embedder(base)
    width = int(embedder.output_shape[-1])
    outputs: list[np.ndarray] = []
    done = 0
    for batch in _batches(images, batch_size):
        if batch.dtype != np.uint8 or batch.shape[1:] != INPUT_SHAPE:
            raise ValueError(
                f"expected uint8 images of shape {INPUT_SHAPE}, got {batch.dtype} {batch.shape[1:]}"
            )
        if flip:
            batch = batch[:, :, ::-1, :]
        rows = len(batch)
        if done and rows < batch_size:
            # Pad the short last batch to the traced shape: a new shape costs a retrace.
            padding = np.zeros((batch_size - rows, *INPUT_SHAPE), dtype=np.uint8)
            batch = np.concatenate([batch, padding])
        features = embedder.predict_on_batch(np.ascontiguousarray(batch))
        outputs.append(np.asarray(features[:rows], dtype=np.float32))
        done += rows
        if on_batch is not None:
            on_batch(done)
    if not outputs:
        return np.zeros((0, width), dtype=np.float32)
    return np.concatenate(outputs)


class EmbeddingCache:
    """Embeddings stored as ``.npy`` files under ``directory/<version>-<base_id>/``.

    Keys are covers' sha256 hex digests; ``flip`` selects the mirrored view.
    Writes are atomic, and an unreadable entry counts as a miss.
    """

    def __init__(self, directory: Path, base_id: str) -> None:
        if not _SAFE_ID.fullmatch(base_id):
            raise ValueError(f"base_id must be a plain name, got {base_id!r}")
        self.base_id = base_id
        self.root = Path(directory) / f"{_EMBEDDING_VERSION}-{base_id}"

    def _path(self, key: str, flip: bool) -> Path:
        # Checked because keys become file names: nothing else may reach the disk.
        if not _SHA256.fullmatch(key):
            raise ValueError(f"cache key must be a lowercase sha256 hex digest, got {key!r}")
        suffix = "-flip" if flip else ""
        return self.root / key[:2] / f"{key}{suffix}.npy"

    def get_many(self, keys: Sequence[str], *, flip: bool = False) -> dict[str, np.ndarray]:
        """The cached embeddings among ``keys``; missing or unreadable ones are left out."""
        found: dict[str, np.ndarray] = {}
        for key in keys:
            path = self._path(key, flip)
            if key in found or not path.is_file():
                continue
            try:
                vector = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                logger.warning("ignoring unreadable cached embedding %s: %s", path, exc)
                continue
            if vector.ndim != 1 or vector.dtype != np.float32:
                logger.warning("ignoring malformed cached embedding %s", path)
                continue
            found[key] = vector
        return found

    def put_many(self, keys: Sequence[str], array: np.ndarray, *, flip: bool = False) -> None:
        """Store row ``i`` of ``array`` under ``keys[i]``, replacing any earlier entry."""
        if array.ndim != 2 or len(array) != len(keys):
            raise ValueError(f"need one row per key: {len(keys)} keys, array {array.shape}")
        rows = np.asarray(array, dtype=np.float32)
        for key, row in zip(keys, rows, strict=True):
            path = self._path(key, flip)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a crash never leaves a truncated entry behind.
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    np.save(handle, row, allow_pickle=False)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def embed_with_cache(
    base: keras.Model,
    cache: EmbeddingCache,
    keys: Sequence[str],
    load: Callable[[str], np.ndarray],
    *,
    batch_size: int,
    flip: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embeddings for ``keys`` in order, computing (and caching) only the missing ones.

    ``load`` turns a key into its uint8 model input and is called for misses only,
    so a cached cover is neither fetched, decoded nor run through the base.
    """
    cached = cache.get_many(keys, flip=flip)
    missing = list(dict.fromkeys(key for key in keys if key not in cached))
    logger.info("embeddings: %d cached, %d to compute", len(keys) - len(missing), len(missing))
    if missing:
        fresh = compute_embeddings(
            base,
            (load(key) for key in missing),
            batch_size=batch_size,
            flip=flip,
            on_batch=on_batch,
        )
        cache.put_many(missing, fresh, flip=flip)
        cached.update(zip(missing, fresh, strict=True))
    if not keys:
        return np.zeros((0, int(base.output_shape[-1])), dtype=np.float32)
    return np.stack([cached[key] for key in keys]).astype(np.float32, copy=False)
