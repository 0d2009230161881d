"""Scrapes queued over the API read files only inside ``SLEEVE_IMPORT_ROOT`` (issue 9, finding 10).

The API refuses the folder and label-file sources while no root is set, and any path that
leads outside it (``..``, a symlink, an absolute path); the scraper worker checks again, and
refuses each file of the folder and each manifest row that leads outside, unread. ``sleeve
scrape --path`` stays unrestricted. Real covers from the kit, the real API on its lifespan,
the real worker loop; SQLite (the checks are the same on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from support import DISCOGS5, make_settings

from sleeve_common.db import Database
from sleeve_common.jobs import JobQueue
from sleeve_common.models import Album, Job
from sleeve_common.payloads import ScrapeRequest, check_scrape_request
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import open_runtime
from sleeve_common.settings import Settings
from sleeve_common.worker import run_worker
from sleeve_inference.app import create_app
from sleeve_scraper.jobs import scrape_handler
from sleeve_scraper.scrape import run_scrape

from .inference.harness import API_KEY, LIMITS, serve

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

KEY = {"X-API-Key": API_KEY}
OUTSIDE_MESSAGE = "leads outside the import root"


def kit_files(count: int) -> list[Path]:
    """``count`` byte-unique covers from the kit (it holds cross-genre copies)."""
    seen: set[bytes] = set()
    picked: list[Path] = []
    for path in sorted((DISCOGS5 / "Rock").glob("*.jpg")):
        data = path.read_bytes()
        if data not in seen:
            seen.add(data)
            picked.append(path)
        if len(picked) == count:
            return picked
    raise AssertionError("the kit has too few covers")


class Tree:
    """``imports/`` (the root) with ``covers/rock/`` of two covers and one more cover in
    ``extra/``, and ``outside/`` beside it with a cover, label files and a secret that no API
    scrape may read."""

    def __init__(self, base: Path) -> None:
        inside_a, inside_b, extra, outside_cover = kit_files(4)
        self.root = base / "imports"
        self.covers = self.root / "covers"
        (self.covers / "rock").mkdir(parents=True)
        shutil.copy(inside_a, self.covers / "rock" / "a.jpg")
        shutil.copy(inside_b, self.covers / "rock" / "b.jpg")
        (self.root / "extra").mkdir()
        shutil.copy(extra, self.root / "extra" / "e.jpg")
        self.outside = base / "outside"
        self.outside.mkdir()
        shutil.copy(outside_cover, self.outside / "cover.jpg")
        (self.outside / "secret.txt").write_text("hunter2\n")
        (self.outside / "links.tsv").write_text("http://f1.bcbits.com/img/a1_2.jpg\tjazz/a2.jpg\n")
        (self.outside / "mumu.csv").write_text("amazon_id,album_mbid,genres\n")
        (self.outside / "rock").mkdir()
        shutil.copy(outside_cover, self.outside / "rock" / "cover.jpg")


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


Api = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def api_with(tmp_path: Path, database_url: str) -> Api:
    """The API (no model needed) on this test's database, with extra settings."""

    def start(**settings: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve(create_app(settings_for(tmp_path, database_url, **settings)))

    return start


def settings_for(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    return make_settings(tmp_path, database_url, api_key=API_KEY, **LIMITS, **overrides)


async def jobs_in(database_url: str) -> list[Job]:
    db = Database(database_url)
    try:
        async with db.session() as session:
            return list((await session.execute(select(Job).order_by(Job.id))).scalars())
    finally:
        await db.aclose()


async def albums_in(database_url: str) -> list[Album]:
    db = Database(database_url)
    try:
        async with db.session() as session:
            return list((await session.execute(select(Album).order_by(Album.id))).scalars())
    finally:
        await db.aclose()


async def run_queued_scrape(settings: Settings) -> None:
    """One queued scrape job through the scraper's real worker loop."""
    async with open_runtime(settings) as runtime:
        queue = JobQueue(runtime.db, lease_seconds=settings.job_lease_seconds)
        ran = await run_worker(
            queue,
            {"scrape": scrape_handler(runtime)},
            owner="test-scraper",
            poll_seconds=0.05,
            stop=asyncio.Event(),
            max_jobs=1,
        )
    assert ran == 1


async def queue_scrape(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/v1/scrape-runs", json=body, headers=KEY)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    message: str = error["message"]
    return message


@pytest.mark.parametrize(
    "body",
    [
        {"source": "folder", "path": "/etc"},
        {"source": "folder", "path": "{covers}"},
        {"source": "bandcamp-tsv", "path": "{outside}/links.tsv"},
        {"source": "mumu-csv", "path": "{outside}/mumu.csv"},
    ],
    ids=["folder-etc", "folder", "bandcamp-tsv", "mumu-csv"],
)
async def test_without_a_root_the_api_refuses_every_path_source(
    api_with: Api, database_url: str, tree: Tree, body: dict[str, str]
) -> None:
    filled = {k: v.format(covers=tree.covers, outside=tree.outside) for k, v in body.items()}
    async with api_with() as api:
        message = refusal(await api.post("/v1/scrape-runs", json=filled, headers=KEY))

    assert "SLEEVE_IMPORT_ROOT" in message
    assert f"the {body['source']} source reads files on the server" in message
    assert await jobs_in(database_url) == []
    assert await albums_in(database_url) == []


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("folder", "/etc"),
        ("folder", "{outside}"),
        ("folder", "{root}/../outside"),  # `..` out of an absolute path
        ("folder", "covers/../../outside"),  # `..` out of a relative one
        ("folder", "link-out"),  # a symlink in the root to a folder outside
        ("folder", "{root}/covers/rock/../../../outside/rock"),
        ("bandcamp-tsv", "../outside/links.tsv"),
        ("mumu-csv", "{outside}/mumu.csv"),
        ("mumu-csv", "mumu-link.csv"),  # a symlink in the root to a file outside
    ],
)
async def test_paths_outside_the_root_are_refused(
    api_with: Api, database_url: str, tree: Tree, source: str, path: str
) -> None:
    (tree.root / "link-out").symlink_to(tree.outside, target_is_directory=True)
    (tree.root / "mumu-link.csv").symlink_to(tree.outside / "mumu.csv")
    filled = path.format(root=tree.root, outside=tree.outside)

    async with api_with(import_root=tree.root) as api:
        message = refusal(
            await api.post("/v1/scrape-runs", json={"source": source, "path": filled}, headers=KEY)
        )

    assert OUTSIDE_MESSAGE in message
    if "link" in path:
        assert str(tree.outside) not in message  # where a link leads is not told
    assert await jobs_in(database_url) == []


@pytest.mark.parametrize(
    "path",
    [
        "covers\x00/../../etc",
        "\x00",
        "x" * 300,  # one name longer than any filesystem allows
        "covers/" + "y" * 4000,
        "z" * 5000,  # longer than the schema allows
        "a/" * 2048,
        "",
    ],
    ids=["nul-inside", "nul", "long-name", "long-path", "over-max-length", "deep", "empty"],
)
@pytest.mark.parametrize("root", [True, False], ids=["root", "no-root"])
async def test_hostile_path_strings_get_422(
    api_with: Api, database_url: str, tree: Tree, path: str, root: bool
) -> None:
    settings = {"import_root": tree.root} if root else {}
    async with api_with(**settings) as api:
        for source in ("folder", "bandcamp-tsv", "mumu-csv"):
            response = await api.post(
                "/v1/scrape-runs", json={"source": source, "path": path}, headers=KEY
            )
            refusal(response)
            assert len(response.content) < 10_000  # no echo of the path several times over

    assert await jobs_in(database_url) == []


async def test_a_folder_inside_the_root_is_queued_and_imported_without_what_leads_out(
    api_with: Api, tmp_path: Path, database_url: str, tree: Tree
) -> None:
    # Links in the genre folder: one to a cover outside the root, one to a cover inside.
    (tree.covers / "rock" / "c.jpg").symlink_to(tree.outside / "cover.jpg")
    (tree.covers / "rock" / "d.jpg").symlink_to(tree.root / "extra" / "e.jpg")

    async with api_with(import_root=tree.root) as api:
        accepted = await queue_scrape(api, {"source": "folder", "path": "covers"})
        [job] = await jobs_in(database_url)
        assert job.payload["path"] == str(tree.covers.resolve())
        assert job.payload["import_root"] == str(tree.root.resolve())

        await run_queued_scrape(settings_for(tmp_path, database_url, import_root=tree.root))
        view = (await api.get(accepted["url"])).json()

    assert view["status"] == "succeeded", view
    albums = {Path(a.source_id).name: a for a in await albums_in(database_url)}
    assert [albums[name].status for name in ("a.jpg", "b.jpg", "d.jpg")] == ["accepted"] * 3
    assert albums["c.jpg"].status == "rejected"
    assert OUTSIDE_MESSAGE in (albums["c.jpg"].reject_reason or "")
    assert albums["c.jpg"].content_sha256 is None  # never read


async def test_manifest_rows_that_lead_outside_are_refused_one_by_one(
    api_with: Api, tmp_path: Path, database_url: str, tree: Tree
) -> None:
    (tree.root / "link.jpg").symlink_to(tree.outside / "cover.jpg")
    manifest = tree.root / "index.csv"
    manifest.write_text(
        "\n".join(
            [
                "path,genre",
                "covers/rock/a.jpg,Rock",
                "../outside/cover.jpg,Rock",
                f"{tree.outside / 'secret.txt'},Rock",
                "link.jpg,Rock",
                "/etc/hostname,Rock",
            ]
        )
        + "\n"
    )

    async with api_with(import_root=tree.root) as api:
        accepted = await queue_scrape(api, {"source": "folder", "path": "index.csv"})
        await run_queued_scrape(settings_for(tmp_path, database_url, import_root=tree.root))
        view = (await api.get(accepted["url"])).json()

    assert view["status"] == "succeeded", view
    albums = await albums_in(database_url)
    by_id = {a.source_id: a for a in albums}
    assert by_id[str(tree.covers / "rock" / "a.jpg")].status == "accepted"
    refused = [a for a in albums if a.status == "rejected"]
    assert len(refused) == 4
    assert all(OUTSIDE_MESSAGE in (a.reject_reason or "") for a in refused)
    assert all(a.content_sha256 is None for a in refused)
    assert not any(str(tree.outside) in a.source_id for a in refused if "link" in a.source_id)


async def test_a_genre_folder_that_leads_outside_fails_the_run_unread(
    api_with: Api, tmp_path: Path, database_url: str, tree: Tree
) -> None:
    (tree.covers / "metal").symlink_to(tree.outside / "rock", target_is_directory=True)

    async with api_with(import_root=tree.root) as api:
        accepted = await queue_scrape(api, {"source": "folder", "path": "covers"})
        await run_queued_scrape(settings_for(tmp_path, database_url, import_root=tree.root))
        view = (await api.get(accepted["url"])).json()

    assert view["status"] == "failed"
    assert "sub-folder 'metal'" in view["error"]
    assert OUTSIDE_MESSAGE in view["error"]
    assert await albums_in(database_url) == []


async def test_the_worker_checks_again_when_the_folder_became_a_link_out(
    api_with: Api, tmp_path: Path, database_url: str, tree: Tree
) -> None:
    async with api_with(import_root=tree.root) as api:
        accepted = await queue_scrape(api, {"source": "folder", "path": "covers"})
        # Between the API's check and the worker's: the folder is swapped for a link out.
        shutil.rmtree(tree.covers)
        tree.covers.symlink_to(tree.outside, target_is_directory=True)
        await run_queued_scrape(settings_for(tmp_path, database_url, import_root=tree.root))
        view = (await api.get(accepted["url"])).json()

    assert view["status"] == "failed"
    assert OUTSIDE_MESSAGE in view["error"]
    assert await albums_in(database_url) == []


async def test_the_command_line_is_not_bound_by_the_root(
    tmp_path: Path, database_url: str, tree: Tree
) -> None:
    """``sleeve scrape --path`` builds its request without a root: the person at the shell
    has the files already, so a folder outside the root, and links out of it, are read."""
    (tree.outside / "rock" / "link.jpg").symlink_to(tree.covers / "rock" / "a.jpg")
    settings = settings_for(tmp_path, database_url, import_root=tree.root)
    request = ScrapeRequest(source="folder", path=str(tree.outside))
    check_scrape_request(request, settings)

    async with open_runtime(settings) as runtime:
        _, counters = await run_scrape(runtime, request, on_progress=silent_progress)

    assert (counters.added, counters.rejected) == (2, 0)


async def test_an_unreadable_root_is_a_clear_422(
    api_with: Api, database_url: str, tmp_path: Path
) -> None:
    async with api_with(import_root=tmp_path / "nowhere") as api:
        message = refusal(
            await api.post(
                "/v1/scrape-runs", json={"source": "folder", "path": "covers"}, headers=KEY
            )
        )

    assert message == f"SLEEVE_IMPORT_ROOT {tmp_path / 'nowhere'} is not a folder"
    assert await jobs_in(database_url) == []
