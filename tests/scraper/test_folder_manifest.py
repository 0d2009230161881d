"""The folder source reading a ``path_or_url,genre`` CSV manifest: the kit's discogs5 index
read whole, local paths beside the manifest, URLs downloaded, malformed rows refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from support import DISCOGS5, make_settings

from sleeve_common.models import Album, ScrapeRun
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.http import HttpClient
from sleeve_scraper.scrape import run_scrape
from sleeve_scraper.sources import SourceContext, build_source

from .conftest import Sleeps
from .fakes import FakeCdn, unique_covers

DISCOGS5_INDEX = DISCOGS5.parent / "discogs5-partial-index.csv"

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def manifest_request(path: Path, *genres: str, **fields: object) -> ScrapeRequest:
    return ScrapeRequest(source="folder", path=str(path), genres=genres or None, **fields)  # type: ignore[arg-type]


async def albums_of(runtime: Runtime) -> list[Album]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(Album).order_by(Album.id))).scalars())


@pytest.mark.parametrize(
    ("genres", "per_genre", "total"),
    [((), None, 2_480), (("hiphop",), None, 496), (("rock", "pop"), 10, 20)],
)
async def test_the_kits_discogs5_index_is_read_whole(
    tmp_path: Path, genres: tuple[str, ...], per_genre: int | None, total: int
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    request = manifest_request(DISCOGS5_INDEX, *genres, per_genre=per_genre)

    async with HttpClient.from_settings(settings) as http:
        source = build_source(SourceContext(request=request, settings=settings, http=http))
        assert sum((await source.plan()).values()) == total


@sqlite_only
async def test_a_manifest_of_local_paths_and_urls(
    api_runtime: Runtime, cdn: FakeCdn, sleeps: Sleeps, tmp_path: Path
) -> None:
    # The discogs5 index names its files Album_Covers/<Genre>/<file>, relative to its folder.
    (tmp_path / "Album_Covers").symlink_to(DISCOGS5, target_is_directory=True)
    kit_lines = DISCOGS5_INDEX.read_text().splitlines()
    country = [line for line in kit_lines if '"Country"' in line][:2]
    hiphop = [line for line in kit_lines if '"HipHop"' in line][:1]
    cdn.add("remote1", unique_covers(300)[270])
    manifest = tmp_path / "index.csv"
    manifest.write_text(
        "\n".join(
            [
                kit_lines[0],  # "File_path","Genre"
                *country,
                *hiphop,
                '"Album_Covers/Country/missing.jpg","Country"',
                f"{cdn.file_url('remote1')},Hip-Hop",
                f"{cdn.file_url('gone')},Rock",
            ]
        )
        + "\n"
    )

    _, counters = await run_scrape(
        api_runtime, manifest_request(manifest), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added, counters.rejected) == (6, 4, 2)
    albums = await albums_of(api_runtime)
    first = country[0].split(",")[0].strip('"')
    assert albums[0].source_id == str((DISCOGS5 / first.split("/", 1)[1]).resolve())
    assert [(lab.genre, lab.raw_genre, lab.provenance) for lab in albums[0].labels] == [
        ("country", "Country", f"folder:index.csv:{first}")
    ]
    by_id = {a.source_id: a for a in albums}
    remote = by_id[cdn.file_url("remote1")]
    assert (remote.status, [lab.genre for lab in remote.labels]) == ("accepted", ["hiphop"])
    reasons = sorted(str(a.reject_reason) for a in albums if a.status == "rejected")
    assert reasons == ["cover download failed: HTTP 404", "file not found"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("path,genre\ncovers/a.jpg\n", "line 2: expected path_or_url,genre"),
        ("covers/a.jpg,Rock\n,Rock\n", "line 2: empty path_or_url"),
        ("covers/a.jpg,!!!\n", "line 1: '!!!' is not a genre name"),
    ],
)
@sqlite_only
async def test_a_malformed_manifest_fails_before_the_run_naming_the_line(
    runtime: Runtime, tmp_path: Path, content: str, problem: str
) -> None:
    manifest = tmp_path / "covers.csv"
    manifest.write_text(content)

    with pytest.raises(SourceError) as caught:
        await run_scrape(runtime, manifest_request(manifest), on_progress=silent_progress)

    assert str(caught.value) == f"{manifest.resolve()}, {problem}"
    async with runtime.db.session() as session:
        assert list((await session.execute(select(ScrapeRun))).scalars()) == []


@sqlite_only
async def test_a_manifest_without_the_asked_genres_fails_clearly(
    runtime: Runtime, tmp_path: Path
) -> None:
    manifest = tmp_path / "covers.csv"
    shutil.copyfile(DISCOGS5_INDEX, manifest)

    with pytest.raises(SourceError, match=r"lists no covers of the genres \['jazz'\]"):
        await run_scrape(runtime, manifest_request(manifest, "jazz"), on_progress=silent_progress)
