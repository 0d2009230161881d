"""A ``sleeve worker train`` killed with SIGKILL, twice, and retried by the job queue: each
attempt reuses the trunk activations the ones before cached (no cover is computed twice),
the killed runs end ``interrupted`` (not ``running`` forever), what a killed run stored
without registering is deleted, and the job registers exactly one model version.

Real worker subprocesses of the real CLI, on 18 real covers, with the environment a user has
(no ``TF_CPP_MIN_LOG_LEVEL``: their output has no TensorFlow noise either). The first worker
is killed mid-way through the trunk activations (some covers cached, the others not yet), the
second in the fine-tune phase (as its run's progress in the database says), the third
finishes once the second's lease has run out.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy import select
from support import BASE_WEIGHTS, child_env, sleeve_process, wait_until

from sleeve_common.jobs import JobQueue
from sleeve_common.models import ModelVersion, TrainingRun, TrainingRunStatus
from sleeve_common.payloads import ScrapeRequest, TrainRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime
from sleeve_common.training_progress import TrainingPhase, read_progress
from sleeve_trainer.datasets import SplitSpec, build_dataset, dataset_members

from .covers import tiny_library
from .test_clean_output import NOISE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

COVERS = 18
KILL_AFTER_COVERS = 4  # cached by the first worker when it is killed
LEASE_S = 4
HEARTBEAT_S = 0.5


async def runs(runtime: Runtime) -> list[TrainingRun]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(TrainingRun).order_by(TrainingRun.id))).scalars())


async def versions(runtime: Runtime) -> list[ModelVersion]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(ModelVersion))).scalars())


def cached_files(runtime: Runtime) -> dict[Path, int]:
    """Each cover's cached trunk activations and when it was written."""
    root = runtime.settings.data_dir / "cache" / "activations"
    return {path: path.stat().st_mtime_ns for path in root.rglob("*.npy")}


async def stale(runtime: Runtime, run_id: int) -> bool:
    [run] = [r for r in await runs(runtime) if r.id == run_id]
    return run.reported_status(heartbeat_s=HEARTBEAT_S) is TrainingRunStatus.INTERRUPTED


async def test_a_killed_trainer_resumes_from_its_cache_and_registers_one_version(
    runtime: Runtime, tmp_path: Path
) -> None:
    from sleeve_scraper.scrape import run_scrape

    tiny_library(tmp_path / "covers")
    scrape = ScrapeRequest(source="folder", path=str(tmp_path / "covers"))
    await run_scrape(runtime, scrape, on_progress=silent_progress)
    spec = SplitSpec(min_per_genre=4, val_fraction=0.2, test_fraction=0.2)
    await build_dataset(db=runtime.db, name="tiny", spec=spec)
    _, members = await dataset_members(db=runtime.db, name="tiny")
    assert len(members) == COVERS
    train_covers = sum(m.split == "train" for m in members)  # 12 views each, 1 for the others
    queue = JobQueue(runtime.db, lease_seconds=LEASE_S)
    request = TrainRequest(dataset="tiny", epochs=2, fine_tune_epochs=2, batch_size=8)
    job_id = await queue.enqueue(kind="train", payload=request.model_dump(mode="json"))
    env = child_env(
        runtime.settings,
        SLEEVE_BASE_WEIGHTS=str(BASE_WEIGHTS),
        SLEEVE_JOB_LEASE_SECONDS=str(LEASE_S),
        SLEEVE_WORKER_POLL_SECONDS="0.2",
        SLEEVE_TRAIN_HEARTBEAT_S=str(HEARTBEAT_S),
        SLEEVE_LOG_LEVEL="INFO",
    )
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2, 3)]

    # 1. Killed while computing the trunk activations: some covers are cached.
    async def some_covers_cached() -> bool:
        return len(cached_files(runtime)) >= KILL_AFTER_COVERS

    with logs[0].open("w") as log:
        async with sleeve_process("worker", "train", env=env, stderr=log) as first:
            await wait_until(some_covers_cached, first, f"{KILL_AFTER_COVERS} cached covers")
            first.send_signal(signal.SIGKILL)
            await first.wait()
    cached_by_first = cached_files(runtime)
    assert KILL_AFTER_COVERS <= len(cached_by_first) < COVERS, "the kill did not land mid-way"
    [killed] = await runs(runtime)
    assert killed.status == TrainingRunStatus.RUNNING  # nothing could mark it
    await wait_until(lambda: stale(runtime, killed.id), None, "a stale heartbeat", timeout_s=10)
    assert (await queue.get(job_id)).status == "running"  # until its lease runs out

    # 2. Killed in the fine-tune phase, as its run's progress says: every cover cached.
    async def fine_tuning() -> bool:
        latest = (await runs(runtime))[-1]
        progress = read_progress(latest.progress, run_id=latest.id)
        return (
            latest.id != killed.id
            and progress is not None
            and (progress.phase is TrainingPhase.FINE_TUNE)
        )

    with logs[1].open("w") as log:
        async with sleeve_process("worker", "train", env=env, stderr=log) as second:
            await wait_until(fine_tuning, second, "the fine-tune phase")
            second.send_signal(signal.SIGKILL)
            await second.wait()
    cached_by_second = cached_files(runtime)
    assert len(cached_by_second) == COVERS
    assert {p: cached_by_second[p] for p in cached_by_first} == cached_by_first  # not redone
    first_run, second_run = await runs(runtime)
    assert (first_run.status, first_run.error) == (
        TrainingRunStatus.INTERRUPTED,
        "interrupted: its worker stopped or died, and the job ran again",
    )
    assert second_run.status == TrainingRunStatus.RUNNING
    progress = read_progress(second_run.progress, run_id=second_run.id)
    assert progress is not None
    assert (progress.covers_cached, progress.covers_computed) == (
        len(cached_by_first),
        COVERS - len(cached_by_first),
    )
    assert await versions(runtime) == []
    # As if it had been killed while storing its files, before registering them.
    leftover = f"models/run-{second_run.id}/model.onnx"
    await runtime.store.put(leftover, b"half a model")
    await wait_until(lambda: stale(runtime, second_run.id), None, "a stale heartbeat", 10)

    # 3. The job's last attempt finishes, reading every cover from the cache.
    async def succeeded() -> bool:
        return (await queue.get(job_id)).status == "succeeded"

    with logs[2].open("w") as log:
        async with sleeve_process("worker", "train", env=env, stderr=log) as third:
            await wait_until(succeeded, third, "the job to succeed", timeout_s=240)

    assert cached_files(runtime) == cached_by_second  # no cover computed again
    job = await queue.get(job_id)
    *killed_runs, last_run = await runs(runtime)
    assert [r.status for r in killed_runs] == [TrainingRunStatus.INTERRUPTED] * 2
    assert last_run.status == TrainingRunStatus.SUCCEEDED
    assert (job.attempts, job.result) == (
        3,
        {"training_run_id": last_run.id, "model_version": "v1"},
    )
    [version] = await versions(runtime)
    assert (version.version, version.training_run_id) == ("v1", last_run.id)
    done = read_progress(last_run.progress, run_id=last_run.id)
    assert done is not None
    assert (done.fraction, done.covers_cached, done.covers_computed) == (1.0, COVERS, 0)
    stored = await runtime.store.list("models/")
    assert leftover not in stored
    assert stored and all(key.startswith(f"models/run-{last_run.id}/") for key in stored)

    said = [log.read_text() for log in logs]
    for noise in NOISE:
        assert not any(noise in text for text in said), f"{noise!r} in a worker's output"
    assert f"trunk activations: {train_covers} cached, 0 computed" in said[2]
    assert "training run 2: deleted 1 unregistered file(s)" in said[2]
