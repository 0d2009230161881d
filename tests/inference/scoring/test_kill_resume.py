"""A ``sleeve worker score`` process killed with SIGKILL mid-job is replaced through the job
lease: a second worker takes the job up once the lease has run out and finishes it, with
exact counts, without rescoring or losing an item.

Both workers are real subprocesses of the real CLI; the job is queued as the API queues it.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

from sqlalchemy import func, select
from support import child_env, sleeve_process, wait_until

from sleeve_common.jobs import JobQueue
from sleeve_common.models import Prediction
from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_inference.scoring.jobs import queue_scoring_job

from ..harness import Registered
from .conftest import real_covers
from .test_engine import job_row, predictions

COVERS = 300
CHUNK = 10
LEASE_S = 2


async def _row_count(runtime: Runtime, job_id: int) -> int:
    async with runtime.db.session() as session:
        count = await session.scalar(
            select(func.count(Prediction.id)).where(Prediction.scoring_job_id == job_id)
        )
    return int(count or 0)


def _worker_env(settings: Settings) -> dict[str, str]:
    return child_env(
        settings,
        SLEEVE_CPU_THREADS="1",
        SLEEVE_SCORING_CHUNK_SIZE=str(CHUNK),
        SLEEVE_JOB_LEASE_SECONDS=str(LEASE_S),
        SLEEVE_WORKER_POLL_SECONDS="0.2",
    )


async def test_a_killed_worker_is_replaced_through_the_lease_with_exact_counts(
    scoring_runtime: Runtime, scoring_settings: Settings, colour_model: Registered, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for index, cover in enumerate(real_covers(COVERS)):
        shutil.copyfile(cover, folder / f"{index:03d}.jpg")
    job = await queue_scoring_job(runtime=scoring_runtime, input=str(folder))
    assert job.job_id is not None
    queue_job_id = job.job_id

    async def some_chunks_written() -> bool:
        return await _row_count(scoring_runtime, job.id) >= 3 * CHUNK

    async with sleeve_process("worker", "score", env=_worker_env(scoring_settings)) as first:
        await wait_until(some_chunks_written, first, "rows")
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert first.returncode == -signal.SIGKILL

    before = await predictions(scoring_runtime.db, job.id)
    assert 3 * CHUNK <= len(before) < COVERS
    assert len(before) % CHUNK == 0  # whole chunks: each is one transaction
    assert (await job_row(scoring_runtime.db, job.id)).status == "running"

    queue = JobQueue(scoring_runtime.db, lease_seconds=LEASE_S)

    async def succeeded() -> bool:  # the queued job, which ends after the scoring job
        return (await queue.get(queue_job_id)).status == "succeeded"

    async with sleeve_process("worker", "score", env=_worker_env(scoring_settings)) as second:
        await wait_until(succeeded, second, "finished job")

    after = await predictions(scoring_runtime.db, job.id)
    assert len(after) == await _row_count(scoring_runtime, job.id) == COVERS
    assert all(after[item].id == row.id for item, row in before.items())  # none rescored
    finished = await job_row(scoring_runtime.db, job.id)
    assert (finished.status, finished.done, finished.failed, finished.duplicates) == (
        "succeeded",
        COVERS,
        0,
        0,
    )
    queued = await queue.get(queue_job_id)
    assert (queued.status, queued.attempts, queued.progress) == ("succeeded", 2, 1.0)
