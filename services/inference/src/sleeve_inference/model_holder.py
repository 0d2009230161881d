"""The served model: fetched from the registry and store, verified, opened as a ``Predictor``.

Loading is two steps, so that any process can do the second from a file: ``fetch_model_file``
(download once into a local cache, verify the sha256 the registry recorded) and
``Predictor.open`` (a session from a path). ``ModelHolder`` owns the model the API serves and
swaps in a newly promoted version when it refreshes.

The API serves the file of the version that ``SLEEVE_MODEL_VARIANT`` names: its own fp32 export,
or the fp16 or int8 variant its training run exported (``sleeve_common.model_files``). A version
without that variant is served in fp32, with one warning in the log: a promotion must not leave
the API without a model, and every answer names the variant it came from.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from sleeve_common.bootstrap import FirstModelStatus, first_model_status
from sleeve_common.exceptions import (
    DatabaseUnavailable,
    NotFound,
    StoreRefused,
    StoreUnavailable,
)
from sleeve_common.model_files import ServedVariant, served_file
from sleeve_common.models import ModelVersion
from sleeve_common.registry import resolve_serving_version
from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore
from sleeve_inference.predictor import Predictor, choose_providers

__all__ = [
    "ModelHolder",
    "ModelIntegrityError",
    "fetch_model_file",
    "load_predictor",
    "model_cache_dir",
]

logger = logging.getLogger(__name__)


class ModelIntegrityError(RuntimeError):
    """The stored ONNX file does not match the sha256 the registry recorded, or the version has
    no such file."""


async def fetch_model_file(
    *, store: ObjectStore, row: ModelVersion, cache_dir: Path, variant: ServedVariant = "fp32"
) -> Path:
    """The ONNX file of the version's ``variant`` on local disk, downloaded once and checked
    against the sha256 the registry recorded for it."""
    file = served_file(row, variant)
    if file is None:
        raise ModelIntegrityError(f"model {row.version} has no {variant} variant")
    path = cache_dir / f"{file.sha256}.onnx"
    if path.is_file():
        return path
    data = await store.get(file.key)
    if hashlib.sha256(data).hexdigest() != file.sha256:
        raise ModelIntegrityError(
            f"model {row.version}: stored ONNX ({variant}) does not match its sha256"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{time.monotonic_ns()}.part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def model_cache_dir(settings: Settings) -> Path:
    """Where downloaded model files are kept, shared by the API and the scoring workers."""
    return settings.data_dir / "cache" / "models"


async def load_predictor(
    *,
    runtime: Runtime,
    row: ModelVersion,
    cache_dir: Path,
    threads: int,
    variant: ServedVariant = "fp32",
) -> Predictor:
    """The version's ``variant`` as a ``Predictor``: its file fetched and verified, then a
    session opened."""
    path = await fetch_model_file(
        store=runtime.store, row=row, cache_dir=cache_dir, variant=variant
    )
    return await asyncio.to_thread(
        Predictor.open,
        path,
        version=row.version,
        variant=variant,
        labels=[str(label) for label in row.labels],
        providers=choose_providers(runtime.settings.ort_providers),
        threads=threads,
    )


class ModelHolder:
    """The model currently served, and how to refresh it from the registry."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        cache_dir: Path,
        threads: int = 1,
        min_refresh_s: float = 5.0,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._cache_dir = cache_dir
        self._threads = threads
        self._min_refresh_s = min_refresh_s
        self._on_change = on_change
        self._current: Predictor | None = None
        self._last_refresh = float("-inf")
        self._lock = asyncio.Lock()
        self._warned_without_variant: set[str] = set()
        self.last_error: str | None = None
        # While nothing is registered: the first-run bootstrap's progress, or why it failed.
        self.first_model: FirstModelStatus | None = None

    @property
    def current(self) -> Predictor | None:
        return self._current

    async def get(self) -> Predictor | None:
        """The served model; if none is loaded yet, look in the registry (rate-limited)."""
        if self._current is None and time.monotonic() - self._last_refresh >= self._min_refresh_s:
            await self.refresh_or_log()
        return self._current

    async def refresh_or_log(self) -> None:
        """``refresh()`` for the server: a model that cannot be loaded is logged and reported
        through ``last_error`` (readiness, 503 answers) instead of taking the server down."""
        try:
            await self.refresh()
        except (DatabaseUnavailable, StoreUnavailable, StoreRefused) as exc:
            # A dependency down (or refusing) for a while says so each time, without a
            # traceback.
            logger.warning("could not look for the model to serve, keeping what is loaded: %s", exc)
        except Exception:
            logger.exception("could not load the model to serve; keeping what is loaded")

    async def refresh(self) -> Predictor | None:
        """Load the version the registry says to serve, if it is not the one loaded."""
        async with self._lock:
            self._last_refresh = time.monotonic()
            try:
                row = await resolve_serving_version(
                    db=self._runtime.db, version=self._runtime.settings.model_version
                )
            except NotFound as exc:
                self.first_model = None
                if self._runtime.settings.model_version is None:
                    # Nothing registered: say where the first model's training stands.
                    self.first_model = await first_model_status(db=self._runtime.db)
                self.last_error = self.first_model.message if self.first_model else str(exc)
                return self._current
            self.first_model = None
            if self._current is not None and self._current.version == row.version:
                return self._current
            try:
                self._current = await self._load(row)
            except Exception as exc:
                self.last_error = f"model {row.version} could not be loaded: {exc}"
                raise
            self.last_error = None
            logger.info(
                "serving model %s (%s) on %s",
                row.version,
                self._current.variant,
                ", ".join(self._current.providers),
            )
            if self._on_change is not None:
                self._on_change(self._current.version, self._current.provider)
            return self._current

    async def _load(self, row: ModelVersion) -> Predictor:
        variant = self._runtime.settings.model_variant
        if served_file(row, variant) is None:
            if row.version not in self._warned_without_variant:
                self._warned_without_variant.add(row.version)
                logger.warning(
                    "model %s has no %s variant (SLEEVE_MODEL_VARIANT): serving its fp32 file; "
                    "train with `sleeve train --variants %s` to have one",
                    row.version,
                    variant,
                    variant,
                )
            variant = "fp32"
        return await load_predictor(
            runtime=self._runtime,
            row=row,
            cache_dir=self._cache_dir,
            threads=self._threads,
            variant=variant,
        )
