"""The local engine: a streaming pipeline from a catalog to ``predictions`` rows.

Per chunk of items: skip those that already have a row for this job (one query), fetch the
rest's bytes with bounded concurrency, decode and predict them in a pool of one thread per
core (a batch per task, each running the model on one onnxruntime thread), then write the
chunk in one insert that ignores rows already there. The stages overlap: chunk N+1 is
fetched and chunk N-1 written while chunk N computes, so at most three chunks are held at
once and memory does not grow with the catalog. A failure of one item (missing object,
corrupt image, refused URL) is recorded on its row; the job goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sleeve_common.models import Prediction, ScoringJob
from sleeve_inference.scoring.catalog import Catalog, Item, iter_chunks, read_item
from sleeve_inference.scoring.errors import ItemUnreadable

if TYPE_CHECKING:
    from sleeve_common.db import Database
    from sleeve_common.store import ObjectStore
    from sleeve_inference.predictor import Predictor
    from sleeve_inference.url_fetch import UrlFetcher

__all__ = [
    "ChunkCallback",
    "ChunkDone",
    "EngineOptions",
    "JobCounts",
    "RunCounts",
    "count_rows",
    "fetch_item",
    "max_row_id",
    "new_items",
    "score_catalog",
    "score_payloads",
    "write_rows",
]

MAX_DUPLICATE_EXAMPLES = 5


@dataclass(frozen=True)
class EngineOptions:
    """How the engine sizes its work."""

    chunk_size: int = 256
    batch_size: int = 8
    threads: int = 1
    fetch_concurrency: int = 16
    max_pixels: int = 40_000_000
    disagree_confidence: float = 0.5


@dataclass
class RunCounts:
    """What one run saw: items enumerated, rows it wrote, duplicates it met (a few named)."""

    enumerated: int = 0
    written: int = 0
    duplicates_seen: int = 0
    duplicate_examples: list[str] = field(default_factory=list)

    def note_duplicate(self, item: str) -> None:
        self.duplicates_seen += 1
        if len(self.duplicate_examples) < MAX_DUPLICATE_EXAMPLES:
            self.duplicate_examples.append(item)


@dataclass(frozen=True)
class ChunkDone:
    """Reported after each chunk is written: the job's row counts and this run's pace."""

    enumerated: int
    done: int
    failed: int
    written: int
    elapsed_s: float


ChunkCallback = Callable[[ChunkDone], Awaitable[None]]


@dataclass(frozen=True)
class JobCounts:
    """Rows one insert wrote, and the job's ``done`` and ``failed`` after it."""

    written: int
    done: int
    failed: int


@dataclass
class _Fetched:
    """A chunk's items still to score, with their bytes or the reason they have none."""

    items: list[Item]
    data: list[bytes | None]
    errors: list[str | None]


async def score_catalog(
    *,
    db: Database,
    store: ObjectStore,
    fetcher: UrlFetcher,
    predictor: Predictor,
    job: ScoringJob,
    catalog: Catalog,
    options: EngineOptions,
    on_chunk: ChunkCallback,
) -> RunCounts:
    """Score every item of ``catalog`` that has no row for ``job`` yet; return this run's counts."""
    counts = RunCounts()
    boundary = await max_row_id(db, job.id)
    started = time.monotonic()
    semaphore = asyncio.Semaphore(options.fetch_concurrency)
    chunks = aiter(iter_chunks(catalog, store=store, db=db, size=options.chunk_size))

    async def prepare(previous: set[str]) -> _Fetched | None:
        chunk = await anext(chunks, None)
        if chunk is None:
            return None
        counts.enumerated += len(chunk)
        todo = await new_items(db, job.id, chunk, previous, boundary, counts)
        results = await asyncio.gather(*(fetch_item(i, store, fetcher, semaphore) for i in todo))
        return _Fetched(items=todo, data=[r[0] for r in results], errors=[r[1] for r in results])

    async def write(items: list[Item], rows: list[dict[str, Any]]) -> None:
        after = await write_rows(db, job, items, rows, options.disagree_confidence)
        counts.written += after.written
        elapsed = time.monotonic() - started
        await on_chunk(
            ChunkDone(counts.enumerated, after.done, after.failed, counts.written, elapsed)
        )

    # Three stages overlap: chunk N+1 is fetched and chunk N-1 written while chunk N
    # computes. A chunk is filtered against the rows and the two chunks still in flight.
    with ThreadPoolExecutor(options.threads, thread_name_prefix="score") as pool:
        pending = asyncio.create_task(prepare(set()))
        writing: asyncio.Task[None] | None = None
        in_flight: set[str] = set()
        try:
            while (fetched := await pending) is not None:
                current = {i.item for i in fetched.items}
                pending = asyncio.create_task(prepare(in_flight | current))
                in_flight = current
                rows = await _compute(fetched, predictor, pool, options)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(write(fetched.items, rows))
            if writing is not None:
                await writing
        finally:
            tasks = [t for t in (pending, writing) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return counts


async def count_rows(*, db: Database, scoring_job_id: int) -> tuple[int, int]:
    """Recompute the job's ``done`` and ``failed`` from its rows, store and return them."""
    async with db.session() as session:
        done = await session.scalar(
            select(func.count(Prediction.id)).where(
                Prediction.scoring_job_id == scoring_job_id, Prediction.error.is_(None)
            )
        )
        failed = await session.scalar(
            select(func.count(Prediction.id)).where(
                Prediction.scoring_job_id == scoring_job_id, Prediction.error.is_not(None)
            )
        )
        await session.execute(
            update(ScoringJob)
            .where(ScoringJob.id == scoring_job_id)
            .values(done=done or 0, failed=failed or 0)
        )
    return done or 0, failed or 0


async def max_row_id(db: Database, scoring_job_id: int) -> int:
    """Rows above this id were written by this run: an item found there is a duplicate."""
    async with db.session() as session:
        value = await session.scalar(
            select(func.max(Prediction.id)).where(Prediction.scoring_job_id == scoring_job_id)
        )
    return int(value or 0)


async def new_items(
    db: Database,
    scoring_job_id: int,
    chunk: list[Item],
    previous: set[str],
    boundary: int,
    counts: RunCounts,
) -> list[Item]:
    """The chunk's items without a row yet, each once; duplicates are noted in ``counts``."""
    async with db.session() as session:
        rows = await session.execute(
            select(Prediction.item, Prediction.id).where(
                Prediction.scoring_job_id == scoring_job_id,
                Prediction.item.in_({i.item for i in chunk}),
            )
        )
        existing: dict[str, int] = dict(rows.all())
    todo: list[Item] = []
    seen: set[str] = set()
    for item in chunk:
        if item.item in seen or item.item in previous or existing.get(item.item, 0) > boundary:
            counts.note_duplicate(item.item)
        elif item.item not in existing:
            todo.append(item)
        seen.add(item.item)
    return todo


async def fetch_item(
    item: Item, store: ObjectStore, fetcher: UrlFetcher, semaphore: asyncio.Semaphore
) -> tuple[bytes | None, str | None]:
    """The item's bytes and no error, or no bytes and why (at most ``semaphore`` at once)."""
    async with semaphore:
        try:
            return await read_item(item, store=store, fetcher=fetcher), None
        except ItemUnreadable as exc:
            return None, str(exc)


async def _compute(
    fetched: _Fetched, predictor: Predictor, pool: ThreadPoolExecutor, options: EngineOptions
) -> list[dict[str, Any]]:
    """Decode and predict the chunk a batch per pool task; one result dict per item, in order.

    Tasks of one batch each (rather than one share per thread) keep every thread busy until
    the chunk's end even when some covers decode much slower than others.
    """
    size = options.batch_size
    loop = asyncio.get_running_loop()
    parts = await asyncio.gather(
        *(
            loop.run_in_executor(
                pool,
                score_payloads,
                predictor,
                fetched.data[start : start + size],
                fetched.errors[start : start + size],
                options,
            )
            for start in range(0, len(fetched.items), size)
        )
    )
    return [row for part in parts for row in part]


def score_payloads(
    predictor: Predictor,
    data: Sequence[bytes | None],
    errors: Sequence[str | None],
    options: EngineOptions,
) -> list[dict[str, Any]]:
    """Decode a few items and run the model on them in batches; one row dict per item.

    Blocking: it runs in a pool thread of the local engine or in a Ray actor.
    """
    rows: list[dict[str, Any]] = [{"error": error} for error in errors]
    fetched = [index for index, payload in enumerate(data) if payload is not None]
    pixels, problems = predictor.decode_all(
        [payload for payload in data if payload is not None], max_pixels=options.max_pixels
    )
    decoded = [index for index, problem in zip(fetched, problems, strict=True) if problem is None]
    for index, problem in zip(fetched, problems, strict=True):
        if problem is not None:
            rows[index]["error"] = f"invalid image: {problem}"
    for start in range(0, len(decoded), options.batch_size):
        batch = decoded[start : start + options.batch_size]
        probabilities = predictor.predict(pixels[start : start + options.batch_size])
        for index, row in zip(batch, probabilities, strict=True):
            best = int(np.argmax(row))
            rows[index] = {
                "error": None,
                "top_genre": predictor.labels[best],
                "confidence": float(row[best]),
                "probabilities": {
                    label: float(p) for label, p in zip(predictor.labels, row, strict=True)
                },
            }
    return rows


def disagrees(item: Item, row: dict[str, Any], confidence: float) -> bool | None:
    """Whether the model confidently names another genre than the item's stored one; None
    when there is nothing to compare (no stored genre, one the model does not know, an error).
    """
    stored = item.stored_genre
    probabilities = row.get("probabilities")
    if stored is None or probabilities is None or stored not in probabilities:
        return None
    return bool(row["top_genre"] != stored and row["confidence"] >= confidence)


async def write_rows(
    db: Database,
    job: ScoringJob,
    items: list[Item],
    rows: list[dict[str, Any]],
    disagree_confidence: float,
) -> JobCounts:
    """Insert the chunk's rows in one statement (rows already there are left as they are) and
    add the new ones to the job's ``done`` and ``failed`` in the same transaction, so the
    counts always match the rows (``count_rows`` recomputes them when a run starts)."""
    if not items:
        async with db.session() as session:
            counts = await session.execute(
                select(ScoringJob.done, ScoringJob.failed).where(ScoringJob.id == job.id)
            )
            done, failed = counts.one()
        return JobCounts(0, done, failed)
    values = [
        {
            "scoring_job_id": job.id,
            "model_version_id": job.model_version_id,
            "item": item.item,
            "source": item.locator or "",
            "album_id": item.album_id,
            "stored_genre": item.stored_genre,
            "disagrees": disagrees(item, row, disagree_confidence),
            "top_genre": row.get("top_genre"),
            "confidence": row.get("confidence"),
            "probabilities": row.get("probabilities"),
            "error": row["error"],
        }
        for item, row in zip(items, rows, strict=True)
    ]
    # One statement executed over the rows (SQLAlchemy batches them into multi-row inserts
    # from a cached compilation), not ``.values(rows)``, which compiles a new statement with
    # a bind parameter per cell for every chunk and cost the event loop ~1 ms per item.
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    table = cast("Table", Prediction.__table__)
    statement = (
        insert(table)
        .on_conflict_do_nothing(index_elements=["scoring_job_id", "item"])
        .returning(table.c.error)
    )
    async with db.session() as session:
        written = (await session.execute(statement, values)).all()
        failed = sum(1 for row in written if row.error is not None)
        done, failed_total = (
            await session.execute(
                update(ScoringJob)
                .where(ScoringJob.id == job.id)
                .values(
                    done=ScoringJob.done + (len(written) - failed),
                    failed=ScoringJob.failed + failed,
                )
                .returning(ScoringJob.done, ScoringJob.failed)
            )
        ).one()
    return JobCounts(len(written), done, failed_total)
