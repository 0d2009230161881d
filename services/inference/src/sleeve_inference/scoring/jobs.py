"""Scoring jobs: create one (every check before any work), run or resume it on its engine.

A job's results are its ``predictions`` rows, one per distinct item; ``done`` and ``failed``
on the ``scoring_jobs`` row always match them (a run recomputes them when it starts, and each
insert adds its rows to them in the same transaction). Running a job again scores only
the items without a row, so an interrupted job resumes where it stopped and a finished one
adds nothing. The API queues a job for a ``score`` worker (``queue_scoring_job``); a
cancelled job stops after the chunk in hand and keeps the rows it wrote.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from sleeve_common.cpus import available_cpus
from sleeve_common.exceptions import Conflict, NotFound
from sleeve_common.jobs import JobQueue, JobStatus
from sleeve_common.models import ModelVersion, ScoringJob, utcnow
from sleeve_common.progress import ProgressSink, ThrottledProgress, silent_progress
from sleeve_common.registry import resolve_serving_version
from sleeve_inference.model_holder import fetch_model_file, load_predictor, model_cache_dir
from sleeve_inference.scoring.catalog import open_catalog
from sleeve_inference.scoring.engine import ChunkDone, EngineOptions, count_rows, score_catalog
from sleeve_inference.scoring.errors import OutputError, ScoringCancelled
from sleeve_inference.scoring.exports import format_for_path, write_export
from sleeve_inference.scoring.ray_engine import require_ray, score_catalog_on_ray
from sleeve_inference.url_fetch import UrlFetcher

if TYPE_CHECKING:
    from sleeve_common.runtime import Runtime
    from sleeve_common.worker import Handler, JobContext

__all__ = [
    "FINISHED",
    "ScoringSummary",
    "cancel_scoring_job",
    "check_output",
    "create_scoring_job",
    "get_scoring_job",
    "queue_scoring_job",
    "run_scoring",
    "score_handler",
]

ENGINES = ("local", "ray")
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
_NOT_CANCELLED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True)
class ScoringSummary:
    """The outcome of a run: the job's counts and this run's pace."""

    scoring_job_id: int
    total: int
    done: int
    failed: int
    duplicates: int
    written: int
    elapsed_s: float
    duplicate_examples: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.written / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """One line for the terminal."""
        text = (
            f"scoring job {self.scoring_job_id}: {self.done} scored, {self.failed} failed, "
            f"{self.duplicates} duplicate ids of {self.total} items; {self.written} scored in "
            f"this run at {self.images_per_second:.1f} images/s"
        )
        if self.duplicate_examples:
            text += f" (duplicates include {', '.join(map(repr, self.duplicate_examples))})"
        return text


def check_output(path: Path) -> None:
    """``OutputError`` unless ``path`` has a known extension and can be written."""
    format_for_path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder, not a file")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"cannot write {path}: permission denied")


async def create_scoring_job(
    *,
    runtime: Runtime,
    input: str,
    output: Path | None = None,
    model: str | None = None,
    engine: str = "local",
) -> ScoringJob:
    """Validate the request (input, output, model, engine) and add a queued scoring job."""
    if engine not in ENGINES:
        raise OutputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "ray":
        require_ray()
    if output is not None:
        check_output(output)
    version = await resolve_serving_version(db=runtime.db, version=model)
    catalog = await open_catalog(input, store=runtime.store, db=runtime.db)
    request: dict[str, Any] = {
        "input": input,
        "output": None if output is None else str(output),
        "model": version.version,
    }
    async with runtime.db.session() as session:
        job = ScoringJob(
            model_version_id=version.id,
            request=request,
            engine=engine,
            total=catalog.total,
            status=JobStatus.QUEUED,
            created_at=utcnow(),
        )
        session.add(job)
        await session.flush()
    return job


async def queue_scoring_job(
    *, runtime: Runtime, input: str, model: str | None = None, engine: str = "local"
) -> ScoringJob:
    """Validate and create a scoring job, then queue it for a ``score`` worker."""
    job = await create_scoring_job(runtime=runtime, input=input, model=model, engine=engine)
    settings = runtime.settings
    queue = JobQueue(runtime.db, lease_seconds=settings.job_lease_seconds)
    job.job_id = await queue.enqueue(
        kind="score", payload={"scoring_job_id": job.id}, max_attempts=settings.job_max_attempts
    )
    await _update(runtime, job.id, job_id=job.job_id)
    return job


async def get_scoring_job(runtime: Runtime, scoring_job_id: int) -> ScoringJob:
    """The scoring job, or ``NotFound``."""
    job, _ = await _load(runtime, scoring_job_id)
    return job


async def cancel_scoring_job(runtime: Runtime, scoring_job_id: int) -> ScoringJob:
    """Cancel a queued or running job (``Conflict`` if it has ended); its rows are kept."""
    job, _ = await _load(runtime, scoring_job_id)
    if job.status in FINISHED:
        raise Conflict(f"scoring job {scoring_job_id} has already ended ({job.status})")
    await _update(runtime, job.id, status=JobStatus.CANCELLED, finished_at=utcnow())
    if job.job_id is not None:
        queue = JobQueue(runtime.db, lease_seconds=runtime.settings.job_lease_seconds)
        await queue.cancel(job.job_id)
    return await get_scoring_job(runtime, scoring_job_id)


async def run_scoring(
    runtime: Runtime,
    scoring_job_id: int,
    on_progress: ProgressSink = silent_progress,
    *,
    chunk_size: int | None = None,
) -> ScoringSummary:
    """Score (or resume) the job's items that have no row yet; the job ends succeeded or failed."""
    started = time.monotonic()
    job, version = await _load(runtime, scoring_job_id)
    if job.status == JobStatus.CANCELLED:
        raise ScoringCancelled(f"scoring job {scoring_job_id} was cancelled")
    settings = runtime.settings
    catalog = await open_catalog(str(job.request["input"]), store=runtime.store, db=runtime.db)
    await _update(
        runtime,
        job.id,
        when=_NOT_CANCELLED,
        status=JobStatus.RUNNING,
        error=None,
        total=catalog.total,
        finished_at=None,
        started_at=job.started_at or utcnow(),
    )
    await count_rows(db=runtime.db, scoring_job_id=job.id)  # from here on, kept per insert
    try:
        options = EngineOptions(
            chunk_size=chunk_size or settings.scoring_chunk_size,
            batch_size=settings.batch_max_size,
            threads=settings.cpu_threads or available_cpus(),
            max_pixels=settings.max_image_pixels,
            disagree_confidence=settings.scoring_disagree_confidence,
        )

        async def on_chunk(chunk: ChunkDone) -> None:
            if (await get_scoring_job(runtime, job.id)).status == JobStatus.CANCELLED:
                raise ScoringCancelled(f"scoring job {job.id} was cancelled")
            await on_progress(*_progress(chunk, catalog.total))

        cache_dir = model_cache_dir(settings)
        if job.engine == "ray":
            counts = await score_catalog_on_ray(
                db=runtime.db,
                store=runtime.store,
                settings=settings,
                model=version,
                model_path=await fetch_model_file(
                    store=runtime.store, row=version, cache_dir=cache_dir
                ),
                job=job,
                catalog=catalog,
                options=options,
                on_chunk=on_chunk,
            )
        else:
            predictor = await load_predictor(
                runtime=runtime, row=version, cache_dir=cache_dir, threads=1
            )
            async with UrlFetcher.from_settings(settings) as fetcher:
                counts = await score_catalog(
                    db=runtime.db,
                    store=runtime.store,
                    fetcher=fetcher,
                    predictor=predictor,
                    job=job,
                    catalog=catalog,
                    options=options,
                    on_chunk=on_chunk,
                )
    except BaseException as exc:
        if not isinstance(exc, ScoringCancelled):
            await asyncio.shield(
                _update(
                    runtime,
                    job.id,
                    when=(JobStatus.RUNNING,),
                    status=JobStatus.FAILED,
                    finished_at=utcnow(),
                    error=f"{type(exc).__name__}: {exc}"[:10_000],
                )
            )
        await asyncio.shield(count_rows(db=runtime.db, scoring_job_id=job.id))
        raise
    done, failed = await count_rows(db=runtime.db, scoring_job_id=job.id)
    duplicates = max(0, counts.enumerated - done - failed)
    await _update(
        runtime,
        job.id,
        when=(JobStatus.RUNNING,),
        status=JobStatus.SUCCEEDED,
        finished_at=utcnow(),
        duplicates=duplicates,
    )
    summary = ScoringSummary(
        scoring_job_id=job.id,
        total=counts.enumerated,
        done=done,
        failed=failed,
        duplicates=duplicates,
        written=counts.written,
        elapsed_s=time.monotonic() - started,
        duplicate_examples=counts.duplicate_examples,
    )
    await on_progress(1.0, summary.line())
    return summary


def _progress(chunk: ChunkDone, total: int) -> tuple[float, str]:
    """The fraction scored and a message with images/s and the ETA."""
    finished = chunk.done + chunk.failed
    rate = chunk.written / chunk.elapsed_s if chunk.elapsed_s > 0 else 0.0
    remaining = max(0, total - chunk.enumerated)
    eta = f"{remaining / rate:.0f} s" if rate > 0 else "unknown"
    fraction = min(1.0, chunk.enumerated / total) if total else -1.0
    message = f"{finished}/{total} items scored, {rate:.1f} images/s, ETA {eta}"
    return fraction, message


async def _load(runtime: Runtime, scoring_job_id: int) -> tuple[ScoringJob, ModelVersion]:
    async with runtime.db.session() as session:
        job = await session.get(ScoringJob, scoring_job_id)
        if job is None:
            raise NotFound(f"scoring job {scoring_job_id} does not exist")
        version = await session.get(ModelVersion, job.model_version_id)
        if version is None:
            raise NotFound(f"model version id {job.model_version_id} does not exist")
    return job, version


async def _update(
    runtime: Runtime, scoring_job_id: int, *, when: tuple[str, ...] | None = None, **values: Any
) -> None:
    """Set ``values`` (only while the job's status is one of ``when``, if given: a run never
    overwrites a cancellation that came in meanwhile)."""
    statement = update(ScoringJob).where(ScoringJob.id == scoring_job_id)
    if when is not None:
        statement = statement.where(ScoringJob.status.in_(when))
    async with runtime.db.session() as session:
        await session.execute(statement.values(**values))


def score_handler(runtime: Runtime) -> Handler:
    """The ``score`` job kind (``sleeve worker score``): run or resume the scoring job named by
    the payload's ``scoring_job_id``. A worker that dies mid-job loses its lease; the next
    claim resumes the same scoring job, scoring only the items without a row."""

    async def handle(ctx: JobContext) -> dict[str, Any]:
        scoring_job_id = int(ctx.payload["scoring_job_id"])
        try:
            summary = await run_scoring(runtime, scoring_job_id, ThrottledProgress(ctx.progress))
        except ScoringCancelled as exc:
            return {"scoring_job_id": scoring_job_id, "summary": str(exc)}
        job, _ = await _load(runtime, scoring_job_id)
        if job.request.get("output"):
            await write_export(
                db=runtime.db,
                scoring_job_id=scoring_job_id,
                path=Path(job.request["output"]),
                top_k=runtime.settings.top_k,
            )
        return {"scoring_job_id": scoring_job_id, "summary": summary.line()}

    return handle
