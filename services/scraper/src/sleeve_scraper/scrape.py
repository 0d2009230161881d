"""One scrape: a source's items, their covers fetched, ingested in order, the run kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import aclosing

from sleeve_common.models import ScrapeRunStatus
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import Part, ProgressSink
from sleeve_common.runtime import Runtime
from sleeve_scraper.downloads import with_covers
from sleeve_scraper.http import HttpClient, Sleep
from sleeve_scraper.ingest import Ingester
from sleeve_scraper.runs import RunCounters, open_run
from sleeve_scraper.sources import SourceContext, build_source

__all__ = ["run_scrape"]

logger = logging.getLogger(__name__)


async def run_scrape(
    runtime: Runtime,
    request: ScrapeRequest,
    *,
    on_progress: ProgressSink,
    job_id: int | None = None,
    sleep: Sleep = asyncio.sleep,
) -> tuple[int, RunCounters]:
    """Scrape until the source is exhausted; returns the run id and its counters.

    ``request.resume`` continues that run after its cursor. ``job_id`` ties the run to the
    job running it, whose next attempt may take the run over. ``sleep`` is the HTTP edge's
    one sleep (backoff, Retry-After, host pauses); tests pass one that records and returns
    at once.
    """
    settings = runtime.settings
    async with HttpClient.from_settings(settings, sleep=sleep) as http:
        source = build_source(SourceContext(request=request, settings=settings, http=http))
        ledger = await open_run(
            db=runtime.db,
            source=source.name,
            params=request.model_dump(mode="json", exclude={"source", "resume"}),
            resume=request.resume,
            job_id=job_id,
            heartbeat_s=settings.scrape_heartbeat_s,
        )
        run_id = ledger.run_id
        ingester = Ingester(
            db=runtime.db,
            store=runtime.store,
            run_id=run_id,
            ledger=ledger,
            max_bytes=settings.max_cover_bytes,
            max_pixels=settings.max_image_pixels,
        )
        beating = asyncio.create_task(
            ledger.keep_beating(lambda: http.stats, settings.scrape_heartbeat_s)
        )
        status, error = ScrapeRunStatus.SUCCEEDED, None
        try:
            plan = await source.plan()
            total = None if None in plan.values() else sum(n or 0 for n in plan.values())
            items = with_covers(
                source.found(dict(ledger.counters.cursor)),
                http=http,
                max_bytes=settings.max_cover_bytes,
                concurrency=settings.scrape_download_concurrency,
                recorded=ingester.recorded,
            )
            async with aclosing(items):
                async for item in items:
                    # In source order: every item before this one is ingested too, so the
                    # cursor booked with it means "everything up to here is done".
                    await ingester.ingest(item)
                    counters = ledger.counters
                    fraction = min(counters.seen / total, 1.0) if total else -1.0
                    await on_progress(
                        fraction,
                        f"run {run_id}: {source.name} {item.place} - {counters.summary()}",
                        parts=_parts(plan, counters),
                    )
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Stopped from outside (Ctrl-C, a worker handing its job back): no error of its own.
            status = ScrapeRunStatus.INTERRUPTED
            raise
        except BaseException as exc:
            status = ScrapeRunStatus.FAILED
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise
        finally:
            beating.cancel()
            await asyncio.wait([beating])
            await ledger.finish(status=status, error=error, stats=http.stats)
    counters = ledger.counters
    await on_progress(1.0, f"run {run_id} done: {counters.summary()}", parts=_parts(plan, counters))
    logger.info("scrape run %s finished: %s", run_id, counters.summary())
    return run_id, counters


def _parts(plan: Mapping[str, int | None], counters: RunCounters) -> list[Part]:
    """Each planned genre with the items seen of it so far."""
    return [
        Part(genre, counters.seen_by_genre.get(genre, 0), target) for genre, target in plan.items()
    ]
