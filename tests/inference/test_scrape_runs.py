"""``POST /v1/scrape-runs`` refuses up front what a scraper worker could not do: 422 at once,
nothing queued, for an unknown source, missing credentials or a missing file. (Paths outside
the import root: ``tests/test_import_root.py``.) ``GET`` reports what a queued scrape's run
found, stored and met, from a real worker scraping real HTTP answers."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from support import DISCOGS5, make_settings, serve_folder

from sleeve_common.db import Database
from sleeve_common.jobs import JobQueue
from sleeve_common.models import Job, ScrapeRun, utcnow
from sleeve_common.runtime import open_runtime
from sleeve_common.worker import run_worker
from sleeve_inference.app import create_app
from sleeve_scraper.jobs import scrape_handler

from .harness import API_KEY, LIMITS, serve

KEY = {"X-API-Key": API_KEY}
CREDENTIALS = {
    "spotify_client_id": "5f0c2a1e9d8b4c7a8e6f1d2c3b4a5968",
    "spotify_client_secret": "9a8b7c6d5e4f30211f2e3d4c5b6a7988",
    "musicbrainz_contact": "covers@example.org",
}

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def scrape_api(tmp_path: Path, database_url: str) -> Serve:
    """The API with the given settings on this test's database (no model: none is needed)."""

    def start(**settings: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve(
            create_app(make_settings(tmp_path, database_url, api_key=API_KEY, **LIMITS, **settings))
        )

    return start


async def queued_jobs(database_url: str) -> int:
    db = Database(database_url)
    try:
        async with db.session() as session:
            return int((await session.execute(select(func.count()).select_from(Job))).scalar_one())
    finally:
        await db.aclose()


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"source": "spotify", "genres": ["jazz"]},
            "the spotify source needs SLEEVE_SPOTIFY_CLIENT_ID and SLEEVE_SPOTIFY_CLIENT_SECRET",
        ),
        (
            {"source": "musicbrainz"},
            "the musicbrainz source needs SLEEVE_MUSICBRAINZ_CONTACT",
        ),
        (
            {"source": "bandcamp-tsv", "path": "{tmp}/links.tsv"},
            "the bandcamp-tsv source's TSV file {tmp}/links.tsv does not exist",
        ),
        (
            {"source": "mumu-csv", "path": "{tmp}"},
            "{tmp} is not a file (the mumu-csv source reads a CSV file)",
        ),
        ({"source": "folder", "path": "{tmp}/covers"}, "folder {tmp}/covers does not exist"),
        (
            {"source": "folder", "path": "{tmp}/notes.txt"},
            "{tmp}/notes.txt is not a folder (nor a .csv manifest)",
        ),
    ],
    ids=["spotify", "musicbrainz", "bandcamp", "mumu", "folder-missing", "folder-not-csv"],
)
async def test_what_a_worker_could_not_do_is_refused_at_once(
    scrape_api: Serve, database_url: str, tmp_path: Path, body: dict[str, Any], message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a manifest")
    filled = {
        k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in body.items()
    }

    async with scrape_api(import_root=tmp_path) as api:
        response = await api.post("/v1/scrape-runs", json=filled, headers=KEY)

    status, code, said = error_of(response)
    assert (status, code) == (422, "invalid_request")
    assert said.startswith(message.replace("{tmp}", str(tmp_path.resolve())))
    assert await queued_jobs(database_url) == 0


async def test_an_unknown_source_is_refused_naming_the_field(
    scrape_api: Serve, database_url: str
) -> None:
    async with scrape_api(**CREDENTIALS) as api:
        response = await api.post("/v1/scrape-runs", json={"source": "myspace"}, headers=KEY)

    status, code, said = error_of(response)
    assert (status, code) == (422, "invalid_request")
    assert "source" in said
    assert await queued_jobs(database_url) == 0


async def test_requests_a_worker_can_do_are_queued(
    scrape_api: Serve, database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "links.tsv").write_text("http://f1.bcbits.com/img/a1_2.jpg\tjazz/a2.jpg\n")
    (tmp_path / "mumu.csv").write_text("amazon_id,album_mbid,genres\n")
    (tmp_path / "index.csv").write_text("path,genre\n")
    bodies = [
        {"source": "spotify", "genres": ["jazz"]},
        {"source": "musicbrainz", "genres": ["jazz"], "per_genre": 10},
        {"source": "bandcamp-tsv", "path": str(tmp_path / "links.tsv")},
        {"source": "mumu-csv", "path": str(tmp_path / "mumu.csv")},
        {"source": "folder", "path": str(tmp_path)},
        {"source": "folder", "path": str(tmp_path / "index.csv")},
        {"source": "itunes", "genres": ["jazz"]},
    ]

    async with scrape_api(import_root=tmp_path, **CREDENTIALS) as api:
        answers = [await api.post("/v1/scrape-runs", json=b, headers=KEY) for b in bodies]

    assert [a.status_code for a in answers] == [202] * len(bodies), [a.text for a in answers]
    assert await queued_jobs(database_url) == len(bodies)


async def test_the_key_is_checked_before_the_request(scrape_api: Serve) -> None:
    async with scrape_api() as api:
        response = await api.post("/v1/scrape-runs", json={"source": "spotify"})

    assert error_of(response)[:2] == (401, "unauthorized")


def _covers_for_a_fake_host(folder: Path, good: int) -> list[str]:
    """``good`` real covers, two copies of the first two (true duplicates), a file that is no
    image and a name the host lacks (404): the manifest rows, as relative URLs."""
    folder.mkdir()
    kit = sorted((DISCOGS5 / "Country").glob("*.jpg"))[:good]  # byte-unique, all of them
    for n, cover in enumerate(kit):
        shutil.copyfile(cover, folder / f"c{n}.jpg")
    shutil.copyfile(kit[0], folder / "copy0.jpg")
    shutil.copyfile(kit[1], folder / "copy1.jpg")
    (folder / "broken.jpg").write_bytes(b"tracklist: 1. intro 2. outro")
    names = [f"c{n}.jpg" for n in range(good)] + ["copy0.jpg", "copy1.jpg"]
    return [f"{name},country" for name in names] + ["broken.jpg,rock", "missing.jpg,rock"]


async def test_a_scrape_runs_figures_while_it_runs_and_when_it_is_done(
    tmp_path: Path, database_url: str
) -> None:
    good = 30
    rows = _covers_for_a_fake_host(tmp_path / "host", good)
    settings = make_settings(
        tmp_path,
        database_url,
        api_key=API_KEY,
        import_root=tmp_path,
        download_rate=25,  # about 1.4 s for the run: long enough to watch it
        scrape_heartbeat_s=0.1,
        **LIMITS,
    )
    with serve_folder(tmp_path / "host") as host:
        manifest = tmp_path / "covers.csv"
        manifest.write_text("".join(f"{host}/{row}\n" for row in rows))
        async with serve(create_app(settings)) as api, open_runtime(settings) as runtime:
            queued = await api.post(
                "/v1/scrape-runs", json={"source": "folder", "path": str(manifest)}, headers=KEY
            )
            assert queued.status_code == 202, queued.text
            url = f"/v1/scrape-runs/{queued.json()['id']}"
            before = (await api.get(url)).json()
            assert (before["status"], before["run"]) == ("queued", None)

            worker = asyncio.create_task(
                run_worker(
                    JobQueue(runtime.db, lease_seconds=settings.job_lease_seconds),
                    {"scrape": scrape_handler(runtime)},
                    owner="test-worker",
                    poll_seconds=0.05,
                    stop=asyncio.Event(),
                    max_jobs=1,
                )
            )
            live: list[dict[str, Any]] = []
            while not worker.done():
                run = (await api.get(url)).json()["run"]
                if run is not None and run["status"] == "running":
                    live.append(run)
                await asyncio.sleep(0.05)
            assert await worker == 1
            done = (await api.get(url)).json()
            listed = (await api.get("/v1/scrape-runs")).json()

    assert any(run["request_rate"] > 0 for run in live), "no rate seen while it ran"
    assert all(run["heartbeat_at"] is not None for run in live)
    seen = [run["seen"] for run in live]
    assert seen == sorted(seen)
    assert done["status"] == "succeeded"
    assert done["progress_message"].endswith(f"[country {good + 2}/{good + 2}, rock 2/2]")
    run = done["run"]
    assert run["status"] == "succeeded"
    figures = {k: run[k] for k in ("seen", "fetched", "stored", "duplicates", "rejected")}
    assert figures == {
        "seen": len(rows),
        "fetched": len(rows) - 1,  # all but the 404
        "stored": good,
        "duplicates": 2,
        "rejected": 2,
    }
    assert run["rejected_by_reason"] == {
        "not a recognised image format": 1,
        "cover download failed: HTTP 404": 1,
    }
    assert run["seen_by_genre"] == {"country": good + 2, "rock": 2}
    assert run["errors_by_kind"] == {"http_404": 1}
    assert run["requests"] == len(rows)  # one GET per row: a 404 is never retried
    assert run["request_rate"] == 0.0  # no longer running
    assert run["finished_at"] is not None
    assert run["heartbeat_at"] is not None
    assert [job["id"] for job in listed] == [done["id"]]
    assert listed[0]["run"] == run


async def test_a_run_whose_worker_died_reads_interrupted(
    scrape_api: Serve, database_url: str, tmp_path: Path
) -> None:
    async with scrape_api(import_root=tmp_path, scrape_heartbeat_s=5) as api:
        ids = [
            (
                await api.post(
                    "/v1/scrape-runs", json={"source": "itunes", "genres": ["jazz"]}, headers=KEY
                )
            ).json()["id"]
            for _ in range(3)
        ]
        db = Database(database_url)
        try:
            async with db.session() as session:
                # As a SIGKILLed worker leaves them: running, one heartbeat 20 s old, one fresh.
                for job_id, beat in ((ids[0], 20), (ids[1], 1)):
                    session.add(
                        ScrapeRun(
                            source="itunes",
                            status="running",
                            job_id=job_id,
                            requests=40,
                            request_rate=2.5,
                            heartbeat_at=utcnow() - timedelta(seconds=beat),
                        )
                    )
        finally:
            await db.aclose()
        dead, alive, waiting = [(await api.get(f"/v1/scrape-runs/{i}")).json() for i in ids]
        page = (await api.get("/v1/scrape-runs", params={"limit": 2})).json()
        older = (await api.get("/v1/scrape-runs", params={"before": ids[1]})).json()

    assert (dead["run"]["status"], dead["run"]["request_rate"]) == ("interrupted", 0.0)
    assert (alive["run"]["status"], alive["run"]["request_rate"]) == ("running", 2.5)
    assert dead["run"]["requests"] == alive["run"]["requests"] == 40
    assert waiting["run"] is None
    assert [job["id"] for job in page] == [ids[2], ids[1]]
    assert [job["id"] for job in older] == [ids[0]]
