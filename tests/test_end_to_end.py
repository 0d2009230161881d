"""The thin path a user walks, on real covers and the embedded default (SQLite + local store).

scrape a folder → build a dataset → train and export → serve → predict a held-back cover.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from PIL import Image
from servers import S3Server
from support import BASE_WEIGHTS, DISCOGS5

from sleeve_common.cli import main
from sleeve_common.jobs import JobQueue
from sleeve_common.models import Job
from sleeve_common.payloads import TrainRequest
from sleeve_common.runtime import open_runtime
from sleeve_common.settings import load_settings
from sleeve_common.worker import run_worker

GENRES = ("Country", "Electronic", "HipHop", "Pop", "Rock")
PER_GENRE = 8


@pytest.fixture
def covers(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A few dozen real covers in DIR/<genre>/, and one held-back cover per genre."""
    folder = tmp_path / "covers"
    held_back = []
    for genre in GENRES:
        files = sorted((DISCOGS5 / genre).glob("*.jpg"))
        (folder / genre).mkdir(parents=True)
        for source in files[:PER_GENRE]:
            shutil.copy(source, folder / genre / source.name)
        held_back.append(files[-1])
    return folder, held_back


@pytest.fixture(params=["embedded", "servers"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The embedded default (no settings: ./var), or a real PostgreSQL and S3 server."""
    monkeypatch.chdir(tmp_path)
    for name in ("SLEEVE_DATABASE_URL", "SLEEVE_STORE_URL", "SLEEVE_DATA_DIR", "SLEEVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "servers":
        monkeypatch.setenv("SLEEVE_DATABASE_URL", request.getfixturevalue("postgres_database_url"))
        s3: S3Server = request.getfixturevalue("s3_server")
        monkeypatch.setenv("SLEEVE_STORE_URL", f"s3://{s3.bucket}/e2e-{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("SLEEVE_S3_ENDPOINT", s3.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    return str(request.param)


@pytest.mark.slow
def test_thin_path_from_folder_to_prediction(
    stack: str,
    covers: tuple[Path, list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, held_back = covers
    monkeypatch.setenv("SLEEVE_BASE_WEIGHTS", str(BASE_WEIGHTS))
    monkeypatch.setenv("SLEEVE_LOG_LEVEL", "WARNING")

    assert main(["db", "upgrade"]) == 0
    assert main(["scrape", "--source", "folder", "--path", str(folder)]) == 0
    scraped = capsys.readouterr().out
    assert f"{PER_GENRE * len(GENRES)} seen" in scraped
    assert main(["dataset", "build", "--name", "thin", "--min-per-genre", "4"]) == 0
    assert "genres country, electronic, hiphop, pop, rock" in capsys.readouterr().out
    assert main(["train", "--dataset", "thin", "--epochs", "2", "--batch-size", "16"]) == 0
    trained = capsys.readouterr()
    assert "model v1" in trained.out
    # Progress reached the terminal (the first and the final update always pass the throttle).
    assert "[train   0%] training run 1: fetching" in trained.err
    assert "[train 100%] training run 1 done: model v1 (production)" in trained.err
    if stack == "embedded":
        assert (tmp_path / "var" / "sleeve.db").is_file()
        assert list((tmp_path / "var" / "store" / "models").rglob("model.onnx"))
    else:
        assert not (tmp_path / "var" / "sleeve.db").exists()

    job = asyncio.run(_train_through_the_queue())
    assert (job.status, job.result, job.progress) == (
        "succeeded",
        {"training_run_id": 2, "model_version": "v2"},
        1.0,
    )
    assert job.progress_message is not None and "model v2 (candidate)" in job.progress_message

    # Every report image is linked and served, titled with the version registration named.
    figures = ("confusion matrix", "training curves", "reliability diagram", "test covers")
    expected = [f"{version} — {figure}" for version in ("v1", "v2") for figure in figures]
    titles = [title.partition(" (ECE")[0] for title in asyncio.run(_report_titles())]
    assert sorted(titles) == sorted(expected)

    predictions = asyncio.run(_predict(held_back))

    assert predictions["model_version"] == "v1"  # v2 is a candidate until promoted
    assert len(predictions["predictions"]) == len(held_back)
    for prediction in predictions["predictions"]:
        genres = prediction["genres"]
        assert {g["genre"] for g in genres} == {"country", "electronic", "hiphop", "pop", "rock"}
        probabilities = [g["probability"] for g in genres]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert prediction["top_genre"] == genres[0]["genre"]


async def _train_through_the_queue() -> Job:
    """What `POST /v1/training-runs` and `sleeve worker train` do together."""
    from sleeve_trainer.jobs import train_handler

    async with open_runtime(load_settings()) as runtime:
        queue = JobQueue(runtime.db, lease_seconds=60)
        request = TrainRequest(dataset="thin", epochs=1, batch_size=16)
        job_id = await queue.enqueue(kind="train", payload=request.model_dump(mode="json"))
        handlers = {"train": train_handler(runtime)}
        ran = await run_worker(
            queue, handlers, owner="e2e", poll_seconds=0.1, stop=asyncio.Event(), max_jobs=1
        )
        assert ran == 1
        return await queue.get(job_id)


async def _report_titles() -> list[str]:
    """The titles of the report images `GET /v1/models` links, fetched from those links."""
    from sleeve_inference.app import create_app

    app = create_app(load_settings())
    titles = []
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        for model in (await client.get("/v1/models")).json():
            for url in model["images"].values():
                image = await client.get(url)
                assert image.status_code == 200, image.text
                titles.append(Image.open(io.BytesIO(image.content)).text["Title"])
    return titles


async def _predict(images: list[Path]) -> dict[str, object]:
    from sleeve_inference.app import create_app

    app = create_app(load_settings())
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        response = await client.post(
            "/v1/predict",
            params={"top_k": 5},
            files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images],
        )
        assert response.status_code == 200, response.text
        ready = await client.get("/readyz")
        assert ready.json()["checks"]["model"] == "ok (v1)"
        result: dict[str, object] = response.json()
        return result
