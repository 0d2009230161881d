"""The served ONNX model: fetched from the registry and store, checked, run by onnxruntime.

``ModelHolder`` owns the current model and swaps in a newly promoted version when it
refreshes, so a running server picks up a model trained after it started.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sleeve_common.exceptions import NotFound
from sleeve_common.models import ModelVersion
from sleeve_common.registry import resolve_serving_version
from sleeve_common.runtime import Runtime

__all__ = ["LoadedModel", "ModelHolder", "choose_providers"]

logger = logging.getLogger(__name__)


class ModelIntegrityError(RuntimeError):
    """The stored ONNX file does not match the sha256 the registry recorded."""


def choose_providers(requested: str | None) -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always last (automatic fallback)."""
    available = ort.get_available_providers()
    if requested:
        wanted = [p.strip() for p in requested.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in available]
        if unknown:
            raise ValueError(
                f"SLEEVE_ORT_PROVIDERS names unavailable providers {unknown}; have {available}"
            )
        return wanted
    if "CUDAExecutionProvider" in available and _nvidia_driver_present():
        # Finds CUDA and cuDNN when they came as pip wheels (the image's "gpu" extra).
        ort.preload_dlls()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _nvidia_driver_present() -> bool:
    """onnxruntime-gpu lists CUDA even on machines without a GPU; the driver library tells."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class LoadedModel:
    version: str
    labels: list[str]
    input_name: str
    session: ort.InferenceSession

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for uint8 NHWC images (blocking: call from a thread)."""
        outputs = self.session.run(None, {self.input_name: images})
        probabilities = np.asarray(outputs[0], dtype=np.float32)
        if probabilities.shape != (len(images), len(self.labels)):
            raise RuntimeError(
                f"model {self.version} returned shape {probabilities.shape} for "
                f"{len(images)} images and {len(self.labels)} labels"
            )
        return probabilities


class ModelHolder:
    """The model currently served, and how to refresh it from the registry."""

    def __init__(self, runtime: Runtime, *, cache_dir: Path, min_refresh_s: float = 5.0) -> None:
        self._runtime = runtime
        self._cache_dir = cache_dir
        self._min_refresh_s = min_refresh_s
        self._current: LoadedModel | None = None
        self._last_refresh = float("-inf")
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    async def get(self) -> LoadedModel | None:
        """The served model; if none is loaded yet, look in the registry (rate-limited)."""
        if self._current is None and time.monotonic() - self._last_refresh >= self._min_refresh_s:
            await self.refresh_or_log()
        return self._current

    async def refresh_or_log(self) -> None:
        """``refresh()`` for the server: a model that cannot be loaded is logged and reported
        through ``last_error`` (readiness, 503 answers) instead of taking the server down."""
        try:
            await self.refresh()
        except Exception:
            logger.exception("could not load the model to serve; keeping what is loaded")

    async def refresh(self) -> LoadedModel | None:
        """Load the version the registry says to serve, if it is not the one loaded."""
        async with self._lock:
            self._last_refresh = time.monotonic()
            try:
                row = await resolve_serving_version(
                    db=self._runtime.db, version=self._runtime.settings.model_version
                )
            except NotFound as exc:
                self.last_error = str(exc)
                return self._current
            if self._current is not None and self._current.version == row.version:
                return self._current
            try:
                self._current = await self._load(row)
            except Exception as exc:
                self.last_error = f"model {row.version} could not be loaded: {exc}"
                raise
            self.last_error = None
            logger.info("serving model %s on %s", row.version, ", ".join(self._current.providers))
            return self._current

    async def _load(self, row: ModelVersion) -> LoadedModel:
        path = self._cache_dir / f"{row.onnx_sha256}.onnx"
        if not path.is_file():
            data = await self._runtime.store.get(row.onnx_key)
            if hashlib.sha256(data).hexdigest() != row.onnx_sha256:
                raise ModelIntegrityError(
                    f"model {row.version}: stored ONNX does not match its sha256"
                )
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        providers = choose_providers(self._runtime.settings.ort_providers)
        session = await asyncio.to_thread(ort.InferenceSession, str(path), providers=providers)
        return LoadedModel(
            version=row.version,
            labels=list(row.labels),
            input_name=session.get_inputs()[0].name,
            session=session,
        )
