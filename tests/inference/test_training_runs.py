"""``GET /v1/training-runs/{id}``: the job with its training runs, each with its progress
(phase, epoch, loss, accuracy, ETA counted down since written) and a status that says
``interrupted`` once a run's heartbeat is stale.

The rows are written as a trainer writes them (``tests/trainer/test_kill_resume.py`` has a
real one); on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from sleeve_common.db import Database
from sleeve_common.jobs import JobQueue
from sleeve_common.models import Dataset, TrainingRun, TrainingRunStatus, utcnow
from sleeve_common.payloads import TrainRequest
from sleeve_common.store import ObjectStore
from sleeve_common.training_progress import TrainingPhase, TrainingProgress

HEAD_EPOCH = {
    "phase": "head",
    "step": 5,
    "steps": 10,
    "epoch": 4,
    "epochs": 10,
    "loss": 1.183,
    "accuracy": 0.52,
    "val_loss": 1.21,
    "val_accuracy": 0.383,
    "covers": None,
    "covers_total": None,
    "covers_cached": 4000,
    "covers_computed": 444,
    "fraction": 0.62,
    "elapsed_s": 74.2,
    "eta_s": 40.0,
    "message": "head epoch 4/10: loss 1.183, accuracy 0.520, val accuracy 0.383",
}


async def a_train_job(db: Database) -> tuple[int, int]:
    """A queued train job and the id of its dataset."""
    async with db.session() as session:
        dataset = Dataset(name="discogs5")
        session.add(dataset)
        await session.flush()
        dataset_id = dataset.id
    job_id = await JobQueue(db, lease_seconds=60).enqueue(
        kind="train", payload=TrainRequest(dataset="discogs5").model_dump(mode="json")
    )
    return job_id, dataset_id


async def add_run(db: Database, **values: object) -> int:
    async with db.session() as session:
        run = TrainingRun(**values)
        session.add(run)
        await session.flush()
        return run.id


async def test_a_running_run_shows_its_epoch_figures_and_time_left(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    db = registry[0]
    job_id, dataset_id = await a_train_job(db)
    now = utcnow()
    killed = await add_run(
        db,
        dataset_id=dataset_id,
        job_id=job_id,
        status=TrainingRunStatus.INTERRUPTED,
        error="interrupted: its worker stopped or died, and the job ran again",
        started_at=now - timedelta(minutes=5),
        finished_at=now - timedelta(minutes=1),
        progress={**HEAD_EPOCH, "updated_at": (now - timedelta(minutes=2)).isoformat()},
    )
    written = now - timedelta(seconds=10)
    running = await add_run(
        db,
        dataset_id=dataset_id,
        job_id=job_id,
        status=TrainingRunStatus.RUNNING,
        started_at=now - timedelta(seconds=80),
        heartbeat_at=written,
        progress={**HEAD_EPOCH, "updated_at": written.isoformat()},
    )

    shown = await api.get(f"/v1/training-runs/{job_id}")

    assert shown.status_code == 200, shown.text
    body = shown.json()
    run = body["run"]
    assert (run["id"], run["status"], run["error"], run["finished_at"]) == (
        running,
        "running",
        None,
        None,
    )
    progress = TrainingProgress.model_validate(run["progress"])
    assert progress.phase is TrainingPhase.HEAD
    assert (progress.epoch, progress.epochs) == (4, 10)
    assert (progress.loss, progress.accuracy, progress.val_accuracy) == (1.183, 0.52, 0.383)
    assert (progress.covers_cached, progress.covers_computed) == (4000, 444)
    assert progress.fraction == 0.62
    # Written 10 s ago with 40 s to go: about 30 s left now.
    assert 25 <= run["eta_s"] <= 30.5
    [earlier] = body["earlier_runs"]
    assert (earlier["id"], earlier["status"], earlier["eta_s"]) == (killed, "interrupted", None)
    assert earlier["progress"]["epoch"] == 4  # where it was when it stopped


async def test_a_run_whose_heartbeat_went_stale_reads_interrupted(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    db = registry[0]
    job_id, dataset_id = await a_train_job(db)
    silent_since = utcnow() - timedelta(minutes=2)  # three beats are 30 s by default
    await add_run(
        db,
        dataset_id=dataset_id,
        job_id=job_id,
        status=TrainingRunStatus.RUNNING,
        started_at=silent_since - timedelta(minutes=1),
        heartbeat_at=silent_since,
        progress={**HEAD_EPOCH, "updated_at": silent_since.isoformat()},
    )

    run = (await api.get(f"/v1/training-runs/{job_id}")).json()["run"]

    assert (run["status"], run["eta_s"]) == ("interrupted", None)
    assert run["progress"]["phase"] == "head"


@pytest.mark.parametrize(
    "stored", [None, {"phase": "somewhere else"}], ids=["no progress yet", "unreadable"]
)
async def test_a_run_without_readable_progress_shows_none(
    api: httpx.AsyncClient,
    registry: tuple[Database, ObjectStore],
    stored: dict[str, object] | None,
) -> None:
    db = registry[0]
    job_id, dataset_id = await a_train_job(db)
    await add_run(db, dataset_id=dataset_id, job_id=job_id, heartbeat_at=utcnow(), progress=stored)

    run = (await api.get(f"/v1/training-runs/{job_id}")).json()["run"]

    assert (run["status"], run["progress"], run["eta_s"]) == ("running", None, None)


async def test_a_queued_job_has_no_run_yet(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    job_id, _ = await a_train_job(registry[0])

    body = (await api.get(f"/v1/training-runs/{job_id}")).json()

    assert (body["status"], body["run"], body["earlier_runs"]) == ("queued", None, [])
