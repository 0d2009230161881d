"""Bulk scoring over HTTP: queue, follow, stream results in three formats, cancel, refuse.

The API and a real ``score`` worker loop share one real database and store; the scoring
itself runs in the worker, as in production.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from sleeve_common.jobs import JobQueue
from sleeve_common.models import Prediction, ScoringJob
from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_common.worker import run_worker
from sleeve_inference.app import create_app
from sleeve_inference.scoring.errors import ScoringCancelled
from sleeve_inference.scoring.jobs import run_scoring, score_handler

from ..harness import API_KEY, LABELS, Registered, image_bytes, serve
from .conftest import BLUE, GREEN, RED

KEY = {"X-API-Key": API_KEY}
COVERS = 7


@pytest.fixture
async def api(
    scoring_settings: Settings, colour_model: Registered
) -> AsyncIterator[httpx.AsyncClient]:
    settings = scoring_settings.model_copy(update={"api_key": SecretStr(API_KEY)})
    async with serve(create_app(settings)) as client:
        yield client


@pytest.fixture
async def catalog(scoring_runtime: Runtime) -> str:
    """``store:catalog/``: solid-colour covers, a broken one and a text file in the store."""
    colours = [RED, GREEN, BLUE]
    for index in range(COVERS):
        await scoring_runtime.store.put(f"catalog/{index}.png", image_bytes(colours[index % 3]))
    await scoring_runtime.store.put("catalog/broken.png", b"\x89PNG not really")
    await scoring_runtime.store.put("catalog/readme.txt", b"not a cover")
    return "store:catalog/"


async def work_one(runtime: Runtime) -> None:
    """One pass of a real ``score`` worker loop: claim the queued job and run it."""
    queue = JobQueue(runtime.db, lease_seconds=30)
    ran = await run_worker(
        queue,
        {"score": score_handler(runtime)},
        owner="test-worker",
        poll_seconds=0.1,
        stop=asyncio.Event(),
        max_jobs=1,
    )
    assert ran == 1


async def test_a_catalog_is_queued_scored_by_a_worker_and_streamed(
    api: httpx.AsyncClient, scoring_runtime: Runtime, catalog: str
) -> None:
    created = await api.post("/v1/scoring-jobs", json={"input": catalog}, headers=KEY)
    assert created.status_code == 202, created.text
    accepted = created.json()
    assert accepted["status"] == "queued"
    queued = (await api.get(accepted["url"])).json()
    assert (queued["status"], queued["total"], queued["done"]) == ("queued", COVERS + 1, 0)
    assert (queued["model_version"], queued["engine"], queued["input"]) == ("v1", "local", catalog)

    await work_one(scoring_runtime)

    view = (await api.get(accepted["url"])).json()
    assert view["status"] == "succeeded", view["error"]
    assert (view["done"], view["failed"], view["progress"]) == (COVERS, 1, 1.0)
    assert view["images_per_second"] > 0 and view["eta_s"] is None
    assert view["results_url"].endswith(f"/v1/scoring-jobs/{accepted['id']}/results?format=jsonl")

    jsonl = await api.get(view["results_url"])
    assert jsonl.headers["content-type"] == "application/x-ndjson"
    assert jsonl.headers["x-sleeve-job-status"] == "succeeded"
    assert f'filename="scoring-job-{accepted["id"]}.jsonl"' in jsonl.headers["content-disposition"]
    rows = {r["item"]: r for r in map(json.loads, jsonl.text.splitlines())}
    assert len(rows) == COVERS + 1
    assert rows["catalog/0.png"]["top_genre"] == "country"
    assert rows["catalog/1.png"]["top_genre"] == "rock"
    assert set(rows["catalog/2.png"]["probabilities"]) == set(LABELS)
    assert "invalid image" in rows["catalog/broken.png"]["error"]

    url = f"/v1/scoring-jobs/{accepted['id']}/results"
    as_csv = await api.get(url, params={"format": "csv"})
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    records = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["item"]: r["top_genre"] for r in records} == {
        item: row["top_genre"] or "" for item, row in rows.items()
    }

    as_parquet = await api.get(url, params={"format": "parquet"})
    assert as_parquet.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(as_parquet.content))
    assert sorted(table.column("item").to_pylist()) == sorted(rows)


async def test_albums_are_scored_through_the_api(
    api: httpx.AsyncClient, scoring_runtime: Runtime
) -> None:
    from .test_albums import add_album

    mislabelled = await add_album(scoring_runtime, RED, ["pop"])
    created = await api.post("/v1/scoring-jobs", json={"input": "albums:genre=pop"}, headers=KEY)
    assert created.status_code == 202, created.text

    await work_one(scoring_runtime)

    results = await api.get(f"/v1/scoring-jobs/{created.json()['id']}/results")
    (row,) = map(json.loads, results.text.splitlines())
    assert (row["item"], row["album_id"]) == (str(mislabelled), mislabelled)
    assert (row["stored_genre"], row["top_genre"], row["disagrees"]) == ("pop", "country", True)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input": "/etc"}, 422, "the API scores `store:PREFIX` or `albums:FILTER`"),
        ({"input": "catalog.csv"}, 422, "sleeve score --input PATH"),
        ({"input": "store:nothing-here/"}, 422, "no images under store:nothing-here/"),
        ({"input": "store:../up"}, 422, "invalid store prefix"),
        ({"input": "albums:colour=red"}, 422, "unknown key 'colour'"),
        ({"input": "albums:"}, 422, "no albums with a stored cover match albums:"),
        ({"input": "store:catalog/", "model": "v9"}, 422, "v9"),
        ({"input": "store:catalog/", "engine": "spark"}, 422, "engine"),
        ({"input": "store:catalog/", "output": "/tmp/x.csv"}, 422, "output"),
        ({"input": ""}, 422, "input"),
        ({"input": "store:" + "x" * 5000}, 422, "input"),
        ({"input": 42}, 422, "input"),
        ({}, 422, "input"),
    ],
)
async def test_a_bad_request_is_refused_before_anything_is_queued(
    api: httpx.AsyncClient,
    scoring_runtime: Runtime,
    catalog: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    answer = await api.post("/v1/scoring-jobs", json=body, headers=KEY)

    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"
    assert message in answer.json()["error"]["message"]
    async with scoring_runtime.db.session() as session:
        assert await session.scalar(select(func.count(ScoringJob.id))) == 0
    assert (
        await JobQueue(scoring_runtime.db, lease_seconds=30).claim(kinds=["score"], owner="t")
        is None
    )


async def test_writes_need_the_api_key(api: httpx.AsyncClient, catalog: str) -> None:
    assert (await api.post("/v1/scoring-jobs", json={"input": catalog})).status_code == 401
    wrong = {"X-API-Key": "wrong"}
    assert (await api.post("/v1/scoring-jobs/1/cancel", headers=wrong)).status_code == 401


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/scoring-jobs/424242", 404),
        ("/v1/scoring-jobs/424242/results", 404),
        ("/v1/scoring-jobs/0", 422),
        ("/v1/scoring-jobs/99999999999", 422),
        ("/v1/scoring-jobs/abc", 422),
        ("/v1/scoring-jobs/1/results?format=xml", 422),
    ],
)
async def test_unknown_jobs_and_formats(api: httpx.AsyncClient, path: str, status: int) -> None:
    answer = await api.get(path)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]


async def test_a_queued_job_cancelled_is_never_run(
    api: httpx.AsyncClient, scoring_runtime: Runtime, catalog: str
) -> None:
    created = (await api.post("/v1/scoring-jobs", json={"input": catalog}, headers=KEY)).json()

    cancelled = await api.post(f"/v1/scoring-jobs/{created['id']}/cancel", headers=KEY)

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    queue = JobQueue(scoring_runtime.db, lease_seconds=30)
    assert await queue.claim(kinds=["score"], owner="t") is None
    again = await api.post(f"/v1/scoring-jobs/{created['id']}/cancel", headers=KEY)
    assert again.status_code == 409
    assert "already ended (cancelled)" in again.json()["error"]["message"]


async def test_a_running_job_cancelled_stops_and_keeps_its_rows(
    api: httpx.AsyncClient, scoring_runtime: Runtime, catalog: str
) -> None:
    created = (await api.post("/v1/scoring-jobs", json={"input": catalog}, headers=KEY)).json()
    job_id = created["id"]

    async def cancel_after_the_first_chunk(_fraction: float, _message: str) -> None:
        answer = await api.post(f"/v1/scoring-jobs/{job_id}/cancel", headers=KEY)
        assert answer.status_code in (200, 409)

    with pytest.raises(ScoringCancelled):
        await run_scoring(scoring_runtime, job_id, cancel_after_the_first_chunk, chunk_size=2)

    view = (await api.get(f"/v1/scoring-jobs/{job_id}")).json()
    assert view["status"] == "cancelled" and view["finished_at"] is not None
    async with scoring_runtime.db.session() as session:
        rows = await session.scalar(
            select(func.count(Prediction.id)).where(Prediction.scoring_job_id == job_id)
        )
    # It stops after the chunks in flight (at most three of two items), and keeps them.
    assert 2 <= rows <= 6 < COVERS + 1
    assert view["done"] + view["failed"] == rows
    results = await api.get(f"/v1/scoring-jobs/{job_id}/results")
    assert results.headers["x-sleeve-job-status"] == "cancelled"
    assert len(results.text.splitlines()) == rows
    async with scoring_runtime.db.session() as session:
        queue_job_id = (await session.get(ScoringJob, job_id)).job_id  # type: ignore[union-attr]
    assert queue_job_id is not None
    queue_job = await JobQueue(scoring_runtime.db, lease_seconds=30).get(queue_job_id)
    assert queue_job.status == "cancelled"
