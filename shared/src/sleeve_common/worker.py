"""The worker loop: claim a job, run its handler, keep the lease alive, record the outcome.

Told to stop, a worker cancels the job in hand and hands it back to the queue, so the next
worker (the next ``sleeve run``) takes it up at once; handlers must cope with being cancelled
and run again (a scrape skips the covers it already stored, training starts over, scoring
skips the items it finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sleeve_common.exceptions import LeaseLost, SleeveError
from sleeve_common.jobs import ClaimedJob, JobQueue
from sleeve_common.progress import Part, line_with_parts

__all__ = ["Handler", "JobContext", "run_worker", "worker_name"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What a handler gets: the job and a way to report progress."""

    job: ClaimedJob
    queue: JobQueue

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    async def progress(
        self,
        fraction: float,
        message: str,
        *,
        stage: str | None = None,
        parts: Sequence[Part] = (),
    ) -> None:
        """A ``ProgressSink``: the job row keeps one line, so parts are counted at its end."""
        await self.queue.report_progress(
            self.job, fraction=fraction, message=line_with_parts(message, parts), stage=stage
        )


Handler = Callable[[JobContext], Coroutine[Any, Any, dict[str, Any] | None]]


def worker_name(role: str) -> str:
    """A name unique to this process, so leases of two workers never look alike."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def run_worker(
    queue: JobQueue,
    handlers: Mapping[str, Handler],
    *,
    owner: str,
    poll_seconds: float,
    stop: asyncio.Event,
    max_jobs: int | None = None,
) -> int:
    """Run jobs of the handled kinds until ``stop`` is set or ``max_jobs`` ran; return the count."""
    done = 0
    while not stop.is_set() and (max_jobs is None or done < max_jobs):
        job = await queue.claim(kinds=list(handlers), owner=owner)
        if job is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
            continue
        await _run_one(queue, handlers[job.kind], job, stop)
        done += 1
    return done


async def _run_one(queue: JobQueue, handler: Handler, job: ClaimedJob, stop: asyncio.Event) -> None:
    """Run one job to its end, or until ``stop``: then cancel it and hand it back to the queue
    (a stopped ``sleeve run`` or worker container leaves no job waiting for its lease to end)."""
    logger.info("job %s (%s) claimed, attempt %s", job.id, job.kind, job.attempt)
    work = asyncio.create_task(handler(JobContext(job=job, queue=queue)))
    keeper = asyncio.create_task(_keep_lease(queue, job, work))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((work, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            await asyncio.wait((work,))
            if not _lease_lost(keeper):
                await _hand_back(queue, job)
            return
        try:
            result = work.result()
        except asyncio.CancelledError:
            if _lease_lost(keeper):
                logger.warning("job %s: lease lost, abandoned to another worker", job.id)
                return
            raise
        except LeaseLost:
            logger.warning("job %s: lease lost, abandoned to another worker", job.id)
            return
        except SleeveError as exc:
            # Raised on purpose, with a message that says it all: no traceback in the console.
            logger.error("job %s (%s) failed: %s", job.id, job.kind, exc)
            await _finish(queue.fail(job, f"{type(exc).__name__}: {exc}"), job)
            return
        except Exception as exc:
            logger.exception("job %s (%s) failed", job.id, job.kind)
            await _finish(queue.fail(job, f"{type(exc).__name__}: {exc}"), job)
            return
    finally:
        keeper.cancel()
        stopping.cancel()
        if not work.done():
            work.cancel()
    await _finish(queue.succeed(job, result), job)
    logger.info("job %s (%s) succeeded", job.id, job.kind)


def _lease_lost(keeper: asyncio.Task[Any]) -> bool:
    return keeper.done() and not keeper.cancelled() and isinstance(keeper.exception(), LeaseLost)


async def _hand_back(queue: JobQueue, job: ClaimedJob) -> None:
    try:
        await queue.release(job)
    except LeaseLost:
        logger.warning("job %s: stopped after its lease had moved on", job.id)
        return
    except Exception:
        # Not handed back: the next worker takes it up once its lease has run out.
        logger.exception("job %s: could not hand it back to the queue", job.id)
        return
    logger.info("job %s (%s) handed back to the queue: this worker is stopping", job.id, job.kind)


async def _finish(outcome: Awaitable[None], job: ClaimedJob) -> None:
    try:
        await outcome
    except LeaseLost:
        logger.warning("job %s finished after its lease expired; another worker owns it", job.id)


async def _keep_lease(queue: JobQueue, job: ClaimedJob, work: asyncio.Task[Any]) -> None:
    """Renew the lease at a third of its length; cancel the work if the lease is lost."""
    interval = queue.lease_seconds / 3
    while True:
        await asyncio.sleep(interval)
        try:
            await queue.renew(job)
        except LeaseLost:
            work.cancel()
            raise
        except Exception:
            # The database may be back before the lease runs out; the next renewal will tell.
            logger.exception("job %s: could not renew its lease", job.id)
