"""Bulk scoring over HTTP: queue a catalog for a ``score`` worker, follow it, stream results.

The API only creates, reads and cancels jobs; the scoring itself runs in ``sleeve worker
score`` processes, never on this server's request path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from sleeve_common.exceptions import NotFound
from sleeve_common.models import MAX_ROW_ID, ScoringJob, utcnow
from sleeve_inference.deps import ApiKey, RuntimeDep
from sleeve_inference.errors import ApiError, error_responses
from sleeve_inference.schemas import JobAccepted, ScoringJobRequest, ScoringJobView
from sleeve_inference.scoring.albums import ALBUMS_SCHEME
from sleeve_inference.scoring.catalog import STORE_SCHEME
from sleeve_inference.scoring.exports import ExportFormat, iter_export
from sleeve_inference.scoring.jobs import (
    cancel_scoring_job,
    get_scoring_job,
    queue_scoring_job,
)

__all__ = ["router"]

router = APIRouter(tags=["scoring"])

ScoringJobId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="the id the POST answered")]
_NO_JOB = (404, "no such scoring job")

_MEDIA_TYPES: dict[ExportFormat, str] = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}


def _view(job: ScoringJob, request: Request) -> ScoringJobView:
    finished = job.done + job.failed
    rate = None
    eta = None
    if job.started_at is not None:
        elapsed = ((job.finished_at or utcnow()) - _aware(job.started_at)).total_seconds()
        if elapsed > 0 and finished:
            rate = finished / elapsed
            if job.finished_at is None:
                eta = max(0, job.total - finished) / rate
    results = request.url_for("scoring_job_results", job_id=job.id)
    return ScoringJobView(
        id=job.id,
        status=job.status,
        input=str(job.request["input"]),
        model_version=str(job.request["model"]),
        engine=job.engine,
        total=job.total,
        done=job.done,
        failed=job.failed,
        duplicates=job.duplicates,
        progress=min(1.0, finished / job.total) if job.total else 0.0,
        images_per_second=rate,
        eta_s=eta,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        results_url=f"{results}?format=jsonl",
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.post(
    "/v1/scoring-jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    dependencies=[ApiKey],
    responses=error_responses(
        400,
        401,
        403,
        413,
        (
            422,
            "the body is invalid, or the input is neither `store:` nor `albums:`, selects "
            "nothing, or names an unknown model; nothing is queued",
        ),
        503,
    ),
)
async def scoring_job_create(
    body: ScoringJobRequest, runtime: RuntimeDep, request: Request
) -> JobAccepted:
    """Queue a catalog for bulk scoring (API key). The input is checked first: an empty
    prefix, a filter that selects nothing or an unknown model answers 422 at once."""
    if not body.input.startswith((STORE_SCHEME, ALBUMS_SCHEME)):
        raise ApiError(
            422,
            "invalid_request",
            f"input: the API scores `{STORE_SCHEME}PREFIX` or `{ALBUMS_SCHEME}FILTER`; "
            "score folders and manifests on a disk with `sleeve score --input PATH`",
        )
    try:
        job = await queue_scoring_job(
            runtime=runtime, input=body.input, model=body.model, engine=body.engine
        )
    except NotFound as exc:  # the model version asked for
        raise ApiError(422, "invalid_request", f"model: {exc}") from None
    url = request.url_for("scoring_job_get", job_id=job.id)
    return JobAccepted(id=job.id, status=job.status, url=str(url))


@router.get(
    "/v1/scoring-jobs/{job_id}",
    response_model=ScoringJobView,
    name="scoring_job_get",
    responses=error_responses(_NO_JOB, 422, 503),
)
async def scoring_job_get(
    job_id: ScoringJobId, runtime: RuntimeDep, request: Request
) -> ScoringJobView:
    """Status, counts, images/s and ETA of a scoring job."""
    return _view(await get_scoring_job(runtime, job_id), request)


@router.post(
    "/v1/scoring-jobs/{job_id}/cancel",
    response_model=ScoringJobView,
    dependencies=[ApiKey],
    responses=error_responses(401, 403, _NO_JOB, (409, "the job has already ended"), 422, 503),
)
async def scoring_job_cancel(
    job_id: ScoringJobId, runtime: RuntimeDep, request: Request
) -> ScoringJobView:
    """Cancel a queued or running job (API key); the rows already written are kept and can
    still be downloaded. 409 if the job has already ended."""
    return _view(await cancel_scoring_job(runtime, job_id), request)


@router.get(
    "/v1/scoring-jobs/{job_id}/results",
    name="scoring_job_results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the job's rows so far (all of them once it has succeeded)",
            "content": {media: {} for media in _MEDIA_TYPES.values()},
        },
        **error_responses(_NO_JOB, 422, 503),
    },
)
async def scoring_job_results(
    job_id: ScoringJobId,
    runtime: RuntimeDep,
    format: Annotated[Literal["jsonl", "csv", "parquet"], Query()] = "jsonl",
) -> StreamingResponse:
    """The job's predictions, streamed a page at a time as JSONL, CSV or Parquet: one row per
    item with its top genres, full probabilities, model version and error, if any."""
    job = await get_scoring_job(runtime, job_id)
    chunks = iter_export(
        db=runtime.db, scoring_job_id=job.id, export_format=format, top_k=runtime.settings.top_k
    )
    filename = f"scoring-job-{job.id}.{format}"
    return StreamingResponse(
        chunks,
        media_type=_MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Sleeve-Job-Status": job.status,
        },
    )
