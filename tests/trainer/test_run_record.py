"""A training run's row: progress and heartbeat written while it runs, its outcome, and what a
job's next attempt does with the runs an earlier attempt left behind. On SQLite and
PostgreSQL, with the local store.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import select
from support import wait_until

from sleeve_common.jobs import JobQueue
from sleeve_common.model_signature import input_spec
from sleeve_common.models import Dataset, TrainingRun, TrainingRunStatus
from sleeve_common.registry import register_model_version
from sleeve_common.runtime import Runtime
from sleeve_common.training_progress import TrainingPhase, TrainingProgress, read_progress
from sleeve_trainer.run_record import close_interrupted_runs, open_run, registered_by

HEARTBEAT_S = 0.2


def snapshot(epoch: int) -> TrainingProgress:
    return TrainingProgress(
        phase=TrainingPhase.HEAD,
        step=5,
        steps=10,
        epoch=epoch,
        epochs=10,
        fraction=0.5 + epoch / 100,
        elapsed_s=10.0 * epoch,
        message=f"head epoch {epoch}/10",
        updated_at=datetime.now(UTC),
    )


async def the_run(runtime: Runtime, run_id: int) -> TrainingRun:
    async with runtime.db.session() as session:
        run = await session.get(TrainingRun, run_id)
    assert run is not None
    return run


async def a_job(runtime: Runtime, name: str = "d") -> tuple[int, int]:
    """A train job and a dataset for its runs."""
    async with runtime.db.session() as session:
        dataset = Dataset(name=name)
        session.add(dataset)
        await session.flush()
        dataset_id = dataset.id
    job_id = await JobQueue(runtime.db, lease_seconds=60).enqueue(kind="train", payload={})
    return job_id, dataset_id


async def test_a_running_run_writes_its_progress_and_heartbeat_then_its_outcome(
    runtime: Runtime,
) -> None:
    job_id, dataset_id = await a_job(runtime)
    record = await open_run(
        db=runtime.db, dataset_id=dataset_id, params={}, job_id=job_id, heartbeat_s=HEARTBEAT_S
    )
    opened = await the_run(runtime, record.run_id)
    assert opened.status == TrainingRunStatus.RUNNING and opened.heartbeat_at is not None
    recording = asyncio.create_task(record.keep_recording())
    try:
        record.offer(snapshot(3))

        async def written() -> bool:
            run = await the_run(runtime, record.run_id)
            progress = read_progress(run.progress, run_id=run.id)
            return progress is not None and progress.epoch == 3

        await wait_until(written, None, "the progress written", timeout_s=10)
        beat = (await the_run(runtime, record.run_id)).heartbeat_at
        assert beat is not None

        async def beats_while_nothing_changes() -> bool:
            later = (await the_run(runtime, record.run_id)).heartbeat_at
            return later is not None and later > beat

        await wait_until(beats_while_nothing_changes, None, "a later heartbeat", timeout_s=10)
    finally:
        recording.cancel()
    await record.finish(TrainingRunStatus.SUCCEEDED, progress=snapshot(4), metrics={"a": 1})

    run = await the_run(runtime, record.run_id)
    assert (run.status, run.metrics) == (TrainingRunStatus.SUCCEEDED, {"a": 1})
    assert run.finished_at is not None
    assert run.reported_status(heartbeat_s=HEARTBEAT_S) is TrainingRunStatus.SUCCEEDED
    progress = read_progress(run.progress, run_id=run.id)
    assert progress is not None and progress.epoch == 4


async def test_the_next_attempt_marks_the_runs_left_running_and_deletes_their_files(
    runtime: Runtime,
) -> None:
    job_id, dataset_id = await a_job(runtime)
    other_job, _ = await a_job(runtime, "other")
    killed, elsewhere = [
        await open_run(db=runtime.db, dataset_id=dataset_id, params={}, job_id=job, heartbeat_s=1)
        for job in (job_id, other_job)
    ]
    for run_id in (killed.run_id, elsewhere.run_id):
        await runtime.store.put(f"models/run-{run_id}/model.onnx", b"half a model")

    closed = await close_interrupted_runs(db=runtime.db, store=runtime.store, job_id=job_id)

    assert closed == [killed.run_id]
    run = await the_run(runtime, killed.run_id)
    assert run.status == TrainingRunStatus.INTERRUPTED and run.finished_at is not None
    assert run.error == "interrupted: its worker stopped or died, and the job ran again"
    assert (await the_run(runtime, elsewhere.run_id)).status == TrainingRunStatus.RUNNING
    assert await runtime.store.list("models/") == [f"models/run-{elsewhere.run_id}/model.onnx"]
    assert await registered_by(db=runtime.db, job_id=job_id) is None


async def test_a_run_that_registered_before_its_process_died_is_the_jobs_answer(
    runtime: Runtime,
) -> None:
    job_id, dataset_id = await a_job(runtime)
    record = await open_run(
        db=runtime.db, dataset_id=dataset_id, params={}, job_id=job_id, heartbeat_s=1
    )
    key = f"models/run-{record.run_id}/model.onnx"
    await runtime.store.put(key, b"a model")
    await register_model_version(
        db=runtime.db,
        training_run_id=record.run_id,
        labels=["pop", "rock"],
        input_spec=input_spec(),
        metrics={},
        onnx_key=key,
        onnx_sha256="0" * 64,
        onnx_bytes=7,
    )  # ... and the process died before it could mark its run

    assert await close_interrupted_runs(db=runtime.db, store=runtime.store, job_id=job_id) == []
    assert await registered_by(db=runtime.db, job_id=job_id) == (record.run_id, "v1")
    assert (await the_run(runtime, record.run_id)).status == TrainingRunStatus.SUCCEEDED
    assert await runtime.store.list("models/") == [key]
    async with runtime.db.session() as session:
        assert len((await session.execute(select(TrainingRun))).all()) == 1
