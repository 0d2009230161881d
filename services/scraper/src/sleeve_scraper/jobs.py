"""The scraper's job handler: ``scrape`` jobs enqueued by ``POST /v1/scrape-runs``."""

from __future__ import annotations

from typing import Any

from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import ThrottledProgress
from sleeve_common.runtime import Runtime
from sleeve_common.worker import Handler, JobContext
from sleeve_scraper.scrape import run_scrape

__all__ = ["scrape_handler"]


def scrape_handler(runtime: Runtime) -> Handler:
    async def handle(ctx: JobContext) -> dict[str, Any]:
        request = ScrapeRequest.model_validate(ctx.payload)
        run_id, counters = await run_scrape(
            runtime, request, on_progress=ThrottledProgress(ctx.progress), job_id=ctx.job.id
        )
        return {"scrape_run_id": run_id, "summary": counters.summary()}

    return handle
