"""A scoring process killed with SIGKILL mid-job: the next run finishes it with exact counts.

The first run is a real subprocess (slowed by a progress sink that pauses after each chunk,
so there is a middle to kill it in); the test kills it once some chunks are written, then
runs the job again in-process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from sleeve_common.models import Prediction
from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_inference.scoring.jobs import create_scoring_job, run_scoring

from ..harness import Registered
from .conftest import real_covers
from .test_engine import job_row, predictions

COVERS = 120
CHUNK = 10

_CHILD = """
import asyncio, sys
from sleeve_common.runtime import open_runtime
from sleeve_common.settings import load_settings
from sleeve_inference.scoring.jobs import run_scoring

async def pause(fraction, message):
    await asyncio.sleep(0.3)

async def main():
    async with open_runtime(load_settings()) as runtime:
        await run_scoring(runtime, int(sys.argv[1]), pause, chunk_size=int(sys.argv[2]))

asyncio.run(main())
"""


async def _row_count(runtime: Runtime, job_id: int) -> int:
    async with runtime.db.session() as session:
        count = await session.scalar(
            select(func.count(Prediction.id)).where(Prediction.scoring_job_id == job_id)
        )
    return int(count or 0)


async def test_a_killed_run_is_resumed_with_exact_counts(
    scoring_runtime: Runtime, scoring_settings: Settings, colour_model: Registered, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for index, cover in enumerate(real_covers(COVERS)):
        shutil.copyfile(cover, folder / f"{index:03d}.jpg")
    job = await create_scoring_job(runtime=scoring_runtime, input=str(folder))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEVE_")}
    env |= {
        "SLEEVE_DATABASE_URL": scoring_settings.database_url,
        "SLEEVE_STORE_URL": scoring_settings.store_url,
        "SLEEVE_DATA_DIR": str(scoring_settings.data_dir),
        "SLEEVE_CPU_THREADS": "2",
        "SLEEVE_LOG_LEVEL": "WARNING",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(job.id), str(CHUNK), env=env
    )
    try:
        deadline = time.monotonic() + 60
        while await _row_count(scoring_runtime, job.id) < 3 * CHUNK:
            assert child.returncode is None, "the scoring process ended before it was killed"
            assert time.monotonic() < deadline, "no rows were written within 60 s"
            await asyncio.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    before = await predictions(scoring_runtime.db, job.id)
    assert 3 * CHUNK <= len(before) < COVERS
    assert len(before) % CHUNK == 0  # whole chunks: each is one transaction
    assert (await job_row(scoring_runtime.db, job.id)).status == "running"

    summary = await run_scoring(scoring_runtime, job.id, chunk_size=CHUNK)

    after = await predictions(scoring_runtime.db, job.id)
    assert len(after) == await _row_count(scoring_runtime, job.id) == COVERS
    assert summary.written == COVERS - len(before)
    assert all(after[item].id == row.id for item, row in before.items())
    finished = await job_row(scoring_runtime.db, job.id)
    assert (finished.status, finished.done, finished.failed, finished.duplicates) == (
        "succeeded",
        COVERS,
        0,
        0,
    )
