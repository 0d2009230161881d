"""The first-model bootstrap's coordinator, its one-at-a-time guarantee and its status lines.

The steps run here on in-process stand-ins for the scraper and trainer workers (the real ones
run in ``tests/test_first_run.py``, as ``sleeve run`` starts them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from sleeve_common.bootstrap import (
    DEFAULT_API_GENRES,
    KIND,
    BootstrapPlan,
    bootstrap_handler,
    first_model_status,
    plan_from_settings,
    queue_bootstrap,
)
from sleeve_common.exceptions import SleeveError
from sleeve_common.jobs import JobQueue
from sleeve_common.models import Job, ModelVersion
from sleeve_common.registry import NO_MODEL_HINT, list_model_versions, register_model_version
from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_common.worker import JobContext, run_worker

POLL_S = 0.05


@pytest.fixture
def fast(runtime: Runtime) -> Runtime:
    """The runtime with a coordinator that looks at its steps every 50 ms."""
    settings = Settings.model_validate(
        {**runtime.settings.model_dump(), "worker_poll_seconds": POLL_S}
    )
    return dataclasses.replace(runtime, settings=settings)


class Steps:
    """Stand-ins for the scraper and trainer workers: the train step waits to be let go."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.train_started = asyncio.Event()
        self.finish_training = asyncio.Event()
        self.scrape_error: Exception | None = None
        self.payloads: dict[str, list[dict[str, Any]]] = {"scrape": [], "train": []}

    async def scrape(self, ctx: JobContext) -> dict[str, Any]:
        self.payloads["scrape"].append(ctx.payload)
        if self.scrape_error is not None:
            raise self.scrape_error
        await ctx.progress(0.5, "run 1: itunes jazz 3/6")
        return {"scrape_run_id": 1, "summary": "6 seen: 6 added"}

    async def train(self, ctx: JobContext) -> dict[str, Any]:
        self.payloads["train"].append(ctx.payload)
        await ctx.progress(0.0, "building dataset", stage="dataset")
        await ctx.progress(0.3, "training run 1: embedding covers 3/9", stage="train")
        self.train_started.set()
        await self.finish_training.wait()
        onnx = b"not really onnx, but stored and hashed like a model"
        await self.runtime.store.put("models/run-1/model.onnx", onnx)
        version = await register_model_version(
            db=self.runtime.db,
            training_run_id=None,
            labels=["jazz", "metal"],
            input_spec={},
            metrics={"accuracy": 0.5},
            onnx_key="models/run-1/model.onnx",
            onnx_sha256=hashlib.sha256(onnx).hexdigest(),
            onnx_bytes=len(onnx),
            report_keys={},
        )
        return {"training_run_id": 1, "model_version": version.version}


async def _coordinate(runtime: Runtime, stop: asyncio.Event, lines: list[str]) -> int:
    queue = JobQueue(runtime.db, lease_seconds=30)
    handler = bootstrap_handler(runtime, announce=lines.append)
    return await run_worker(
        queue, {KIND: handler}, owner="coordinator", poll_seconds=POLL_S, stop=stop, max_jobs=1
    )


async def _count(runtime: Runtime, kind: str) -> int:
    async with runtime.db.session() as session:
        query = select(func.count(Job.id)).where(Job.kind == kind)
        return int((await session.execute(query)).scalar_one())


async def test_a_stopped_bootstrap_continues_with_the_steps_it_queued(fast: Runtime) -> None:
    queued = await queue_bootstrap(db=fast.db, settings=fast.settings)
    assert queued is not None and queued.created
    again = await queue_bootstrap(db=fast.db, settings=fast.settings)
    assert again is not None and (again.job_id, again.created) == (queued.job_id, False)

    steps = Steps(fast)
    queue = JobQueue(fast.db, lease_seconds=30)
    workers_stop = asyncio.Event()
    workers = asyncio.create_task(
        run_worker(
            queue,
            {"scrape": steps.scrape, "train": steps.train},
            owner="steps",
            poll_seconds=POLL_S,
            stop=workers_stop,
        )
    )
    try:
        lines: list[str] = []
        first_stop = asyncio.Event()
        first = asyncio.create_task(_coordinate(fast, first_stop, lines))
        await asyncio.wait_for(steps.train_started.wait(), timeout=20)
        # Wait until the coordinator has mirrored the train step's stage, then stop it (Ctrl-C).
        for _ in range(200):
            status = await first_model_status(db=fast.db)
            if status.stage == "training the model":
                break
            await asyncio.sleep(POLL_S)
        assert status.state == "running" and status.step == 3, status
        assert status.message.startswith("training the first model: step 3 of 4, training")
        first_stop.set()
        await asyncio.wait_for(first, timeout=10)
        handed_back = await first_model_status(db=fast.db)
        assert handed_back.state == "queued", handed_back

        later: list[str] = []
        second = asyncio.create_task(_coordinate(fast, asyncio.Event(), later))
        steps.finish_training.set()
        assert await asyncio.wait_for(second, timeout=20) == 1
    finally:
        workers_stop.set()
        await asyncio.wait_for(workers, timeout=10)

    bootstrap = await queue.get(queued.job_id)
    assert (bootstrap.status, bootstrap.attempts) == ("succeeded", 1), bootstrap.error
    assert bootstrap.result is not None and bootstrap.result["model_version"] == "v1"
    # One job per step, though two coordinators ran: the second found the first one's.
    assert (await _count(fast, "scrape"), await _count(fast, "train")) == (1, 1)
    assert [(v.version, v.stage) for v in await list_model_versions(db=fast.db)] == [
        ("v1", "production")
    ]
    scrape_request = steps.payloads["scrape"][0]
    assert (scrape_request["source"], tuple(scrape_request["genres"])) == (
        "itunes",
        DEFAULT_API_GENRES,
    )
    train_request = steps.payloads["train"][0]
    assert train_request["dataset"] == f"first-model-{queued.job_id}"
    assert train_request["build_dataset"]["max_per_genre"] == fast.settings.bootstrap_per_genre
    assert any(
        line.startswith("first model, step 1/4: collecting covers from iTunes") for line in lines
    )
    assert any(line.startswith("first model, step 3/4: training the model") for line in lines)
    assert any(line.startswith("first model v1 is ready") for line in later)
    assert (await first_model_status(db=fast.db)).state == "done"
    assert await queue_bootstrap(db=fast.db, settings=fast.settings) is None  # a model exists


async def test_a_failed_step_fails_the_bootstrap_with_why_and_how_to_fix(fast: Runtime) -> None:
    queued = await queue_bootstrap(db=fast.db, settings=fast.settings)
    assert queued is not None
    steps = Steps(fast)
    steps.scrape_error = SleeveError("connection failed (ConnectError) (https://itunes.x/us/rss)")
    queue = JobQueue(fast.db, lease_seconds=30)
    stop = asyncio.Event()
    workers = asyncio.create_task(
        run_worker(queue, {"scrape": steps.scrape}, owner="s", poll_seconds=POLL_S, stop=stop)
    )
    lines: list[str] = []
    try:
        assert await asyncio.wait_for(_coordinate(fast, asyncio.Event(), lines), timeout=20) == 1
    finally:
        stop.set()
        await workers

    status = await first_model_status(db=fast.db)
    assert status.state == "failed"
    assert status.error == (
        "collecting covers failed: SleeveError: connection failed (ConnectError) "
        "(https://itunes.x/us/rss)"
    )
    assert status.fix is not None and "SLEEVE_ITUNES_BASE_URL" in status.fix
    assert "SLEEVE_BOOTSTRAP_SOURCE to a folder" in status.fix
    assert (
        status.message
        == f"the first model could not be trained: {status.error}. To fix it: {status.fix}"
    )
    assert lines[-2] == f"the first model could not be trained: {status.error}"
    assert lines[-1] == f"to fix it: {status.fix}"
    # The next start tries again with a new bootstrap; the failed one no longer holds the key.
    retry = await queue_bootstrap(db=fast.db, settings=fast.settings)
    assert retry is not None and retry.created and retry.job_id != queued.job_id


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_status_says_step_percent_and_time_left_then_interrupted(runtime: Runtime) -> None:
    assert (await first_model_status(db=runtime.db)).message == NO_MODEL_HINT
    clock = Clock()
    queue = JobQueue(runtime.db, lease_seconds=60, clock=clock)
    plan = plan_from_settings(runtime.settings)  # iTunes: training is 41% of the whole
    job_id = await queue.enqueue(kind=KIND, payload=plan.model_dump(mode="json"), unique_key=KIND)
    await queue.enqueue(kind="train", payload={}, unique_key=f"{KIND}-{job_id}:train")
    job = await queue.claim(kinds=[KIND], owner="coordinator")
    train = await queue.claim(kinds=["train"], owner="trainer")
    assert job is not None and train is not None
    clock.now += timedelta(seconds=40)
    await queue.report_progress(train, fraction=0.4, message="head epoch 2/10")
    await queue.report_progress(job, fraction=0.73, message="head epoch 2/10", stage="train")

    status = await first_model_status(db=runtime.db, now=clock)
    # The train job's pace: 40 s for 40%, so 60 s more, and 2/41 of its 100 s to promote.
    assert status.message == (
        "training the first model: step 3 of 4, training the model, 73% done, about 65 s left"
    )
    assert (status.percent, status.eta_seconds, status.detail) == (73, 65, "head epoch 2/10")

    clock.now += timedelta(seconds=61)  # the coordinator stopped renewing: its run is gone
    status = await first_model_status(db=runtime.db, now=clock)
    assert status.state == "interrupted"
    assert "it goes on at the next `sleeve run`" in status.message


def test_plan_names_an_api_source_or_a_folder(runtime: Runtime, tmp_path: Path) -> None:
    def plan(**values: object) -> BootstrapPlan:
        settings = Settings.model_validate({**runtime.settings.model_dump(), **values})
        return plan_from_settings(settings)

    itunes = plan()
    assert (itunes.source, itunes.path, itunes.genres) == ("itunes", None, DEFAULT_API_GENRES)
    assert itunes.describe().startswith("iTunes (country, electronic, hiphop, jazz, metal; up to")
    deezer = plan(bootstrap_source="deezer", bootstrap_genres="Hip-Hop/Rap, Jazz")
    assert (deezer.source, deezer.genres) == ("deezer", ("hiphop", "jazz"))
    folder = plan(bootstrap_source=str(tmp_path / "covers"), bootstrap_per_genre=5)
    assert (folder.source, folder.path, folder.genres) == ("folder", str(tmp_path / "covers"), None)
    assert folder.train_request("d").build_dataset is not None
    assert folder.train_request("d").build_dataset.max_per_genre == 5  # type: ignore[union-attr]
    # The first model is the quick one: the head alone, on the served view.
    assert folder.train_request("d").fine_tune_epochs == 0
    assert not folder.train_request("d").augment
    relative = plan(bootstrap_source="covers")
    assert relative.path == str(Path.cwd() / "covers")


async def test_no_bootstrap_while_a_model_is_registered(runtime: Runtime) -> None:
    await register_model_version(
        db=runtime.db,
        training_run_id=None,
        labels=["a", "b"],
        input_spec={},
        metrics={},
        onnx_key="models/x.onnx",
        onnx_sha256="0" * 64,
        onnx_bytes=1,
        report_keys={},
    )
    assert await queue_bootstrap(db=runtime.db, settings=runtime.settings) is None
    async with runtime.db.session() as session:
        assert (await session.execute(select(func.count(ModelVersion.id)))).scalar_one() == 1
