"""The frozen trunk of the base, run by ONNX Runtime, and an on-disk cache of its activations.

Training changes only the top ``unfreeze_blocks`` blocks of MobileNetV2 and the head, so the
rest of the base (the trunk) maps each view of a cover to the same activations in every epoch
and every run. They are computed once, by ONNX Runtime on an export of the trunk (several
times faster than Keras on a CPU), and kept as float16 ``.npy`` files, one per cover holding
all its views, keyed by the base weights' digest, the cut and the cover's sha256. The cut
depends on how many blocks may train, not on whether they do, so a run without fine-tuning
shares the cache of one with it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import keras
import numpy as np

from sleeve_common.cpus import available_cpus
from sleeve_common.model_signature import INPUT_NAME, INPUT_SHAPE
from sleeve_trainer.exceptions import TrainerError
from sleeve_trainer.export import export_onnx
from sleeve_trainer.model import IMAGENET, build_trunk
from sleeve_trainer.onnx_session import ORT_ERRORS, open_cpu_session

__all__ = ["ActivationCache", "Trunk", "trunk_activations", "weights_id"]

logger = logging.getLogger(__name__)

# Bump when the trunk's input or output changes (scaling, views, dtype): entries computed
# before must not be mixed with new ones.
_CACHE_VERSION = "v2"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_CHUNK = 1 << 20
_ACTIVATIONS = "activations"


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


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write then rename, so a crash never leaves a truncated file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ActivationCache:
    """Per-cover activations under ``directory/<version>-<base_id>-<cut>/``.

    An entry holds every view of one cover, float16 (views, *activation shape); a cover
    cached with another number of views is a miss. An unreadable entry is a miss too.
    """

    def __init__(self, directory: Path, base_id: str, cut: str) -> None:
        for name, value in (("base_id", base_id), ("cut", cut)):
            if not _SAFE_ID.fullmatch(value):
                raise ValueError(f"{name} must be a plain name, got {value!r}")
        self.root = Path(directory) / f"{_CACHE_VERSION}-{base_id}-{cut}"

    def _path(self, key: str, views: int) -> Path:
        # Checked because keys become file names: nothing else may reach the disk.
        if not _SHA256.fullmatch(key):
            raise ValueError(f"cache key must be a lowercase sha256 hex digest, got {key!r}")
        return self.root / key[:2] / f"{key}-{views}.npy"

    def has(self, key: str, views: int) -> bool:
        """Whether an entry is stored (without reading it: ``get`` may still find it bad)."""
        return self._path(key, views).is_file()

    def get(self, key: str, views: int) -> np.ndarray | None:
        """The cached entry (memory-mapped, read-only), or None."""
        path = self._path(key, views)
        if not path.is_file():
            return None
        try:
            entry: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("ignoring unreadable cached activations %s: %s", path, exc)
            return None
        if entry.dtype != np.float16 or entry.ndim < 2 or len(entry) != views:
            logger.warning("ignoring malformed cached activations %s", path)
            return None
        return entry

    def put(self, key: str, entry: np.ndarray) -> None:
        """Store one cover's activations (views first), replacing any earlier entry."""
        array = np.ascontiguousarray(entry, dtype=np.float16)
        _write_atomically(
            self._path(key, len(array)), lambda handle: np.save(handle, array, allow_pickle=False)
        )

    @property
    def trunk_file(self) -> Path:
        """Where the trunk's ONNX export is kept between runs."""
        return self.root / "trunk.onnx"


class Trunk:
    """The frozen part of ``base`` below ``cut``, exported to ONNX once per cache and run by
    ONNX Runtime on all the cores this process may use."""

    def __init__(self, base: keras.Model, cut: str, cache: ActivationCache) -> None:
        path = cache.trunk_file
        if not path.is_file():
            onnx = export_onnx(build_trunk(base, cut), output_name=_ACTIVATIONS)
            _write_atomically(path, lambda handle: handle.write(onnx))
        try:
            self._session = open_cpu_session(path.read_bytes(), threads=available_cpus())
        except ORT_ERRORS as exc:
            path.unlink(missing_ok=True)  # rebuilt by the next run
            raise TrainerError(f"ONNX Runtime cannot open the trunk {path}: {exc}") from exc

    def run(self, images: np.ndarray) -> np.ndarray:
        """float16 activations of a uint8 (N, 224, 224, 3) batch."""
        if images.dtype != np.uint8 or images.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected uint8 images (N, *{INPUT_SHAPE}), got {images.shape}")
        (activations,) = self._session.run(
            [_ACTIVATIONS], {INPUT_NAME: np.ascontiguousarray(images)}
        )
        return np.asarray(activations, dtype=np.float16)


def trunk_activations(
    trunk: Trunk,
    cache: ActivationCache,
    keys: Sequence[str],
    load_views: Callable[[str], np.ndarray],
    *,
    views: int,
    on_cover: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Each key's activations, (views, *shape) float16, computing and caching the missing ones.

    ``load_views`` turns a key into its uint8 views and is called for misses only, so a
    cached cover is neither fetched, decoded nor run. ``on_cover`` gets the count done so far.
    """
    entries: dict[str, np.ndarray] = {}
    computed = 0
    for done, key in enumerate(keys, start=1):
        if key not in entries:
            entry = cache.get(key, views)
            if entry is None:
                images = load_views(key)
                if len(images) != views:
                    raise ValueError(f"expected {views} views of {key}, got {len(images)}")
                cache.put(key, trunk.run(images))
                computed += 1
                # Read back memory-mapped: memory stays flat whatever the dataset's size.
                entry = cache.get(key, views)
                if entry is None:
                    raise TrainerError(f"cannot read back the activations cached in {cache.root}")
            entries[key] = entry
        if on_cover is not None:
            on_cover(done)
    logger.info("trunk activations: %d cached, %d computed", len(entries) - computed, computed)
    return [entries[key] for key in keys]
