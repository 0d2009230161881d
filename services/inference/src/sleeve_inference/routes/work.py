"""Enqueue work for the scraper and trainer, and watch its progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from sleeve_common.exceptions import ConfigError, InvalidRequest
from sleeve_common.jobs import JobQueue
from sleeve_common.models import MAX_ROW_ID, Job
from sleeve_common.payloads import ScrapeRequest, TrainRequest, check_scrape_request
from sleeve_inference.deps import ApiKey, RuntimeDep
from sleeve_inference.errors import ApiError
from sleeve_inference.schemas import JobAccepted, JobView

__all__ = ["router"]

router = APIRouter(tags=["work"])

JobId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="the id the POST answered")]


def _view(job: Job) -> JobView:
    return JobView(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress=job.progress,
        progress_message=job.progress_message,
        request=job.payload,
        result=job.result,
        error=job.error,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


async def _enqueue(
    runtime: RuntimeDep, request: Request, kind: str, payload: dict[str, object], route: str
) -> JobAccepted:
    queue = JobQueue(runtime.db, lease_seconds=runtime.settings.job_lease_seconds)
    job_id = await queue.enqueue(
        kind=kind, payload=payload, max_attempts=runtime.settings.job_max_attempts
    )
    return JobAccepted(id=job_id, status="queued", url=str(request.url_for(route, job_id=job_id)))


async def _get(runtime: RuntimeDep, kind: str, job_id: int) -> JobView:
    queue = JobQueue(runtime.db, lease_seconds=runtime.settings.job_lease_seconds)
    job = await queue.get(job_id)
    if job.kind != kind:
        raise ApiError(404, "not_found", f"job {job_id} is not a {kind} job")
    return _view(job)


@router.post(
    "/v1/scrape-runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    dependencies=[ApiKey],
)
async def scrape_run_create(
    body: ScrapeRequest, runtime: RuntimeDep, request: Request
) -> JobAccepted:
    """Queue a scrape for the scraper service (API key).

    Answers 422 at once, queuing nothing, for a source that is not implemented, one whose
    credentials are not configured (Spotify's client id and secret, the MusicBrainz contact)
    or a path that does not exist on this machine.
    """
    try:
        check_scrape_request(body, runtime.settings)
    except (ConfigError, InvalidRequest) as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return await _enqueue(
        runtime, request, "scrape", body.model_dump(mode="json"), "scrape_run_get"
    )


@router.get("/v1/scrape-runs/{job_id}", response_model=JobView, name="scrape_run_get")
async def scrape_run_get(job_id: JobId, runtime: RuntimeDep) -> JobView:
    """Status, progress and outcome of a queued scrape."""
    return await _get(runtime, "scrape", job_id)


@router.post(
    "/v1/training-runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    dependencies=[ApiKey],
)
async def training_run_create(
    body: TrainRequest, runtime: RuntimeDep, request: Request
) -> JobAccepted:
    """Queue a training run for the trainer service (API key)."""
    return await _enqueue(
        runtime, request, "train", body.model_dump(mode="json"), "training_run_get"
    )


@router.get("/v1/training-runs/{job_id}", response_model=JobView, name="training_run_get")
async def training_run_get(job_id: JobId, runtime: RuntimeDep) -> JobView:
    """Status, progress and outcome of a queued training run."""
    return await _get(runtime, "train", job_id)
