"""Enqueue work for the scraper and trainer, and watch its progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy import select

from sleeve_common.exceptions import ConfigError, InvalidRequest
from sleeve_common.jobs import JobQueue
from sleeve_common.models import (
    MAX_ROW_ID,
    Dataset,
    Job,
    ScrapeRun,
    ScrapeRunStatus,
    TrainingRun,
    TrainingRunStatus,
    utcnow,
)
from sleeve_common.payloads import ScrapeParams, TrainRequest, api_scrape_request
from sleeve_common.training_progress import eta_now, read_progress
from sleeve_inference.deps import ApiKey, RuntimeDep
from sleeve_inference.errors import ApiError, error_responses
from sleeve_inference.schemas import (
    JobAccepted,
    JobView,
    ScrapeJobView,
    ScrapeRunView,
    TrainingJobView,
    TrainingRunView,
)

__all__ = ["router"]

router = APIRouter(tags=["work"])

JobId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="the id the POST answered")]

_QUEUE_ERRORS = (400, 401, 403, 413)
_GET_ERRORS = error_responses((404, "no such job of this kind"), 422, 503)


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


async def _get(runtime: RuntimeDep, kind: str, job_id: int) -> Job:
    queue = JobQueue(runtime.db, lease_seconds=runtime.settings.job_lease_seconds)
    job = await queue.get(job_id)
    if job.kind != kind:
        raise ApiError(404, "not_found", f"job {job_id} is not a {kind} job")
    return job


async def _scrape_views(runtime: RuntimeDep, jobs: Sequence[Job]) -> list[ScrapeJobView]:
    """The jobs with the runs they work on (a run that a later job resumed shows under it)."""
    async with runtime.db.session() as session:
        runs = (
            await session.execute(
                select(ScrapeRun)
                .where(ScrapeRun.job_id.in_([job.id for job in jobs]))
                .order_by(ScrapeRun.id)
            )
        ).scalars()
        by_job = {run.job_id: run for run in runs}
    heartbeat_s, now = runtime.settings.scrape_heartbeat_s, utcnow()
    return [
        ScrapeJobView(
            **_view(job).model_dump(),
            run=_run_view(by_job[job.id], heartbeat_s, now) if job.id in by_job else None,
        )
        for job in jobs
    ]


def _run_view(run: ScrapeRun, heartbeat_s: float, now: datetime) -> ScrapeRunView:
    status = run.reported_status(heartbeat_s=heartbeat_s, now=now)
    return ScrapeRunView(
        id=run.id,
        source=run.source,
        status=status.value,
        seen=run.seen,
        fetched=run.fetched,
        stored=run.added,
        duplicates=run.duplicates,
        rejected=run.rejected,
        rejected_by_reason=run.rejected_by_reason,
        seen_by_genre=run.seen_by_genre,
        requests=run.requests,
        errors_by_kind=run.errors_by_kind,
        # The rate is sampled with the heartbeat: it is current only while the run beats.
        request_rate=run.request_rate if status is ScrapeRunStatus.RUNNING else 0.0,
        error=run.error,
        started_at=run.started_at,
        heartbeat_at=run.heartbeat_at,
        finished_at=run.finished_at,
    )


async def _training_view(runtime: RuntimeDep, job: Job) -> TrainingJobView:
    """The job with the training runs its attempts started (the latest one as ``run``)."""
    async with runtime.db.session() as session:
        runs = list(
            (
                await session.execute(
                    select(TrainingRun).where(TrainingRun.job_id == job.id).order_by(TrainingRun.id)
                )
            ).scalars()
        )
    heartbeat_s, now = runtime.settings.train_heartbeat_s, utcnow()
    views = [_training_run_view(run, heartbeat_s, now) for run in runs]
    return TrainingJobView(
        **_view(job).model_dump(), run=views[-1] if views else None, earlier_runs=views[:-1]
    )


def _training_run_view(run: TrainingRun, heartbeat_s: float, now: datetime) -> TrainingRunView:
    status = run.reported_status(heartbeat_s=heartbeat_s, now=now)
    progress = read_progress(run.progress, run_id=run.id)
    running = status is TrainingRunStatus.RUNNING
    return TrainingRunView(
        id=run.id,
        status=status.value,
        progress=progress,
        eta_s=eta_now(progress, now) if running and progress is not None else None,
        error=run.error,
        started_at=run.started_at,
        heartbeat_at=run.heartbeat_at,
        finished_at=run.finished_at,
    )


@router.post(
    "/v1/scrape-runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    dependencies=[ApiKey],
    responses=error_responses(
        *_QUEUE_ERRORS,
        (
            422,
            "the body is invalid, or a worker could not run it: an unknown source, missing "
            "source credentials, a path that is missing or outside SLEEVE_IMPORT_ROOT (or no "
            "root set); nothing is queued",
        ),
        503,
    ),
)
async def scrape_run_create(
    body: ScrapeParams, runtime: RuntimeDep, request: Request
) -> JobAccepted:
    """Queue a scrape for the scraper service (API key).

    Answers 422 at once, queuing nothing, for an unknown source, one whose credentials are
    not configured (Spotify's client id and secret, the MusicBrainz contact), or a path that
    does not exist on this machine. The sources that read files on the server (`folder`,
    `bandcamp-tsv`, `mumu-csv`) read only inside `SLEEVE_IMPORT_ROOT` (a relative path is
    taken from there; `..` and symlinks are resolved first, and a manifest row or a file of
    the folder that leads outside is refused); with no root configured they answer 422.
    """
    try:
        scrape = api_scrape_request(body, runtime.settings)
    except (ConfigError, InvalidRequest) as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return await _enqueue(
        runtime, request, "scrape", scrape.model_dump(mode="json"), "scrape_run_get"
    )


@router.get(
    "/v1/scrape-runs", response_model=list[ScrapeJobView], responses=error_responses(422, 503)
)
async def scrape_run_list(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="only jobs older than this id")
    ] = None,
) -> list[ScrapeJobView]:
    """Queued scrapes, newest first, each with its run's figures; page with `before`."""
    query = select(Job).where(Job.kind == "scrape")
    if before is not None:
        query = query.where(Job.id < before)
    async with runtime.db.session() as session:
        jobs = (await session.execute(query.order_by(Job.id.desc()).limit(limit))).scalars().all()
    return await _scrape_views(runtime, jobs)


@router.get(
    "/v1/scrape-runs/{job_id}",
    response_model=ScrapeJobView,
    name="scrape_run_get",
    responses=_GET_ERRORS,
)
async def scrape_run_get(job_id: JobId, runtime: RuntimeDep) -> ScrapeJobView:
    """Status, progress and outcome of a queued scrape, with its run's figures: covers
    fetched, stored, duplicates, rejections by reason, HTTP errors by kind, requests and
    their current rate, and whether the run is alive (`interrupted` once its worker died)."""
    [view] = await _scrape_views(runtime, [await _get(runtime, "scrape", job_id)])
    return view


@router.post(
    "/v1/training-runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    dependencies=[ApiKey],
    responses=error_responses(
        *_QUEUE_ERRORS,
        (
            422,
            "the body is invalid, or its dataset does not exist and no `build_dataset` says "
            "how to build it; nothing is queued",
        ),
        503,
    ),
)
async def training_run_create(
    body: TrainRequest, runtime: RuntimeDep, request: Request
) -> JobAccepted:
    """Queue a training run for the trainer service (API key). Answers 422 at once, queuing
    nothing, for a dataset that does not exist unless `build_dataset` says how to build it."""
    if body.build_dataset is None:
        async with runtime.db.session() as session:
            found = await session.scalar(select(Dataset.id).where(Dataset.name == body.dataset))
        if found is None:
            raise ApiError(
                422,
                "invalid_request",
                f"dataset: {body.dataset!r} does not exist; build it first (`sleeve dataset "
                "build`), or send `build_dataset` to have the trainer build it",
            )
    return await _enqueue(
        runtime, request, "train", body.model_dump(mode="json"), "training_run_get"
    )


@router.get(
    "/v1/training-runs/{job_id}",
    response_model=TrainingJobView,
    name="training_run_get",
    responses=_GET_ERRORS,
)
async def training_run_get(job_id: JobId, runtime: RuntimeDep) -> TrainingJobView:
    """Status, progress and outcome of a queued training run, with its run's progress: the
    phase (covers, trunk activations, head, fine-tune, export, evaluation…), the epoch of
    the head or fine-tune phase, the last epoch's loss and accuracy (training and
    validation), the covers done, the fraction of the run done and the time left (`eta_s`),
    written about once a second. A run whose worker died reads `interrupted` once its
    heartbeat is stale; the job's next attempt starts a new run, the earlier ones are
    listed in `earlier_runs`."""
    return await _training_view(runtime, await _get(runtime, "train", job_id))
