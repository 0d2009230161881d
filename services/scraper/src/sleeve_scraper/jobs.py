"""The scraper's job handler: ``scrape`` jobs enqueued by ``POST /v1/scrape-runs``."""

from __future__ import annotations

from typing import Any

from sleeve_common.models import ScrapeRunStatus
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import ThrottledProgress
from sleeve_common.runtime import Runtime
from sleeve_common.worker import Handler, JobContext
from sleeve_scraper.runs import RunCounters, job_run
from sleeve_scraper.scrape import run_scrape

__all__ = ["scrape_handler"]


def scrape_handler(runtime: Runtime) -> Handler:
    async def handle(ctx: JobContext) -> dict[str, Any]:
        """Scrape, or continue the run of an earlier attempt of this job (its worker died
        or was stopped): the same run, from its cursor, with its counters."""
        request = ScrapeRequest.model_validate(ctx.payload)
        earlier = await job_run(db=runtime.db, job_id=ctx.job.id)
        if earlier is not None:
            if earlier.status == ScrapeRunStatus.SUCCEEDED:
                # Finished before the worker could say so: nothing is left to scrape.
                return _result(earlier.id, RunCounters.of(earlier))
            request = request.model_copy(update={"resume": earlier.id})
        run_id, counters = await run_scrape(
            runtime, request, on_progress=ThrottledProgress(ctx.progress), job_id=ctx.job.id
        )
        return _result(run_id, counters)

    return handle


def _result(run_id: int, counters: RunCounters) -> dict[str, Any]:
    return {"scrape_run_id": run_id, "summary": counters.summary()}
