"""The Ray engine: the local engine's scoring on Ray Data, for catalogs beyond one machine.

The driver (the process running the job) enumerates the catalog in chunks and keeps the
items that have no row yet, as the local engine does, gathering them into windows of a few
thousand items per actor. Each window is a Ray dataset (``from_items``) mapped with
``map_batches`` over an actor pool: every actor opens one onnxruntime session from the model
file, and its own object store and URL fetcher from the job's settings, then fetches,
decodes and predicts its batches with the local engine's functions, so the rows and the
per-item errors are the same. The driver iterates the results (``iter_batches``) and writes
each chunk with the local engine's insert, which ignores rows already there: a run that
stops resumes with the items still without a row, and no item ever gets two rows.

Ray is an optional extra (``sleeve-inference[ray]``). This module imports it only inside
the functions that run a job, so importing it never needs Ray; ``require_ray`` says clearly
when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, unquote

import numpy as np

from sleeve_common.cpus import available_cpus
from sleeve_common.store import open_store
from sleeve_inference.model_holder import fetch_model_file, model_cache_dir
from sleeve_inference.predictor import Predictor, choose_providers
from sleeve_inference.scoring.catalog import Item, LocatorKind, iter_chunks
from sleeve_inference.scoring.engine import (
    ChunkCallback,
    ChunkDone,
    EngineOptions,
    RunCounts,
    fetch_item,
    max_row_id,
    new_items,
    score_payloads,
    write_rows,
)
from sleeve_inference.scoring.errors import EngineUnavailable
from sleeve_inference.url_fetch import UrlFetcher

if TYPE_CHECKING:
    from sleeve_common.db import Database
    from sleeve_common.models import ModelVersion, ScoringJob
    from sleeve_common.settings import Settings
    from sleeve_common.store import ObjectStore
    from sleeve_inference.scoring.catalog import Catalog

__all__ = ["ITEMS_PER_ACTOR", "require_ray", "score_catalog_on_ray"]

logger = logging.getLogger(__name__)

# Ray's workers must run this interpreter. Under `uv run` (as `make run` and `make test` start
# Sleeve) Ray would otherwise start them through `uv run` in a copy of the working directory,
# where Sleeve and Ray are not installed. Read by Ray when it is first imported.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

# A window's actor pool starts once (seconds: a process, imports, a session per actor), so
# each actor gets minutes of work per window; the window's items are all the driver holds.
ITEMS_PER_ACTOR = 4096
_BLOCKS_PER_ACTOR = 4  # several blocks per actor, so a slow block does not idle the others
_INSTALL_HINT = "install the extra: pip install 'sleeve-inference[ray]'"

Batch = dict[str, np.ndarray]


def require_ray() -> None:
    """``EngineUnavailable`` unless Ray can be imported (the ``ray`` extra is installed)."""
    if importlib.util.find_spec("ray") is None:
        raise EngineUnavailable(
            f"the ray engine needs Ray, which is not installed; {_INSTALL_HINT}"
        )


async def score_catalog_on_ray(
    *,
    db: Database,
    store: ObjectStore,
    settings: Settings,
    model: ModelVersion,
    model_path: Path,
    job: ScoringJob,
    catalog: Catalog,
    options: EngineOptions,
    on_chunk: ChunkCallback,
) -> RunCounts:
    """Score every item of ``catalog`` without a row for ``job`` on Ray; this run's counts.

    ``model_path`` is the model file on this machine; an actor on a node without it fetches
    it from the store (checked against its sha256).
    """
    require_ray()
    counts = RunCounts()
    boundary = await max_row_id(db, job.id)
    chunks = aiter(iter_chunks(catalog, store=store, db=db, size=options.chunk_size))
    async with _connected(settings) as actors:
        run = _Run(
            db=db,
            job=job,
            options=options,
            on_chunk=on_chunk,
            counts=counts,
            actors=actors,
            labels=[str(label) for label in model.labels],
            actor_args={
                "settings": _for_workers(settings),
                "model": model,
                "model_path": str(model_path.absolute()),
                "options": options,
            },
        )
        size = actors * ITEMS_PER_ACTOR
        exhausted = False
        while not exhausted:
            pending, exhausted = await _next_window(
                chunks, db=db, job_id=job.id, boundary=boundary, counts=counts, size=size
            )
            if pending:
                await run.score_window(pending)
    return counts


@dataclass
class _Run:
    """One run's inputs and counters, shared by its windows."""

    db: Database
    job: ScoringJob
    options: EngineOptions
    on_chunk: ChunkCallback
    counts: RunCounts
    actors: int
    labels: list[str]
    actor_args: dict[str, Any]
    started: float = field(default_factory=time.monotonic)

    async def score_window(self, pending: dict[str, Item]) -> None:
        """Score the window's items on the actor pool, writing each result batch as it comes.

        Progress counts an item once its row is written (the window's skipped items at
        once), so the fraction and the ETA move with the work, not with the enumeration.
        """
        settled = self.counts.enumerated - len(pending)

        async def write(batch: Batch) -> None:
            nonlocal settled
            scored = _rows_of(batch, self.labels)
            items = [pending[item] for item, _ in scored]
            rows = [row for _, row in scored]
            after = await write_rows(
                self.db, self.job, items, rows, self.options.disagree_confidence
            )
            self.counts.written += after.written
            settled += len(items)
            elapsed = time.monotonic() - self.started
            await self.on_chunk(
                ChunkDone(settled, after.done, after.failed, self.counts.written, elapsed)
            )

        items = list(pending.values())
        await _consume(_scored_dataset(items, self.actors, self.actor_args, self.options), write)


async def _next_window(
    chunks: AsyncIterator[list[Item]],
    *,
    db: Database,
    job_id: int,
    boundary: int,
    counts: RunCounts,
    size: int,
) -> tuple[dict[str, Item], bool]:
    """Up to about ``size`` items without a row, by id, and whether the catalog is exhausted."""
    window: dict[str, Item] = {}
    while len(window) < size:
        chunk = await anext(chunks, None)
        if chunk is None:
            return window, True
        counts.enumerated += len(chunk)
        todo = await new_items(db, job_id, chunk, set(window), boundary, counts)
        window.update((item.item, item) for item in todo)
    return window, False


def _scored_dataset(
    items: list[Item], actors: int, actor_args: dict[str, Any], options: EngineOptions
) -> Iterable[Batch]:
    """The window as a dataset mapped over the actor pool; its result batches, lazily."""
    import ray.data

    blocks = max(1, min(math.ceil(len(items) / options.batch_size), actors * _BLOCKS_PER_ACTOR))
    actors = min(actors, blocks)  # a small window (the last one) needs fewer actors
    dataset = ray.data.from_items(
        [{"item": i.item, "kind": i.kind, "locator": i.locator or ""} for i in items],
        override_num_blocks=blocks,
    )
    scored = dataset.map_batches(
        _ScoringActor,
        fn_constructor_kwargs=actor_args,
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=options.batch_size,
        batch_format="numpy",
        num_cpus=1,  # one onnxruntime thread per actor
    )
    # The job reports its own progress; Ray Data's bars would interleave with it.
    scored.context.enable_progress_bars = False
    scored.context.print_on_execution_start = False
    return scored.iter_batches(batch_size=options.chunk_size, batch_format="numpy")


async def _consume(batches: Iterable[Batch], handle: Callable[[Batch], Awaitable[None]]) -> None:
    """Hand each result batch to ``handle``; Ray's blocking iterator runs in a thread of its own.

    One thread does every step, closing included, so a ``next`` still running when the job
    stops (an error, a cancel) finishes before the iterator is closed; closing it ends the
    dataset's execution and releases its actors.
    """
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="ray-results") as pool:
        iterator: Iterator[Batch] = await loop.run_in_executor(pool, iter, batches)
        try:
            while (batch := await loop.run_in_executor(pool, next, iterator, None)) is not None:
                await handle(batch)
        finally:
            await loop.run_in_executor(pool, _close, iterator)


def _close(iterator: Iterator[Batch]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


@contextlib.asynccontextmanager
async def _connected(settings: Settings) -> AsyncIterator[int]:
    """Ray for the run (joined, or started and stopped here); how many actors to use.

    A Ray already initialized in this process (by a test or a program embedding Sleeve) is
    used as it is and left running.
    """
    try:
        import ray
    except ImportError as exc:  # installed without its dependencies, or broken
        raise EngineUnavailable(
            f"the ray engine cannot import Ray ({exc}); {_INSTALL_HINT}"
        ) from exc
    owned = not ray.is_initialized()
    if owned:
        # On the loop's thread: Ray installs its SIGTERM handler, which shuts a local
        # instance down with the process, only from the main thread.
        if settings.ray_address is None:
            ray.init(
                num_cpus=settings.cpu_threads or available_cpus(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        else:
            ray.init(settings.ray_address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        cpus = int(resources.get("CPU", 1))
        actors = settings.ray_actors or max(1, cpus)
        logger.info("scoring on Ray with %d actors (%d CPUs in the cluster)", actors, cpus)
        yield actors
    finally:
        if owned:
            ray.shutdown()


def _for_workers(settings: Settings) -> Settings:
    """The settings with local paths made absolute: a worker may run in another folder."""
    update: dict[str, Any] = {"data_dir": settings.data_dir.expanduser().absolute()}
    if settings.store_url.startswith("file://"):
        folder = Path(unquote(settings.store_url.removeprefix("file://")) or ".")
        update["store_url"] = "file://" + quote(str(folder.expanduser().absolute()))
    return settings.model_copy(update=update)


def _rows_of(batch: Batch, labels: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The actors' columns back into the local engine's row dicts, with their item ids."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for item, error, top_genre, confidence, probabilities in zip(
        batch["item"],
        batch["error"],
        batch["top_genre"],
        batch["confidence"],
        batch["probabilities"],
        strict=True,
    ):
        if error:
            rows.append((str(item), {"error": str(error)}))
            continue
        row = {
            "error": None,
            "top_genre": str(top_genre),
            "confidence": float(confidence),
            "probabilities": {
                label: float(p) for label, p in zip(labels, probabilities, strict=True)
            },
        }
        rows.append((str(item), row))
    return rows


def _columns_of(items: list[Item], rows: list[dict[str, Any]], labels: list[str]) -> Batch:
    """Row dicts as columns Ray can carry: no None (empty text, NaN), probabilities in order."""
    probabilities = np.full((len(rows), len(labels)), np.nan, dtype=np.float64)
    for index, row in enumerate(rows):
        if row.get("probabilities") is not None:
            probabilities[index] = [row["probabilities"][label] for label in labels]
    return {
        "item": np.array([item.item for item in items], dtype=object),
        "error": np.array([row["error"] or "" for row in rows], dtype=object),
        "top_genre": np.array([row.get("top_genre") or "" for row in rows], dtype=object),
        "confidence": np.array([row.get("confidence", math.nan) for row in rows], dtype=np.float64),
        "probabilities": probabilities,
    }


class _ScoringActor:
    """One Ray actor: an onnxruntime session from the model file, a store, a URL fetcher.

    Built on a worker from the job's settings; a node without the driver's model file
    fetches it into its own cache first (checked against the registry's sha256).
    """

    def __init__(
        self, *, settings: Settings, model: ModelVersion, model_path: str, options: EngineOptions
    ) -> None:
        self._store = open_store(settings)
        self._fetcher = UrlFetcher.from_settings(settings)
        self._loop = asyncio.new_event_loop()
        self._options = options
        path = Path(model_path)
        if not path.is_file():
            path = self._loop.run_until_complete(
                fetch_model_file(store=self._store, row=model, cache_dir=model_cache_dir(settings))
            )
        self._predictor = Predictor.open(
            path,
            version=model.version,
            labels=[str(label) for label in model.labels],
            providers=choose_providers(settings.ort_providers),
            threads=1,
        )

    def __call__(self, batch: Batch) -> Batch:
        items = [
            Item(item=str(item), kind=cast(LocatorKind, str(kind)), locator=str(locator) or None)
            for item, kind, locator in zip(
                batch["item"], batch["kind"], batch["locator"], strict=True
            )
        ]
        fetched = self._loop.run_until_complete(self._fetch(items))
        rows = score_payloads(
            self._predictor,
            [data for data, _ in fetched],
            [error for _, error in fetched],
            self._options,
        )
        return _columns_of(items, rows, self._predictor.labels)

    def close(self) -> None:
        """Close the URL fetcher's connections and the actor's event loop."""
        loop = getattr(self, "_loop", None)  # absent when ``__init__`` failed early
        if loop is None or loop.is_closed():
            return
        loop.run_until_complete(self._fetcher.aclose())
        loop.close()

    def __del__(self) -> None:
        # Ray Data drops its reference to the UDF when the actor exits gracefully.
        self.close()

    async def _fetch(self, items: list[Item]) -> list[tuple[bytes | None, str | None]]:
        semaphore = asyncio.Semaphore(self._options.fetch_concurrency)
        return await asyncio.gather(
            *(fetch_item(item, self._store, self._fetcher, semaphore) for item in items)
        )
