"""The job queue's contract, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sleeve_common.db import Database
from sleeve_common.exceptions import Conflict, LeaseLost, NotFound
from sleeve_common.jobs import JobQueue, JobStatus
from sleeve_common.worker import JobContext, run_worker

LEASE_S = 30.0


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(database: Database, clock: FakeClock) -> JobQueue:
    return JobQueue(database, lease_seconds=LEASE_S, clock=clock)


async def test_claim_gives_oldest_job_of_the_kind(queue: JobQueue) -> None:
    first = await queue.enqueue(kind="scrape", payload={"n": 1})
    await queue.enqueue(kind="train", payload={"n": 2})
    await queue.enqueue(kind="scrape", payload={"n": 3})

    job = await queue.claim(kinds=["scrape"], owner="w1")

    assert job is not None
    assert (job.id, job.kind, job.payload, job.attempt) == (first, "scrape", {"n": 1}, 1)
    stored = await queue.get(first)
    assert stored.status == JobStatus.RUNNING
    assert stored.lease_owner == "w1"


async def test_claim_returns_none_when_nothing_is_queued(queue: JobQueue) -> None:
    await queue.enqueue(kind="train", payload={})
    assert await queue.claim(kinds=["scrape"], owner="w1") is None


async def test_two_workers_never_get_the_same_job(database: Database, clock: FakeClock) -> None:
    queues = [JobQueue(database, lease_seconds=LEASE_S, clock=clock) for _ in range(4)]
    ids = [await queues[0].enqueue(kind="score", payload={"i": i}) for i in range(10)]

    async def drain(q: JobQueue, owner: str) -> list[int]:
        got = []
        while (job := await q.claim(kinds=["score"], owner=owner)) is not None:
            got.append(job.id)
        return got

    results = await asyncio.gather(*(drain(q, f"w{i}") for i, q in enumerate(queues)))
    claimed = [job_id for got in results for job_id in got]
    assert sorted(claimed) == ids  # every job once, none twice


async def test_running_job_with_live_lease_is_not_taken(queue: JobQueue, clock: FakeClock) -> None:
    await queue.enqueue(kind="train", payload={})
    assert await queue.claim(kinds=["train"], owner="w1") is not None
    clock.advance(LEASE_S - 1)
    assert await queue.claim(kinds=["train"], owner="w2") is None


async def test_expired_lease_is_taken_over_and_old_owner_is_locked_out(
    queue: JobQueue, clock: FakeClock
) -> None:
    job_id = await queue.enqueue(kind="train", payload={})
    dead = await queue.claim(kinds=["train"], owner="dead-worker")
    assert dead is not None

    clock.advance(LEASE_S + 1)
    alive = await queue.claim(kinds=["train"], owner="w2")

    assert alive is not None
    assert (alive.id, alive.attempt) == (job_id, 2)
    with pytest.raises(LeaseLost):
        await queue.report_progress(dead, fraction=0.5, message="zombie")
    with pytest.raises(LeaseLost):
        await queue.succeed(dead, {"from": "zombie"})
    await queue.succeed(alive, {"ok": True})
    stored = await queue.get(job_id)
    assert (stored.status, stored.result, stored.lease_owner) == ("succeeded", {"ok": True}, "w2")


async def test_renewal_keeps_the_lease(queue: JobQueue, clock: FakeClock) -> None:
    await queue.enqueue(kind="train", payload={})
    job = await queue.claim(kinds=["train"], owner="w1")
    assert job is not None
    for _ in range(5):
        clock.advance(LEASE_S * 0.6)
        await queue.renew(job)
    assert await queue.claim(kinds=["train"], owner="w2") is None


async def test_renewing_an_expired_lease_fails(queue: JobQueue, clock: FakeClock) -> None:
    await queue.enqueue(kind="train", payload={})
    job = await queue.claim(kinds=["train"], owner="w1")
    assert job is not None
    clock.advance(LEASE_S + 1)
    with pytest.raises(LeaseLost):
        await queue.renew(job)


async def test_job_that_keeps_killing_workers_fails_after_max_attempts(
    queue: JobQueue, clock: FakeClock
) -> None:
    job_id = await queue.enqueue(kind="train", payload={}, max_attempts=2)
    for owner in ("w1", "w2"):
        assert await queue.claim(kinds=["train"], owner=owner) is not None
        clock.advance(LEASE_S + 1)

    assert await queue.claim(kinds=["train"], owner="w3") is None
    stored = await queue.get(job_id)
    assert stored.status == JobStatus.FAILED
    assert stored.error is not None and "lease" in stored.error


async def test_progress_and_errors_are_stored(queue: JobQueue) -> None:
    job_id = await queue.enqueue(kind="scrape", payload={})
    job = await queue.claim(kinds=["scrape"], owner="w1")
    assert job is not None
    await queue.report_progress(job, fraction=0.25, message="25 of 100 covers")
    mid = await queue.get(job_id)
    assert (mid.progress, mid.progress_message) == (0.25, "25 of 100 covers")

    await queue.fail(job, "ValueError: boom")
    stored = await queue.get(job_id)
    assert (stored.status, stored.error) == ("failed", "ValueError: boom")
    assert stored.finished_at is not None


async def test_get_missing_job_raises(queue: JobQueue) -> None:
    with pytest.raises(NotFound):
        await queue.get(999_999)


async def test_worker_runs_handlers_and_records_outcomes(database: Database) -> None:
    queue = JobQueue(database, lease_seconds=LEASE_S)
    ok_id = await queue.enqueue(kind="echo", payload={"value": 7})
    bad_id = await queue.enqueue(kind="echo", payload={"value": -1})

    async def echo(ctx: JobContext) -> dict[str, int]:
        await ctx.progress(0.5, "halfway")
        if ctx.payload["value"] < 0:
            raise ValueError("negative value")
        return {"value": ctx.payload["value"]}

    ran = await run_worker(
        queue, {"echo": echo}, owner="w1", poll_seconds=0.1, stop=asyncio.Event(), max_jobs=2
    )

    assert ran == 2
    ok, bad = await queue.get(ok_id), await queue.get(bad_id)
    assert (ok.status, ok.result, ok.progress) == ("succeeded", {"value": 7}, 1.0)
    assert (bad.status, bad.error) == ("failed", "ValueError: negative value")


async def test_worker_stops_when_asked(database: Database) -> None:
    queue = JobQueue(database, lease_seconds=LEASE_S)
    stop = asyncio.Event()
    stop.set()
    assert await run_worker(queue, {"echo": _never}, owner="w", poll_seconds=5, stop=stop) == 0


async def _never(ctx: JobContext) -> None:
    raise AssertionError("no job should run")


async def test_worker_abandons_a_job_whose_lease_was_taken_over(
    database: Database, clock: FakeClock
) -> None:
    # A short lease so the worker's renewal (every third of it, real time) comes quickly.
    slow = JobQueue(database, lease_seconds=0.3, clock=clock)
    job_id = await slow.enqueue(kind="train", payload={})
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hang(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker = asyncio.create_task(
        run_worker(
            slow, {"train": hang}, owner="stuck", poll_seconds=0.1, stop=asyncio.Event(), max_jobs=1
        )
    )
    await started.wait()
    clock.advance(1)  # the stuck worker's lease has expired…
    rescuer = await JobQueue(database, lease_seconds=LEASE_S, clock=clock).claim(
        kinds=["train"], owner="rescuer"
    )
    assert rescuer is not None and rescuer.id == job_id  # …and another worker took the job

    await asyncio.wait_for(cancelled.wait(), timeout=10)  # the stuck worker stops its work
    assert await asyncio.wait_for(worker, timeout=10) == 1
    stored = await slow.get(job_id)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("running", "rescuer", 2)


async def test_a_stopped_worker_hands_its_job_back_without_spending_an_attempt(
    database: Database,
) -> None:
    queue = JobQueue(database, lease_seconds=LEASE_S)
    job_id = await queue.enqueue(kind="train", payload={})
    started, cancelled, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def hang(ctx: JobContext) -> None:
        await ctx.progress(0.4, "embedding", stage="train")
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker = asyncio.create_task(
        run_worker(queue, {"train": hang}, owner="w1", poll_seconds=0.1, stop=stop)
    )
    await asyncio.wait_for(started.wait(), timeout=10)
    stop.set()
    assert await asyncio.wait_for(worker, timeout=10) == 1
    assert cancelled.is_set()
    stored = await queue.get(job_id)
    assert (stored.status, stored.attempts, stored.lease_owner) == ("queued", 0, None)
    assert (stored.progress, stored.stage) == (0.4, "train")  # kept for the next worker to see
    again = await queue.claim(kinds=["train"], owner="w2")  # at once: no lease to wait out
    assert again is not None and (again.id, again.attempt) == (job_id, 1)


async def test_a_unique_key_is_held_by_one_active_job_at_a_time(queue: JobQueue) -> None:
    results = await asyncio.gather(
        *(queue.enqueue(kind="bootstrap", payload={}, unique_key="bootstrap") for _ in range(4)),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, int)]
    assert len(created) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, int))
    assert (await queue.latest(unique_key="bootstrap")).id == created[0]  # type: ignore[union-attr]

    job = await queue.claim(kinds=["bootstrap"], owner="w")
    assert job is not None
    with pytest.raises(Conflict):  # running still holds the key
        await queue.enqueue(kind="bootstrap", payload={}, unique_key="bootstrap")
    await queue.fail(job, "no internet")
    # A finished job lets go of its key; other keys and keyless jobs never conflict.
    second = await queue.enqueue(kind="bootstrap", payload={}, unique_key="bootstrap")
    assert (await queue.latest(unique_key="bootstrap")).id == second  # type: ignore[union-attr]
    await queue.enqueue(kind="scrape", payload={}, unique_key="bootstrap-1:scrape")
    await queue.enqueue(kind="scrape", payload={})
    await queue.enqueue(kind="scrape", payload={})
