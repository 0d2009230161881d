"""A training run's row while it runs: opened ``running`` with a heartbeat, its progress and
heartbeat written about once a second (at least every ``SLEEVE_TRAIN_HEARTBEAT_S``), and its
outcome; and, for a job's next attempt, the runs an earlier attempt left behind.

A process killed mid-run cannot mark its run: its heartbeat goes stale, the API reports the
run ``interrupted`` (``TrainingRun.reported_status``), and the job's next attempt marks it so
and deletes the files it stored before registering (``close_interrupted_runs``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, select, update

from sleeve_common.models import ModelVersion, TrainingRun, TrainingRunStatus, utcnow

if TYPE_CHECKING:
    from sleeve_common.db import Database
    from sleeve_common.store import ObjectStore
    from sleeve_common.training_progress import TrainingProgress

__all__ = [
    "RunRecord",
    "close_interrupted_runs",
    "delete_run_files",
    "open_run",
    "registered_by",
    "run_prefix",
]

logger = logging.getLogger(__name__)

_WRITE_EVERY_S = 1.0  # at most one progress write a second


def run_prefix(run_id: int) -> str:
    """Where a run stores its ONNX files, report and model card."""
    return f"models/run-{run_id}"


class RunRecord:
    """One training run's row, written by the process training it."""

    def __init__(self, *, db: Database, run_id: int, heartbeat_s: float) -> None:
        self._db = db
        self.run_id = run_id
        self._heartbeat_s = heartbeat_s
        self._latest: TrainingProgress | None = None

    def offer(self, progress: TrainingProgress) -> None:
        """The newest snapshot (from any thread); the next write takes it."""
        self._latest = progress

    async def keep_recording(self) -> None:
        """Write the newest snapshot once a second while it changes, and the heartbeat at
        least every ``heartbeat_s`` while it does not (a long export), until cancelled."""
        written: TrainingProgress | None = None
        beat = time.monotonic()
        while True:
            await asyncio.sleep(min(_WRITE_EVERY_S, self._heartbeat_s))
            latest = self._latest
            if latest is written and time.monotonic() - beat < self._heartbeat_s:
                continue
            try:
                if not await self._write(latest):
                    logger.warning(
                        "training run %s was closed by another process; not recording it",
                        self.run_id,
                    )
                    return
            except Exception:
                logger.exception("training run %s: could not record its progress", self.run_id)
                continue
            written, beat = latest, time.monotonic()

    async def finish(
        self, status: TrainingRunStatus, *, progress: TrainingProgress | None, **values: Any
    ) -> None:
        """Record the outcome (and the last snapshot)."""
        now = utcnow()
        snapshot = progress or self._latest
        async with self._db.session() as session:
            await session.execute(
                update(TrainingRun)
                .where(TrainingRun.id == self.run_id)
                .values(
                    status=status,
                    finished_at=now,
                    heartbeat_at=now,
                    progress=None if snapshot is None else snapshot.model_dump(mode="json"),
                    **values,
                )
            )

    async def _write(self, progress: TrainingProgress | None) -> bool:
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = progress.model_dump(mode="json")
        async with self._db.session() as session:
            result = await session.execute(
                update(TrainingRun)
                .where(
                    TrainingRun.id == self.run_id,
                    TrainingRun.status == TrainingRunStatus.RUNNING,
                )
                .values(**values)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def open_run(
    *,
    db: Database,
    dataset_id: int,
    params: dict[str, Any],
    job_id: int | None,
    heartbeat_s: float,
) -> RunRecord:
    """A new ``running`` run, its heartbeat fresh."""
    async with db.session() as session:
        run = TrainingRun(
            dataset_id=dataset_id,
            params=params,
            status=TrainingRunStatus.RUNNING,
            job_id=job_id,
            heartbeat_at=utcnow(),
        )
        session.add(run)
        await session.flush()
        return RunRecord(db=db, run_id=run.id, heartbeat_s=heartbeat_s)


async def close_interrupted_runs(*, db: Database, store: ObjectStore, job_id: int) -> list[int]:
    """Runs of job ``job_id`` left ``running`` by an attempt whose worker was stopped or died:
    marked ``interrupted``, and what they stored without registering it deleted (a run that
    registered its model is not one of them: ``registered_by`` finds it first). Only the job's
    current attempt may call this: its lease says no other process still trains them."""
    async with db.session() as session:
        registered = exists().where(ModelVersion.training_run_id == TrainingRun.id)
        ids = list(
            (
                await session.execute(
                    update(TrainingRun)
                    .where(
                        TrainingRun.job_id == job_id,
                        TrainingRun.status == TrainingRunStatus.RUNNING,
                        ~registered,
                    )
                    .values(
                        status=TrainingRunStatus.INTERRUPTED,
                        error="interrupted: its worker stopped or died, and the job ran again",
                        finished_at=utcnow(),
                    )
                    .returning(TrainingRun.id)
                )
            ).scalars()
        )
    for run_id in ids:
        await delete_run_files(store=store, run_id=run_id)
    return ids


async def delete_run_files(*, store: ObjectStore, run_id: int) -> None:
    """Delete what run ``run_id`` stored (it registered nothing: no row names these files)."""
    keys = await store.list(run_prefix(run_id) + "/")
    for key in keys:
        await store.delete(key)
    if keys:
        logger.info("training run %s: deleted %d unregistered file(s)", run_id, len(keys))


async def registered_by(*, db: Database, job_id: int) -> tuple[int, str] | None:
    """The run of job ``job_id`` that registered a model, and the model's version, if one did;
    that run is marked ``succeeded`` if its process died before it could say so."""
    async with db.session() as session:
        row = (
            await session.execute(
                select(TrainingRun.id, ModelVersion.version)
                .join(ModelVersion, ModelVersion.training_run_id == TrainingRun.id)
                .where(TrainingRun.job_id == job_id)
                .order_by(ModelVersion.id)
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        await session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == row.id, TrainingRun.status == TrainingRunStatus.RUNNING)
            .values(status=TrainingRunStatus.SUCCEEDED, finished_at=utcnow())
        )
    return row.id, row.version
