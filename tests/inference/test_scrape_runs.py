"""``POST /v1/scrape-runs`` refuses up front what a scraper worker could not do: 422 at once,
nothing queued, for an unknown source, missing credentials or a missing file."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from support import make_settings

from sleeve_common.db import Database
from sleeve_common.models import Job
from sleeve_inference.app import create_app

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

    async with scrape_api() as api:
        response = await api.post("/v1/scrape-runs", json=filled, headers=KEY)

    status, code, said = error_of(response)
    assert (status, code) == (422, "invalid_request")
    assert said.startswith(message.replace("{tmp}", str(tmp_path)))
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

    async with scrape_api(**CREDENTIALS) as api:
        answers = [await api.post("/v1/scrape-runs", json=b, headers=KEY) for b in bodies]

    assert [a.status_code for a in answers] == [202] * len(bodies), [a.text for a in answers]
    assert await queued_jobs(database_url) == len(bodies)


async def test_the_key_is_checked_before_the_request(scrape_api: Serve) -> None:
    async with scrape_api() as api:
        response = await api.post("/v1/scrape-runs", json={"source": "spotify"})

    assert error_of(response)[:2] == (401, "unauthorized")
