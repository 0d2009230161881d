"""The label-file sources: Bandcamp's ``URL<TAB>genre/file.jpg`` TSV and MuMu's CSV of
MusicBrainz release groups, on the real files' format (the kit's files are parsed whole; the
scrapes read small files cut from them, pointed at the local fakes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support import make_settings

from sleeve_common.exceptions import InvalidRequest
from sleeve_common.models import Album, ScrapeRun
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.http import HttpClient
from sleeve_scraper.scrape import run_scrape
from sleeve_scraper.sources import SourceContext, build_source
from sleeve_scraper.sources.coverart import front_cover_url

from .conftest import Sleeps, with_settings
from .fakes import (
    BANDCAMP_LINKS,
    MUMU_CSV,
    FakeCdn,
    FakeCoverArtArchive,
    FakeMusicBrainz,
    slow,
    write_bandcamp_tsv,
    write_mumu_csv,
)

# The contract suite covers PostgreSQL; these tests of the sources' own quirks use SQLite.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def file_request(source: str, path: Path, *genres: str, **fields: Any) -> ScrapeRequest:
    return ScrapeRequest(source=source, path=str(path), genres=genres or None, **fields)


async def planned(settings: Settings, request: ScrapeRequest) -> int | None:
    """How many items the source would yield, read from its file without any request."""
    async with HttpClient.from_settings(settings) as http:
        source = build_source(SourceContext(request=request, settings=settings, http=http))
        return sum(n or 0 for n in (await source.plan()).values())


async def albums_of(runtime: Runtime) -> list[Album]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(Album).order_by(Album.id))).scalars())


async def runs_of(runtime: Runtime) -> list[ScrapeRun]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(ScrapeRun))).scalars())


# --- the real files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("genres", "per_genre", "total"),
    [
        ((), None, 10_000),  # ten folders, every one mapped (ambient and dubstep: electronic)
        (("electronic",), None, 2_000),
        (("hiphop", "rnb"), None, 2_000),  # hiphop_rap, soul
        (("jazz", "punk"), 7, 14),
    ],
)
async def test_the_real_bandcamp_file_is_read_whole(
    tmp_path: Path, genres: tuple[str, ...], per_genre: int | None, total: int
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    request = file_request("bandcamp-tsv", BANDCAMP_LINKS, *genres, per_genre=per_genre)

    assert await planned(settings, request) == total


@pytest.mark.parametrize(
    ("genres", "total"),
    [
        ((), 2_321 - 20 - 3),  # every album but New Age (20) and Gospel (3), no Sleeve genres
        (("rock",), 391 + 260),  # Rock and Alternative Rock
        (("electronic", "hiphop"), 518 + 103),
    ],
)
async def test_the_real_mumu_file_is_read_whole_one_album_per_release_group(
    tmp_path: Path, genres: tuple[str, ...], total: int
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")

    assert await planned(settings, file_request("mumu-csv", MUMU_CSV, *genres)) == total


# --- Bandcamp -------------------------------------------------------------------------------


@sqlite_only
async def test_bandcamp_lines_give_genre_provenance_and_cover_url(
    cdn: FakeCdn, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path
) -> None:
    tsv = tmp_path / "links.tsv"
    lines = write_bandcamp_tsv(tsv, cdn, {"hiphop_rap": 2, "soul": 2, "dubstep": 1})

    _, counters = await run_scrape(
        api_runtime,
        file_request("bandcamp-tsv", tsv, "hiphop", "rnb", "electronic"),
        on_progress=silent_progress,
        sleep=sleeps,
    )

    assert (counters.seen, counters.added) == (5, 5)
    albums = {a.source_id: a for a in await albums_of(api_runtime)}
    assert set(albums) == {line.source_id for line in lines}
    for line in lines:
        album = albums[line.source_id]
        assert album.cover_url == cdn.bandcamp_url(line.token)
        [label] = album.labels
        saved_as = line.line.split("\t")[1]
        assert (label.raw_genre, label.provenance) == (line.genre, f"bandcamp-tsv:{saved_as}")
    assert {lab.genre for a in albums.values() for lab in a.labels} == {
        "hiphop",
        "rnb",
        "electronic",
    }


@sqlite_only
@pytest.mark.parametrize("policy", ["drop", "keep"])
async def test_a_bandcamp_file_under_two_genre_folders_follows_the_multi_genre_setting(
    cdn: FakeCdn, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path, policy: str
) -> None:
    runtime = with_settings(api_runtime, scrape_multi_genre=policy)
    tsv = tmp_path / "links.tsv"
    [jazz, metal] = write_bandcamp_tsv(tsv, cdn, {"jazz": 1, "metal": 1})
    url = jazz.line.split("\t")[0]
    with tsv.open("a") as out:
        out.write(f"{url}\tpunk/{jazz.source_id}.jpg\n")  # the same file under another folder

    _, counters = await run_scrape(
        runtime, file_request("bandcamp-tsv", tsv), on_progress=silent_progress, sleep=sleeps
    )

    [album] = [a for a in await albums_of(runtime) if a.source_id == jazz.source_id]
    genres = sorted(lab.genre for lab in album.labels)
    if policy == "drop":
        assert (album.status, album.reject_reason) == ("rejected", "several genres: jazz, punk")
        # Rejected when listed under jazz; listed again under punk, it only gains that label.
        assert (counters.added, counters.rejected, counters.duplicates) == (1, 1, 1)
        assert genres == ["jazz", "punk"]
    else:
        assert album.status == "accepted"
        assert (counters.added, counters.duplicates) == (2, 1)
        assert genres == ["jazz", "punk"]
    assert metal.source_id in {a.source_id for a in await albums_of(runtime)}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("http://x/img/a1_2.jpg jazz/a1.jpg\n", "line 1: expected URL<TAB>genre/file.jpg"),
        (
            "http://x/a.jpg\tjazz/a1.jpg\n\nftp://x/b.jpg\tjazz/b.jpg\n",
            "line 3: 'ftp://x/b.jpg' is not an http(s) URL",
        ),
        ("http://x/a.jpg\ta1.jpg\n", "line 1: 'a1.jpg' is not genre/file.jpg"),
    ],
)
@sqlite_only
async def test_a_malformed_bandcamp_line_fails_before_the_run_naming_it(
    api_runtime: Runtime, tmp_path: Path, content: str, problem: str
) -> None:
    tsv = tmp_path / "links.tsv"
    tsv.write_text(content)

    with pytest.raises(SourceError) as caught:
        await run_scrape(
            api_runtime, file_request("bandcamp-tsv", tsv), on_progress=silent_progress
        )

    assert str(caught.value) == f"{tsv}, {problem}"
    assert await runs_of(api_runtime) == []


@sqlite_only
@pytest.mark.parametrize("source", ["bandcamp-tsv", "mumu-csv"])
async def test_a_missing_label_file_is_refused_up_front(
    api_runtime: Runtime, tmp_path: Path, source: str
) -> None:
    missing = tmp_path / "nowhere.txt"
    kind = "TSV file" if source == "bandcamp-tsv" else "CSV file"

    with pytest.raises(
        InvalidRequest, match=f"^the {source} source's {kind} {missing} does not exist$"
    ):
        await run_scrape(api_runtime, file_request(source, missing), on_progress=silent_progress)
    with pytest.raises(InvalidRequest, match="is not a file"):
        await run_scrape(api_runtime, file_request(source, tmp_path), on_progress=silent_progress)
    assert await runs_of(api_runtime) == []


@sqlite_only
async def test_an_unknown_genre_names_the_ones_the_file_source_knows(
    api_runtime: Runtime, tmp_path: Path, cdn: FakeCdn
) -> None:
    tsv = tmp_path / "links.tsv"
    write_bandcamp_tsv(tsv, cdn, {"jazz": 1})

    with pytest.raises(
        SourceError, match="the bandcamp-tsv source has no genre 'polka'; it knows electronic, folk"
    ):
        await run_scrape(
            api_runtime, file_request("bandcamp-tsv", tsv, "polka"), on_progress=silent_progress
        )


# --- MuMu -----------------------------------------------------------------------------------


@sqlite_only
async def test_mumu_albums_are_release_groups_with_covers_from_the_archive(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path
) -> None:
    coverart = musicbrainz.coverart
    csv_path = tmp_path / "mumu.csv"
    albums = write_mumu_csv(csv_path, coverart, {"Jazz": 2, "Rap & Hip-Hop": 2, "New Age": 1})
    assert any(a.tracks > 1 for a in albums)  # several track rows per album, as in the file

    _, counters = await run_scrape(
        api_runtime, file_request("mumu-csv", csv_path), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added) == (4, 4)  # New Age is no Sleeve genre: skipped
    stored = {a.source_id: a for a in await albums_of(api_runtime)}
    for album in albums:
        if album.genre == "New Age":
            assert album.mbid not in stored
            continue
        row = stored[album.mbid]
        assert row.cover_url == front_cover_url(coverart.base_url, album.mbid)
        [label] = row.labels
        assert label.raw_genre == album.genre
        assert label.provenance.startswith("mumu-csv:B")  # the Amazon id of the row
        assert coverart.downloads(album.mbid) == 1
    assert {lab.genre for a in stored.values() for lab in a.labels} == {"jazz", "hiphop"}
    assert len([p for p in coverart.cdn.paths() if "/items/mbid-" in p]) == 4  # both hops


@sqlite_only
async def test_mumu_rows_without_art_or_with_a_bad_id_are_rejected_with_reasons(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path
) -> None:
    coverart = musicbrainz.coverart
    csv_path = tmp_path / "mumu.csv"
    first, second, third = write_mumu_csv(csv_path, coverart, {"Metal": 3})
    del coverart.art[second.mbid]
    text = csv_path.read_text().replace(third.mbid, "not-a-release-group")
    csv_path.write_text(text)

    _, counters = await run_scrape(
        api_runtime, file_request("mumu-csv", csv_path), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.added, counters.rejected) == (1, 2)
    reasons = {a.source_id: a.reject_reason for a in await albums_of(api_runtime)}
    assert reasons == {
        first.mbid: None,
        second.mbid: "cover download failed: HTTP 404",
        "not-a-release-group": "not a MusicBrainz id: 'not-a-release-group'",
    }
    assert not coverart.paths("/release-group/not-a")  # never asked: the archive answers 400
    assert sleeps.calls == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "amazon_id,mbid,genre\nB1,x,Rock\n",
            "line 1: expected a header with album_mbid and genres",
        ),
        (
            "amazon_id,album_mbid,genres\nB1,0164b5ce-42f8-46bf-b140-61ecd2ed449e\n",
            "line 2: 2 columns, the header has 3",
        ),
        ("amazon_id,album_mbid,genres\nB1,,Rock\n", "line 2: empty album_mbid"),
    ],
)
@sqlite_only
async def test_a_malformed_mumu_file_fails_before_the_run_naming_the_line(
    api_runtime: Runtime, tmp_path: Path, content: str, problem: str
) -> None:
    csv_path = tmp_path / "mumu.csv"
    csv_path.write_text(content)

    with pytest.raises(SourceError) as caught:
        await run_scrape(
            api_runtime, file_request("mumu-csv", csv_path), on_progress=silent_progress
        )

    assert str(caught.value).startswith(f"{csv_path}, {problem}")
    assert await runs_of(api_runtime) == []


@sqlite_only
async def test_a_slow_archive_is_retried(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path
) -> None:
    coverart: FakeCoverArtArchive = musicbrainz.coverart
    runtime = with_settings(api_runtime, scrape_timeout_s=0.2)
    csv_path = tmp_path / "mumu.csv"
    write_mumu_csv(csv_path, coverart, {"Blues": 2})
    coverart.fail("/release-group/", slow(1.0))

    _, counters = await run_scrape(
        runtime, file_request("mumu-csv", csv_path), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.added, counters.rejected) == (2, 0)
    assert len(sleeps.calls) == 1
