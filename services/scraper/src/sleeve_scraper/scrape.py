"""One scrape: pull items from a source, ingest them, keep the run's counters and cursor."""

from __future__ import annotations

import logging
from pathlib import Path

from sleeve_common.exceptions import NotImplementedYet
from sleeve_common.genres import normalize_genre
from sleeve_common.payloads import IMPLEMENTED_SOURCES, ScrapeRequest
from sleeve_common.progress import ProgressSink
from sleeve_common.runtime import Runtime
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.ingest import Ingester
from sleeve_scraper.runs import RunCounters, finish_run, open_run, save_progress
from sleeve_scraper.sources import Source
from sleeve_scraper.sources.folder import FolderSource

__all__ = ["build_source", "run_scrape"]

logger = logging.getLogger(__name__)

_SAVE_EVERY = 50


def build_source(request: ScrapeRequest, runtime: Runtime) -> Source:
    if request.source not in IMPLEMENTED_SOURCES:
        raise NotImplementedYet(f"the {request.source} source")
    if not request.path:
        raise SourceError("the folder source needs a path (--path DIR)")
    genres = {normalize_genre(g) for g in request.genres} if request.genres else None
    return FolderSource(
        Path(request.path),
        genres=genres,
        per_genre=request.per_genre,
        max_bytes=runtime.settings.max_cover_bytes,
    )


async def run_scrape(
    runtime: Runtime,
    request: ScrapeRequest,
    *,
    on_progress: ProgressSink,
    job_id: int | None = None,
) -> tuple[int, RunCounters]:
    """Scrape until the source is exhausted; returns the run id and its counters."""
    source = build_source(request, runtime)
    run_id, counters = await open_run(
        db=runtime.db,
        source=source.name,
        params=request.model_dump(mode="json", exclude={"source", "resume"}),
        resume=request.resume,
        job_id=job_id,
    )
    ingester = Ingester(
        db=runtime.db,
        store=runtime.store,
        run_id=run_id,
        max_bytes=runtime.settings.max_cover_bytes,
        max_pixels=runtime.settings.max_image_pixels,
    )
    total = await source.total()
    error: str | None = None
    try:
        async for item in source.found(counters.cursor):
            counters.count(await ingester.ingest(item.candidate, item.data, item.failure))
            counters.cursor = item.cursor
            if counters.seen % _SAVE_EVERY == 0:
                await save_progress(db=runtime.db, run_id=run_id, counters=counters)
            fraction = counters.seen / total if total else -1.0
            await on_progress(fraction, f"run {run_id}: {counters.summary()}")
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise
    finally:
        await finish_run(db=runtime.db, run_id=run_id, counters=counters, error=error)
    await on_progress(1.0, f"run {run_id} done: {counters.summary()}")
    logger.info("scrape run %s finished: %s", run_id, counters.summary())
    return run_id, counters
