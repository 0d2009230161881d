"""A scrape killed with SIGKILL mid-run and continued: by ``sleeve scrape --resume``, and by
a second ``sleeve worker scrape`` once the first one's job lease has run out.

Both are real subprocesses of the real CLI, against the fake APIs on loopback; covers are
paced at ``SLEEVE_DOWNLOAD_RATE`` so that the kill lands mid-run. At the kill and at the end,
the run's counters must equal what its rows say, its own covers must never come back as
duplicates, and nothing stored is downloaded twice.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support import child_env, sleeve_process, wait_until

from sleeve_common.jobs import JobQueue
from sleeve_common.models import Album, AlbumLabel, ScrapeRun, ScrapeRunStatus
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.runtime import Runtime

from .fakes import FakeCdn, FakeItunes, unique_covers

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PER_GENRE = 20
KILL_AFTER = 12  # items stored when the first process is killed
HEARTBEAT_S = 0.3
LEASE_S = 2
# Slow enough that the kill lands mid-run (about 3 s for the run), fast enough for a test.
PACE = {
    "SLEEVE_DOWNLOAD_RATE": "15",
    "SLEEVE_SCRAPE_DOWNLOAD_CONCURRENCY": "4",
    "SLEEVE_SCRAPE_HEARTBEAT_S": str(HEARTBEAT_S),
}


async def the_run(runtime: Runtime) -> ScrapeRun | None:
    async with runtime.db.session() as session:
        runs = list((await session.execute(select(ScrapeRun))).scalars())
    assert len(runs) <= 1, "a second run was started"
    return runs[0] if runs else None


async def stored(runtime: Runtime, run_id: int) -> tuple[int, int, int]:
    """Accepted and rejected albums of the run, and the labels of all albums."""
    async with runtime.db.session() as session:
        by_status = dict(
            (
                await session.execute(
                    select(Album.status, func.count())
                    .where(Album.scrape_run_id == run_id)
                    .group_by(Album.status)
                )
            ).all()
        )
        labels = await session.scalar(select(func.count(AlbumLabel.id)))
    return by_status.get("accepted", 0), by_status.get("rejected", 0), int(labels or 0)


async def assert_counters_match_rows(runtime: Runtime, run: ScrapeRun) -> None:
    """Added and rejected are the run's rows; every item it saw is counted once."""
    accepted, rejected, _ = await stored(runtime, run.id)
    assert (run.added, run.rejected) == (accepted, rejected)
    assert run.seen == run.added + run.duplicates + run.rejected
    assert sum(run.seen_by_genre.values()) == run.seen


async def killed_mid_run(
    runtime: Runtime, child: asyncio.subprocess.Process
) -> tuple[ScrapeRun, list[str]]:
    """SIGKILL ``child`` once the run stored ``KILL_AFTER`` items; the run as it left it, and
    the cover URLs of the albums it stored."""

    async def far_enough() -> bool:
        run = await the_run(runtime)
        return run is not None and run.seen >= KILL_AFTER

    await wait_until(far_enough, child, f"{KILL_AFTER} items")
    child.send_signal(signal.SIGKILL)
    await child.wait()
    assert child.returncode == -signal.SIGKILL
    run = await the_run(runtime)
    assert run is not None
    assert run.status == ScrapeRunStatus.RUNNING  # nothing could mark it
    assert KILL_AFTER <= run.seen < 2 * PER_GENRE, "the kill did not land mid-run"
    await assert_counters_match_rows(runtime, run)

    async def reads_interrupted() -> bool:
        run = await the_run(runtime)
        assert run is not None
        return run.reported_status(heartbeat_s=HEARTBEAT_S) is ScrapeRunStatus.INTERRUPTED

    await wait_until(reads_interrupted, None, "stale heartbeat", timeout_s=10)
    async with runtime.db.session() as session:
        urls = (await session.execute(select(Album.cover_url))).scalars()
        return run, [url for url in urls if url]


def downloaded_once(cdn: FakeCdn, urls: list[str]) -> bool:
    """Whether each of these covers was fetched exactly once (none again by the resume)."""
    fetched = Counter(cdn.paths())
    return all(fetched[url.removeprefix(cdn.base_url)] == 1 for url in urls)


async def test_a_killed_scrape_is_resumed_by_the_cli_with_exact_counts(
    runtime: Runtime, cdn: FakeCdn, tmp_path: Path
) -> None:
    covers = unique_covers(2 * PER_GENRE)
    for n, cover in enumerate(covers):
        cdn.add(f"k{n}", cover)
    rows = {"jazz": [f"k{n}" for n in range(PER_GENRE)], "metal": [], "rock": []}
    rows["metal"] = [f"k{n}" for n in range(PER_GENRE, 2 * PER_GENRE)]
    # True duplicates: the same bytes under another URL, in the same genre and in another.
    for n, genre in ((0, "jazz"), (1, "jazz"), (2, "metal"), (3, "metal")):
        cdn.files[f"d{n}"] = cdn.files[f"k{n}"]
        rows[genre].append(f"d{n}")
    cdn.files["broken"] = b"tracklist: 1. intro 2. outro"
    rows["rock"] = ["broken", "missing"]  # the fake answers 404 for "missing"
    manifest = tmp_path / "covers.csv"
    lines = ["path_or_url,genre"]
    lines += [
        f"{cdn.file_url(token)},{genre}" for genre, tokens in rows.items() for token in tokens
    ]
    manifest.write_text("\n".join(lines) + "\n")
    total = len(lines) - 1
    env = child_env(runtime.settings, **PACE)
    scrape = ("scrape", "--source", "folder", "--path", str(manifest))

    async with sleeve_process(*scrape, env=env) as first:
        killed, stored_before = await killed_mid_run(runtime, first)
    assert killed.cursor == {"rows_done": killed.seen}
    assert (await stored(runtime, killed.id))[2] == killed.seen  # each row gives one label

    async with sleeve_process(
        *scrape, "--resume", str(killed.id), env=env, stdout=asyncio.subprocess.PIPE
    ) as second:
        out, _ = await asyncio.wait_for(second.communicate(), timeout=90)
    assert second.returncode == 0
    assert out.decode() == (
        f"scrape run {killed.id}: {total} seen: {len(covers)} added, 4 duplicates, 2 rejected\n"
    )

    run = await the_run(runtime)
    assert run is not None
    assert run.id == killed.id
    assert (run.status, run.error, run.attempt) == (ScrapeRunStatus.SUCCEEDED, None, 2)
    assert (run.seen, run.added, run.duplicates, run.rejected) == (total, len(covers), 4, 2)
    assert run.fetched == total - 1  # all but the 404
    assert run.rejected_by_reason == {
        "not a recognised image format": 1,
        "cover download failed: HTTP 404": 1,
    }
    assert run.seen_by_genre == {"jazz": PER_GENRE + 2, "metal": PER_GENRE + 2, "rock": 2}
    assert run.cursor == {"rows_done": total}
    await assert_counters_match_rows(runtime, run)
    assert await stored(runtime, run.id) == (len(covers), 2, total)  # albums == distinct covers
    assert len(stored_before) == killed.added + killed.rejected
    assert downloaded_once(cdn, stored_before)


async def test_a_killed_worker_is_replaced_through_the_lease_on_the_same_run(
    runtime: Runtime, itunes: FakeItunes, cdn: FakeCdn
) -> None:
    itunes.feeds.clear()
    jazz = [itunes.album("11", f"Blue Session {n}") for n in range(PER_GENRE)]
    metal = [itunes.album("1153", f"Iron Hymns {n}") for n in range(PER_GENRE)]
    itunes.feeds.update({"11": jazz, "1153": metal})
    # Three covers come again under other albums: one in its own genre, two in the other.
    for original, copy in ((jazz[0], jazz[5]), (jazz[1], metal[3]), (metal[0], jazz[15])):
        cdn.files[copy.token] = cdn.files[original.token]
    request = ScrapeRequest(source="itunes", genres=("jazz", "metal"), per_genre=PER_GENRE)
    queue = JobQueue(runtime.db, lease_seconds=LEASE_S)
    job_id = await queue.enqueue(kind="scrape", payload=request.model_dump(mode="json"))
    env = child_env(
        runtime.settings,
        SLEEVE_ITUNES_BASE_URL=itunes.base_url,
        SLEEVE_ITUNES_RATE="1000",
        SLEEVE_JOB_LEASE_SECONDS=str(LEASE_S),
        SLEEVE_WORKER_POLL_SECONDS="0.2",
        **PACE,
    )

    async with sleeve_process("worker", "scrape", env=env) as first:
        killed, stored_before = await killed_mid_run(runtime, first)
    assert (await queue.get(job_id)).status == "running"  # until its lease runs out

    async def succeeded() -> bool:
        return (await queue.get(job_id)).status == "succeeded"

    async with sleeve_process("worker", "scrape", env=env) as second:
        await wait_until(succeeded, second, "finished job")

    total, copies = 2 * PER_GENRE, 3
    run = await the_run(runtime)
    assert run is not None
    assert (run.id, run.job_id, run.attempt) == (killed.id, job_id, 2)
    assert (run.status, run.seen, run.added, run.duplicates, run.rejected) == (
        ScrapeRunStatus.SUCCEEDED,
        total,
        total - copies,
        copies,
        0,
    )
    assert run.seen_by_genre == {"jazz": PER_GENRE, "metal": PER_GENRE}
    await assert_counters_match_rows(runtime, run)
    # One label per item, but jazz[5]'s: the same genre from the same feed is on jazz[0].
    assert await stored(runtime, run.id) == (total - copies, 0, total - 1)
    job = await queue.get(job_id)
    assert job.attempts == 2
    assert job.result == {
        "scrape_run_id": run.id,
        "summary": f"{total} seen: {total - copies} added, {copies} duplicates, 0 rejected",
    }
    assert job.progress_message is not None
    done = f"{PER_GENRE}/{PER_GENRE}"
    assert job.progress_message.endswith(f"[jazz {done}, metal {done}]")
    assert len(stored_before) == killed.added
    assert downloaded_once(cdn, stored_before)
