"""A store that answers but refuses, under a running API, on the real S3 server (issue 9).

Wrong or revoked keys and a deleted bucket are no outage: the S3 server answers every request
at once, with a 403 or a 404. ``/readyz`` turns false with the store's own reason, requests
that need the store answer 503 ``store_refused`` in the error schema (never a 500, never
``model_unusable`` for a model file that is only unreachable), the model in memory keeps
serving, and everything works again, without a restart, once the store is fixed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from servers import S3Server
from support import make_settings

from sleeve_common.db import Database, upgrade_database
from sleeve_common.exceptions import StoreRefused
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore, ObstoreStore, open_store
from sleeve_inference.app import create_app

from .harness import API_KEY, LIMITS, Registered, image_bytes, register_model, serve

KEY = {"X-API-Key": API_KEY}


def _settings(tmp_path: Path, server: S3Server, bucket: str, secret: str) -> Settings:
    return make_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}",
        api_key=API_KEY,
        store_url=f"s3://{bucket}/sleeve",
        s3_endpoint=server.endpoint,
        SLEEVE_S3_ACCESS_KEY_ID=server.access_key,
        SLEEVE_S3_SECRET_ACCESS_KEY=secret,
        **LIMITS,
    )


@dataclasses.dataclass
class Stack:
    app: FastAPI
    api: httpx.AsyncClient
    store: ObjectStore
    bucket: str
    v1: Registered
    v2: Registered


@pytest.fixture
async def stack(tmp_path: Path, s3_server: S3Server) -> AsyncIterator[Stack]:
    """The API on SQLite and a bucket of its own on the real S3 server: v1 in production, v2
    a candidate."""
    bucket = f"refused-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    settings = _settings(tmp_path, s3_server, bucket, s3_server.secret_key)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    store = open_store(settings)
    db = Database(settings.database_url)
    try:
        v1 = await register_model(db, store)
        v2 = await register_model(db, store, bias=np.array([0.0, 0.2, -0.1], dtype=np.float32))
    finally:
        await db.aclose()
    app = create_app(settings)
    try:
        async with serve(app) as api:
            yield Stack(app, api, store, bucket, v1, v2)
    finally:
        s3_server.delete_bucket(bucket)


async def _assert_refused(stack: Stack, reason: str, *, secrets: tuple[str, ...]) -> None:
    """Readiness false with ``reason``; store requests 503 ``store_refused``; v1 still serves."""
    api = stack.api
    ready = await api.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert reason in checks["store"]
    assert checks["database"] == "ok" and checks["model"] == "ok (v1)"

    image = await api.get("/v1/models/v1/confusion-matrix.png")
    promote = await api.post("/v1/models/v2/promote", headers=KEY)
    scoring = await api.post("/v1/scoring-jobs", json={"input": "store:covers/"}, headers=KEY)
    for answer in (image, promote, scoring):
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["code"] == "store_refused"
        assert reason in answer.json()["error"]["message"]
        assert "retry-after" not in answer.headers  # it will not pass by itself
        assert not any(secret in answer.text for secret in secrets)
    # Nothing changed: v2 is still a candidate.
    assert (await api.get("/v1/models/v2")).json()["stage"] == "candidate"

    predicted = await api.post(
        "/v1/predict", files={"files": ("red.png", image_bytes((250, 10, 10)), "image/png")}
    )
    assert predicted.status_code == 200
    assert predicted.json()["predictions"][0]["top_genre"] == "country"

    metrics = (await api.get("/metrics")).text
    assert 'status="500"' not in metrics


async def _assert_recovered(stack: Stack) -> None:
    api = stack.api
    assert (await api.get("/readyz")).status_code == 200
    image = await api.get("/v1/models/v1/confusion-matrix.png")
    assert (image.status_code, image.headers["content-type"]) == (200, "image/png")
    promoted = await api.post("/v1/models/v2/promote", headers=KEY)
    assert (promoted.status_code, promoted.json()["stage"]) == (200, "production")


async def test_a_deleted_bucket_answers_503_and_recovers_once_it_is_back(
    stack: Stack, s3_server: S3Server
) -> None:
    assert (await stack.api.get("/readyz")).status_code == 200
    s3_server.delete_bucket(stack.bucket)

    # Before the fix: /readyz a 500, and the promotion a 409 saying v2's file is missing.
    await _assert_refused(
        stack, "(404 NoSuchBucket): the bucket does not exist", secrets=(s3_server.secret_key,)
    )

    # The bucket is back, with what it held: everything works again, without a restart.
    s3_server.create_bucket(stack.bucket)
    for registered in (stack.v1, stack.v2):
        keys = {registered.version.onnx_key: registered.onnx, **_reports(registered)}
        for key, data in keys.items():
            await stack.store.put(key, data)
    await _assert_recovered(stack)


@pytest.mark.parametrize(
    ("wrong", "reason"),
    [
        ("secret", "(403 SignatureDoesNotMatch): the secret access key is wrong"),
        ("key id", "(403 InvalidAccessKeyId): the server does not know the access key id"),
    ],
)
async def test_keys_the_store_no_longer_takes_answer_503_and_recover(
    stack: Stack, s3_server: S3Server, wrong: str, reason: str
) -> None:
    """The keys rotated on the server while the API runs: from then on the API's keys are
    wrong. The same real server refuses a store opened with a wrong key; the runtime the
    routes read gets that store, and later the right one back."""
    wrong_secret = f"revoked-{uuid.uuid4().hex}"
    runtime = stack.app.state.runtime
    revoked = ObstoreStore.s3(
        stack.bucket,
        prefix="sleeve",
        endpoint=s3_server.endpoint,
        access_key_id=f"rotated-{uuid.uuid4().hex[:8]}"
        if wrong == "key id"
        else s3_server.access_key,
        secret_access_key=wrong_secret if wrong == "secret" else s3_server.secret_key,
    )
    with pytest.raises(StoreRefused):
        await revoked.ping()
    stack.app.state.runtime = dataclasses.replace(runtime, store=revoked)

    await _assert_refused(stack, reason, secrets=(s3_server.secret_key, wrong_secret))

    stack.app.state.runtime = runtime
    await _assert_recovered(stack)


async def test_a_refusing_store_at_start_fails_the_start_naming_the_cause(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """Wrong keys at start are a configuration error: the server does not start half-ready."""
    wrong_secret = f"wrong-{uuid.uuid4().hex}"
    settings = _settings(tmp_path, s3_server, s3_server.bucket, wrong_secret)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    with pytest.raises(StoreRefused, match="the secret access key is wrong") as raised:
        async with serve(create_app(settings)):
            pass
    assert wrong_secret not in str(raised.value)


def _reports(registered: Registered) -> dict[str, bytes]:
    """The report images ``register_model`` stored (a 32² white PNG each)."""
    return {
        key: image_bytes((255, 255, 255), (32, 32))
        for key in registered.version.report_keys.values()
    }
