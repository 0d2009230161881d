"""Before the first model is served: readiness and 503 answers say how its training goes, or
why it failed and how to fix it; once it is registered the API serves it within seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sleeve_common.bootstrap import KIND, plan_from_settings
from sleeve_common.db import Database
from sleeve_common.jobs import ClaimedJob, JobQueue
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore
from sleeve_inference.app import create_app

from .harness import image_bytes, register_model, serve


async def _bootstrap_job(db: Database, settings: Settings, **plan: object) -> ClaimedJob:
    """A bootstrap job as ``sleeve run`` queues and claims it."""
    queue = JobQueue(db, lease_seconds=60)
    payload = {**plan_from_settings(settings).model_dump(mode="json"), **plan}
    await queue.enqueue(kind=KIND, payload=payload, unique_key=KIND)
    job = await queue.claim(kinds=[KIND], owner="sleeve run")
    assert job is not None
    return job


async def test_training_progress_then_the_first_model_is_served(
    settings: Settings, registry: tuple[Database, ObjectStore]
) -> None:
    db, store = registry
    job = await _bootstrap_job(db, settings)
    queue = JobQueue(db, lease_seconds=60)
    await queue.report_progress(
        job, fraction=0.62, message="training run 1: head epoch 4/10", stage="train"
    )
    app = create_app(settings)
    async with serve(app) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        model = ready.json()["checks"]["model"]
        assert model.startswith("training the first model: step 3 of 4, training the model, 62%")
        first = ready.json()["first_model"]
        assert {k: first[k] for k in ("state", "step", "steps", "stage", "percent", "detail")} == {
            "state": "running",
            "step": 3,
            "steps": 4,
            "stage": "training the model",
            "percent": 62,
            "detail": "training run 1: head epoch 4/10",
        }
        predicted = await api.post(
            "/v1/predict", files=[("files", ("c.png", image_bytes((9, 9, 9)), "image/png"))]
        )
        assert predicted.status_code == 503
        assert predicted.json()["error"] == {"code": "model_not_loaded", "message": model}

        await register_model(db, store)
        await queue.succeed(job, {"model_version": "v1"})
        # No request needed: the server looks for the first model every two seconds.
        for _ in range(100):
            if app.state.models.current is not None:
                break
            await asyncio.sleep(0.1)
        ready = await api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["first_model"] is None
        predicted = await api.post(
            "/v1/predict", files=[("files", ("c.png", image_bytes((9, 9, 9)), "image/png"))]
        )
        assert predicted.status_code == 200, predicted.text


async def test_a_failed_first_model_says_why_and_how_to_fix_it(
    settings: Settings, registry: tuple[Database, ObjectStore], tmp_path: Path
) -> None:
    db, _store = registry
    missing = tmp_path / "no-such-folder"
    job = await _bootstrap_job(db, settings, source="folder", path=str(missing), genres=None)
    queue = JobQueue(db, lease_seconds=60)
    await queue.report_progress(job, fraction=0.0, message="waiting", stage="scrape")
    await queue.fail(
        job,
        f"BootstrapFailed: collecting covers failed: SourceError: folder {missing} does not exist",
    )
    async with serve(create_app(settings)) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        first = ready.json()["first_model"]
        assert first["state"] == "failed"
        assert (
            first["error"]
            == f"collecting covers failed: SourceError: folder {missing} does not exist"
        )
        assert "SLEEVE_BOOTSTRAP_SOURCE to an existing folder" in first["fix"]
        message = ready.json()["checks"]["model"]
        assert (
            message
            == f"the first model could not be trained: {first['error']}. To fix it: {first['fix']}"
        )
        predicted = await api.post(
            "/v1/predict", files=[("files", ("c.png", image_bytes((9, 9, 9)), "image/png"))]
        )
        assert (predicted.status_code, predicted.json()["error"]["message"]) == (503, message)
        assert (await api.get("/healthz")).status_code == 200


async def test_without_a_bootstrap_the_answer_names_every_step(
    settings: Settings, registry: tuple[Database, ObjectStore]
) -> None:
    async with serve(create_app(settings)) as api:
        ready = await api.get("/readyz")
        first = ready.json()["first_model"]
        assert first["state"] == "none"
        for step in ("sleeve scrape", "sleeve dataset build", "sleeve train --dataset NAME"):
            assert step in ready.json()["checks"]["model"]
