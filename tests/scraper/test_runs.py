"""Scrape-run records: who may write a run, which runs may be resumed, how a stopped run
reads, a retried job's run, and the keys rejections are counted by.

The subprocess kill-and-resume tests are in ``test_kill_resume.py``; these run in-process on
SQLite and on PostgreSQL (through ``runtime``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from sleeve_common.jobs import JobQueue
from sleeve_common.models import ScrapeRun, ScrapeRunStatus
from sleeve_common.progress import Part, silent_progress
from sleeve_common.runtime import Runtime
from sleeve_common.worker import JobContext
from sleeve_scraper.exceptions import RunStateError
from sleeve_scraper.ingest import Ingester, Outcome, Verdict
from sleeve_scraper.jobs import scrape_handler
from sleeve_scraper.runs import open_run
from sleeve_scraper.scrape import run_scrape
from sleeve_scraper.sources.base import Candidate, Found, Label

from .test_folder_import import Interrupted, all_albums, all_runs, build_library, folder_request


async def failed_after(runtime: Runtime, root: Path, items: int) -> ScrapeRun:
    """A folder scrape that failed after storing ``items`` items."""
    calls = 0

    async def crash(fraction: float, message: str, **_: object) -> None:
        nonlocal calls
        calls += 1
        if calls == items:
            raise Interrupted("worker lost")

    with pytest.raises(Interrupted):
        await run_scrape(runtime, folder_request(root), on_progress=crash)
    [run] = await all_runs(runtime.db)
    return run


def cover_item(root: Path) -> Found:
    path = next(root.rglob("*.jpg"))
    candidate = Candidate(
        source="folder",
        source_id=f"{path}-elsewhere",
        labels=(Label("rock", "Rock"),),
        provenance="folder:elsewhere",
    )
    return Found(candidate=candidate, cursor={"files_done": 99}, data=b"", genre="rock")


async def test_a_replaced_process_can_write_nothing_more(runtime: Runtime, tmp_path: Path) -> None:
    root = build_library(tmp_path / "covers", per_genre=2)
    stopped = await failed_after(runtime, root, 2)
    job_id = await JobQueue(runtime.db, lease_seconds=30).enqueue(kind="scrape", payload={})
    reopen = {"db": runtime.db, "source": "folder", "params": {}, "heartbeat_s": 10}
    # The job's first worker reopens the run; its lease runs out and the job's next attempt
    # takes the run over while the first worker still lives (hung, not dead).
    replaced = await open_run(resume=stopped.id, job_id=job_id, **reopen)
    current = await open_run(resume=stopped.id, job_id=job_id, **reopen)
    ingester = Ingester(
        db=runtime.db,
        store=runtime.store,
        run_id=stopped.id,
        ledger=replaced,
        max_bytes=1 << 20,
        max_pixels=1 << 20,
    )

    with pytest.raises(RunStateError, match=f"scrape run {stopped.id} was reopened"):
        await ingester.ingest(cover_item(root))

    [run] = await all_runs(runtime.db)
    assert (run.attempt, run.seen, run.rejected, run.cursor) == (3, 2, 0, {"files_done": 2})
    assert len(await all_albums(runtime.db)) == 2  # the rejected row was rolled back
    assert current.counters.seen == 2


async def test_a_run_that_still_beats_is_only_taken_over_by_its_own_job(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = build_library(tmp_path / "covers", per_genre=1)
    stopped = await failed_after(runtime, root, 1)
    queue = JobQueue(runtime.db, lease_seconds=30)
    job_id = await queue.enqueue(kind="scrape", payload={})
    async with runtime.db.session() as session:  # as a worker that has just died leaves it
        await session.execute(
            update(ScrapeRun)
            .where(ScrapeRun.id == stopped.id)
            .values(status="running", job_id=job_id)
        )
    reopen = {"db": runtime.db, "source": "folder", "params": {}, "resume": stopped.id}

    with pytest.raises(RunStateError, match=f"scrape run {stopped.id} is still running"):
        await open_run(job_id=None, heartbeat_s=60, **reopen)
    with pytest.raises(RunStateError, match="is still running"):
        await open_run(job_id=job_id + 1, heartbeat_s=60, **reopen)
    taken = await open_run(job_id=job_id, heartbeat_s=60, **reopen)  # its lease ran out
    assert taken.run_id == stopped.id
    # A run whose heartbeat went stale can be resumed by anyone.
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    async with runtime.db.session() as session:
        await session.execute(update(ScrapeRun).values(heartbeat_at=long_ago))
    [run] = await all_runs(runtime.db)
    assert run.reported_status(heartbeat_s=60) is ScrapeRunStatus.INTERRUPTED
    await open_run(job_id=None, heartbeat_s=60, **reopen)


async def test_a_cancelled_scrape_is_interrupted_and_resumes(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = build_library(tmp_path / "covers")
    third = asyncio.Event()
    seen: list[list[Part]] = []

    async def note(fraction: float, message: str, *, parts: list[Part]) -> None:
        seen.append(parts)
        if len(seen) == 3:
            third.set()
            await asyncio.Event().wait()  # stalls here until cancelled

    scrape = asyncio.create_task(run_scrape(runtime, folder_request(root), on_progress=note))
    await third.wait()
    scrape.cancel()
    with pytest.raises(asyncio.CancelledError):
        await scrape

    [stopped] = await all_runs(runtime.db)
    assert (stopped.status, stopped.error, stopped.seen) == ("interrupted", None, 3)
    assert seen[-1] == [Part("country", 3, 4), Part("hiphop", 0, 4), Part("rock", 0, 4)]
    run_id, counters = await run_scrape(
        runtime, folder_request(root, resume=stopped.id), on_progress=silent_progress
    )
    assert (run_id, counters.seen, counters.added, counters.duplicates) == (stopped.id, 12, 12, 0)
    assert counters.seen_by_genre == {"country": 4, "hiphop": 4, "rock": 4}


async def test_a_job_run_again_continues_its_run_or_returns_its_result(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = build_library(tmp_path / "covers", per_genre=2)
    queue = JobQueue(runtime.db, lease_seconds=30)
    await queue.enqueue(kind="scrape", payload=folder_request(root).model_dump(mode="json"))
    job = await queue.claim(kinds=["scrape"], owner="test")
    assert job is not None
    handle = scrape_handler(runtime)

    first = await handle(JobContext(job=job, queue=queue))
    again = await handle(JobContext(job=job, queue=queue))  # as after a crash before `succeed`

    summary = "6 seen: 6 added, 0 duplicates, 0 rejected"
    assert first == again == {"scrape_run_id": 1, "summary": summary}
    [run] = await all_runs(runtime.db)
    assert (run.job_id, run.attempt, run.seen) == (job.id, 1, 6)
    assert len(await all_albums(runtime.db)) == 6


@pytest.mark.parametrize(
    ("reason", "key"),
    [
        ("corrupt image: image file is truncated (3 bytes not processed)", "corrupt image"),
        ("image too large: 400x400 pixels (limit 100000)", "image too large"),
        ("not a recognised image format", "not a recognised image format"),
        ("cover download failed: HTTP 404", "cover download failed: HTTP 404"),
        (
            "cover download failed: HTTP 503, asked to wait 3600 s",
            "cover download failed: HTTP 503",
        ),
        ("cover download failed: connection failed (ConnectError)", "cover download failed"),
        ("several genres: jazz, rock", "several genres"),
    ],
)
def test_rejections_are_counted_by_the_stable_head_of_their_reason(reason: str, key: str) -> None:
    assert Verdict(Outcome.REJECTED, reason).reason_key == key
