"""A job queue in the database, with leases.

A worker claims a job with a lease and renews it while working. A job whose worker died
is claimed again once its lease has expired, up to ``max_attempts`` claims. Claiming is one
atomic statement: ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`` on PostgreSQL;
on SQLite the same single UPDATE is atomic because SQLite serialises writers. Every write a
worker makes is conditional on still holding the lease, so two workers never both finish,
or report progress on, the same job. A worker that is told to stop hands its job back
(``release``) for the next one to take up at once. A job may hold a ``unique_key`` that no
other queued or running job holds at the same time (enforced by the database).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from sleeve_common.db import Database
from sleeve_common.exceptions import Conflict, LeaseLost, NotFound
from sleeve_common.models import Job, utcnow

__all__ = ["ClaimedJob", "JobQueue", "JobStatus"]

Clock = Callable[[], datetime]


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds a lease on (for the ``attempt``-th claim)."""

    id: int
    kind: str
    payload: dict[str, Any]
    owner: str
    attempt: int


class JobQueue:
    """Enqueue, claim, renew, report and finish jobs."""

    def __init__(self, db: Database, *, lease_seconds: float, clock: Clock = utcnow) -> None:
        self._db = db
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = clock

    @property
    def lease_seconds(self) -> float:
        return self._lease.total_seconds()

    async def enqueue(
        self,
        *,
        kind: str,
        payload: dict[str, Any],
        max_attempts: int = 3,
        unique_key: str | None = None,
    ) -> int:
        """Queue a job; with ``unique_key``, ``Conflict`` while a queued or running job holds it.

        The database enforces the key (a partial unique index), so two processes racing to
        queue the same work get one job and one ``Conflict``.
        """
        try:
            async with self._db.session() as session:
                job = Job(
                    kind=kind,
                    payload=payload,
                    max_attempts=max_attempts,
                    unique_key=unique_key,
                    created_at=self._clock(),
                )
                session.add(job)
                await session.flush()
                return job.id
        except IntegrityError:
            if unique_key is None:
                raise
            raise Conflict(f"a job holding the key {unique_key!r} is queued or running") from None

    async def latest(self, *, unique_key: str) -> Job | None:
        """The newest job ever queued with ``unique_key`` (finished or not), or None."""
        async with self._db.session() as session:
            return (
                await session.execute(
                    select(Job).where(Job.unique_key == unique_key).order_by(Job.id.desc()).limit(1)
                )
            ).scalar_one_or_none()

    async def get(self, job_id: int) -> Job:
        async with self._db.session() as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id} does not exist")
            return job

    async def claim(self, *, kinds: Sequence[str], owner: str) -> ClaimedJob | None:
        """Take the oldest claimable job of these kinds, or None if there is none."""
        now = self._clock()
        expired = and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        async with self._db.session() as session:
            # A job whose lease ran out too often has killed its workers: stop retrying it.
            await session.execute(
                update(Job)
                .where(Job.kind.in_(kinds), expired, Job.attempts >= Job.max_attempts)
                .values(
                    status=JobStatus.FAILED,
                    finished_at=now,
                    lease_owner=None,
                    error="the worker stopped renewing its lease on every attempt "
                    "(it died or hung); giving up",
                )
            )
            candidate = (
                select(Job.id)
                .where(Job.kind.in_(kinds), or_(Job.status == JobStatus.QUEUED, expired))
                .order_by(Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            row = (
                await session.execute(
                    update(Job)
                    .where(Job.id == candidate)
                    .values(
                        status=JobStatus.RUNNING,
                        lease_owner=owner,
                        lease_expires_at=now + self._lease,
                        attempts=Job.attempts + 1,
                        started_at=now,
                        error=None,
                    )
                    .returning(Job.id, Job.kind, Job.payload, Job.attempts)
                )
            ).first()
        if row is None:
            return None
        return ClaimedJob(
            id=row.id, kind=row.kind, payload=row.payload, owner=owner, attempt=row.attempts
        )

    async def renew(self, job: ClaimedJob) -> None:
        """Extend the lease; raise LeaseLost if another worker may own the job now."""
        await self._update_held(job, lease_expires_at=self._clock() + self._lease)

    async def report_progress(
        self, job: ClaimedJob, *, fraction: float, message: str, stage: str | None = None
    ) -> None:
        """Store progress (0..1), a message and the stage (if given); also renews the lease."""
        values: dict[str, Any] = {
            "progress": min(max(fraction, 0.0), 1.0),
            "progress_message": message[:2000],
            "lease_expires_at": self._clock() + self._lease,
        }
        if stage is not None:
            values["stage"] = stage[:64]
        await self._update_held(job, **values)

    async def release(self, job: ClaimedJob) -> None:
        """Hand an unfinished job back to the queue (its worker is stopping), so the next
        worker takes it up at once; the interrupted claim does not count as an attempt."""
        await self._update_held(
            job,
            status=JobStatus.QUEUED,
            attempts=Job.attempts - 1,
            lease_owner=None,
            lease_expires_at=None,
        )

    async def succeed(self, job: ClaimedJob, result: dict[str, Any] | None = None) -> None:
        await self._update_held(
            job,
            status=JobStatus.SUCCEEDED,
            progress=1.0,
            result=result or {},
            finished_at=self._clock(),
            lease_expires_at=None,
        )

    async def fail(self, job: ClaimedJob, error: str) -> None:
        await self._update_held(
            job,
            status=JobStatus.FAILED,
            error=error[:10_000],
            finished_at=self._clock(),
            lease_expires_at=None,
        )

    async def cancel(self, job_id: int) -> bool:
        """End a queued or running job as cancelled; False if it had already ended. A worker
        running it loses its lease at its next renewal or progress report and stops."""
        async with self._db.session() as session:
            result = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
                .values(
                    status=JobStatus.CANCELLED,
                    finished_at=self._clock(),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _update_held(self, job: ClaimedJob, **values: Any) -> None:
        now = self._clock()
        async with self._db.session() as session:
            result = await session.execute(
                update(Job)
                .where(
                    Job.id == job.id,
                    Job.lease_owner == job.owner,
                    Job.attempts == job.attempt,
                    Job.status == JobStatus.RUNNING,
                    Job.lease_expires_at >= now,
                )
                .values(**values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(f"job {job.id}: the lease of {job.owner} has expired or moved on")
