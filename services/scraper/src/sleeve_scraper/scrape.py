"""One scrape: a source's items, their covers fetched, ingested in order, the run kept."""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing

from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import ProgressSink
from sleeve_common.runtime import Runtime
from sleeve_scraper.downloads import with_covers
from sleeve_scraper.http import HttpClient, Sleep
from sleeve_scraper.ingest import Ingester
from sleeve_scraper.runs import RunCounters, finish_run, open_run, save_progress
from sleeve_scraper.sources import SourceContext, build_source

__all__ = ["run_scrape"]

logger = logging.getLogger(__name__)

_SAVE_EVERY = 50


async def run_scrape(
    runtime: Runtime,
    request: ScrapeRequest,
    *,
    on_progress: ProgressSink,
    job_id: int | None = None,
    sleep: Sleep = asyncio.sleep,
) -> tuple[int, RunCounters]:
    """Scrape until the source is exhausted; returns the run id and its counters.

    ``sleep`` is the HTTP edge's one sleep (backoff, Retry-After, host pauses); tests pass
    one that records and returns at once.
    """
    settings = runtime.settings
    async with HttpClient.from_settings(settings, sleep=sleep) as http:
        source = build_source(SourceContext(request=request, settings=settings, http=http))
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
            max_bytes=settings.max_cover_bytes,
            max_pixels=settings.max_image_pixels,
        )
        error: str | None = None
        try:
            total = await source.total()
            items = with_covers(
                source.found(counters.cursor),
                http=http,
                max_bytes=settings.max_cover_bytes,
                concurrency=settings.scrape_download_concurrency,
                recorded=ingester.recorded,
            )
            async with aclosing(items):
                async for item in items:
                    counters.count(await ingester.ingest(item.candidate, item.data, item.failure))
                    # In source order: every item before this one is ingested too.
                    counters.cursor = item.cursor
                    if counters.seen % _SAVE_EVERY == 0:
                        await save_progress(db=runtime.db, run_id=run_id, counters=counters)
                    fraction = min(counters.seen / total, 1.0) if total else -1.0
                    await on_progress(
                        fraction, f"run {run_id}: {source.name} {item.place} - {counters.summary()}"
                    )
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise
        finally:
            await finish_run(db=runtime.db, run_id=run_id, counters=counters, error=error)
    await on_progress(1.0, f"run {run_id} done: {counters.summary()}")
    logger.info("scrape run %s finished: %s", run_id, counters.summary())
    return run_id, counters
