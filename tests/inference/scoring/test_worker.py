"""The ``score`` job kind: a queued scoring job run by the worker loop, and resumed by it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sleeve_common.jobs import JobQueue
from sleeve_common.runtime import Runtime
from sleeve_common.worker import run_worker
from sleeve_inference.scoring.engine import count_rows
from sleeve_inference.scoring.jobs import create_scoring_job, score_handler

from ..harness import Registered


async def _work_one(runtime: Runtime, payload: dict[str, object]) -> int:
    queue = JobQueue(runtime.db, lease_seconds=30)
    job_id = await queue.enqueue(kind="score", payload=payload)
    ran = await run_worker(
        queue,
        {"score": score_handler(runtime)},
        owner="test-worker",
        poll_seconds=0.1,
        stop=asyncio.Event(),
        max_jobs=1,
    )
    assert ran == 1
    return job_id


async def test_a_queued_scoring_job_is_run_and_exported(
    scoring_runtime: Runtime, colour_model: Registered, covers: Path, tmp_path: Path
) -> None:
    output = tmp_path / "scores.jsonl"
    scoring = await create_scoring_job(runtime=scoring_runtime, input=str(covers), output=output)

    job_id = await _work_one(scoring_runtime, {"scoring_job_id": scoring.id})

    job = await JobQueue(scoring_runtime.db, lease_seconds=30).get(job_id)
    assert job.status == "succeeded", job.error
    assert job.result is not None and job.result["scoring_job_id"] == scoring.id
    assert job.progress == 1.0
    done, failed = await count_rows(db=scoring_runtime.db, scoring_job_id=scoring.id)
    assert done + failed == scoring.total
    lines = output.read_text().splitlines()
    assert len(lines) == scoring.total
    assert {json.loads(line)["item"] for line in lines} >= {"red.png"}


async def test_a_second_claim_adds_nothing(
    scoring_runtime: Runtime, colour_model: Registered, covers: Path
) -> None:
    scoring = await create_scoring_job(runtime=scoring_runtime, input=str(covers))
    await _work_one(scoring_runtime, {"scoring_job_id": scoring.id})
    before = await count_rows(db=scoring_runtime.db, scoring_job_id=scoring.id)

    await _work_one(scoring_runtime, {"scoring_job_id": scoring.id})

    assert await count_rows(db=scoring_runtime.db, scoring_job_id=scoring.id) == before


async def test_an_unknown_scoring_job_fails_the_job_clearly(scoring_runtime: Runtime) -> None:
    job_id = await _work_one(scoring_runtime, {"scoring_job_id": 424242})

    job = await JobQueue(scoring_runtime.db, lease_seconds=30).get(job_id)
    assert job.status == "failed"
    assert "scoring job 424242 does not exist" in (job.error or "")
