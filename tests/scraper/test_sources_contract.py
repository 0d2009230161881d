"""One contract, every source: the folder (a folder of files, and a manifest of URLs),
iTunes, Deezer, MusicBrainz, Spotify, Bandcamp's TSV and MuMu's CSV.

Each source scrapes two genres from its own material (a folder of kit covers, a fake API with
covers on the fake CDN or the fake Cover Art Archive, or a label file cut from the real one
and pointed at the fakes) and must: yield exactly the asked genres and per-genre counts; add
nothing and lose nothing on a re-run; resume from a saved cursor after a crash to the same
rows as an uninterrupted run; record failed covers with their reasons. Every clause runs on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sleeve_common.db import Database
from sleeve_common.models import Album, ScrapeRun
from sleeve_common.payloads import SOURCES, ScrapeRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime
from sleeve_scraper import sources
from sleeve_scraper.scrape import run_scrape

from .conftest import Sleeps
from .fakes import (
    FakeCdn,
    FakeCoverArtArchive,
    FakeDeezer,
    FakeItunes,
    FakeMusicBrainz,
    FakeSpotify,
    unique_covers,
    write_bandcamp_tsv,
    write_mumu_csv,
)

PER_GENRE = 5


class Interrupted(Exception):
    """Stands in for a crash in the middle of a run."""


@dataclass
class Kit:
    """A source with material to scrape and ways to spoil it."""

    name: str
    genres: tuple[str, str]
    expected: Callable[[str], list[str]]  # a genre's source ids, in the order yielded
    break_cover: Callable[[str], str]  # spoil this source id's bytes; the reason to expect
    lose_cover: Callable[[str], str]  # make this source id's cover unfetchable; the reason
    downloads: Callable[[str], int] | None  # cover downloads of a source id so far
    path: str | None = None

    def request(self, **fields: Any) -> ScrapeRequest:
        return ScrapeRequest(
            source=self.name, path=self.path, genres=self.genres, per_genre=PER_GENRE, **fields
        )


def folder_kit(root: Path) -> Kit:
    covers = iter(unique_covers())
    files: dict[str, list[str]] = {}
    for folder in ("Country", "Rock"):
        (root / folder).mkdir(parents=True)
        for n in range(PER_GENRE + 2):
            target = root / folder / f"{n:02d}.jpg"
            shutil.copyfile(next(covers), target)
            files.setdefault(folder.lower(), []).append(str(target.resolve()))

    def break_cover(source_id: str) -> str:
        data = Path(source_id).read_bytes()
        Path(source_id).write_bytes(data[: len(data) // 2])
        return "corrupt image"

    def lose_cover(source_id: str) -> str:
        Path(source_id).write_bytes(b"")
        return "empty file"

    return Kit(
        name="folder",
        genres=("country", "rock"),
        expected=lambda genre: files[genre][:PER_GENRE],
        break_cover=break_cover,
        lose_cover=lose_cover,
        downloads=None,
        path=str(root),
    )


def _cdn_downloads(cdn: FakeCdn, token_of: Callable[[str], str]) -> Callable[[str], int]:
    return lambda source_id: sum(f"/{token_of(source_id)}/" in path for path in cdn.paths())


def _spoilers(
    cdn: FakeCdn, token_of: Callable[[str], str]
) -> tuple[Callable[[str], str], Callable[[str], str]]:
    def break_cover(source_id: str) -> str:
        token = token_of(source_id)
        cdn.files[token] = cdn.files[token][:1500]
        return "corrupt image"

    def lose_cover(source_id: str) -> str:
        del cdn.files[token_of(source_id)]
        return "cover download failed: HTTP 404"

    return break_cover, lose_cover


def itunes_kit(itunes: FakeItunes) -> Kit:
    albums = {str(a.collection_id): a for feed in itunes.feeds.values() for a in feed}
    albums.update({str(a.collection_id): a for a in itunes.searchable})
    jazz = [*itunes.feeds["11"], *(a for a in itunes.searchable if a.genre_id == "11")]
    order = {
        "jazz": list(dict.fromkeys(str(a.collection_id) for a in jazz)),
        "metal": [str(a.collection_id) for a in itunes.feeds["1153"]],
    }

    def token_of(source_id: str) -> str:
        return albums[source_id].token

    break_cover, lose_cover = _spoilers(itunes.cdn, token_of)
    return Kit(
        name="itunes",
        genres=("jazz", "metal"),
        expected=lambda genre: order[genre][:PER_GENRE],
        break_cover=break_cover,
        lose_cover=lose_cover,
        downloads=_cdn_downloads(itunes.cdn, token_of),
    )


def deezer_kit(deezer: FakeDeezer) -> Kit:
    def token_of(source_id: str) -> str:
        return deezer.catalogue[int(source_id)].token

    break_cover, lose_cover = _spoilers(deezer.cdn, token_of)
    charts = {"jazz": deezer.charts[129], "metal": deezer.charts[464]}
    return Kit(
        name="deezer",
        genres=("jazz", "metal"),
        expected=lambda genre: [str(a.id) for a in charts[genre][:PER_GENRE]],
        break_cover=break_cover,
        lose_cover=lose_cover,
        downloads=_cdn_downloads(deezer.cdn, token_of),
    )


def _archive_spoilers(
    coverart: FakeCoverArtArchive,
) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """Spoil a release group's cover on the data node, or take its art off the archive."""

    def break_cover(mbid: str) -> str:
        release = coverart.art[mbid]
        coverart.cdn.files[release] = coverart.cdn.files[release][:1500]
        return "corrupt image"

    def lose_cover(mbid: str) -> str:
        del coverart.art[mbid]
        return "cover download failed: HTTP 404"

    return break_cover, lose_cover


def musicbrainz_kit(musicbrainz: FakeMusicBrainz) -> Kit:
    albums = [g for g in musicbrainz.groups if g.primary_type == "Album"]
    order = {
        "jazz": [g.mbid for g in albums if ("jazz", 4) in g.tags],
        "metal": [g.mbid for g in albums if ("metal", 5) in g.tags],
    }
    break_cover, lose_cover = _archive_spoilers(musicbrainz.coverart)
    return Kit(
        name="musicbrainz",
        genres=("jazz", "metal"),
        expected=lambda genre: order[genre][:PER_GENRE],
        break_cover=break_cover,
        lose_cover=lose_cover,
        downloads=musicbrainz.coverart.downloads,
    )


def spotify_kit(spotify: FakeSpotify) -> Kit:
    albums = {a.id: a for found in spotify.searches.values() for a in found}
    order = {
        genre: [a.id for a in spotify.searches[genre] if a.album_type == "album"]
        for genre in ("jazz", "metal")
    }

    def token_of(source_id: str) -> str:
        return albums[source_id].token

    break_cover, lose_cover = _spoilers(spotify.cdn, token_of)
    return Kit(
        name="spotify",
        genres=("jazz", "metal"),
        expected=lambda genre: order[genre][:PER_GENRE],
        break_cover=break_cover,
        lose_cover=lose_cover,
        downloads=lambda sid: spotify.cdn.paths().count(f"/image/{token_of(sid)}"),
    )


def bandcamp_kit(path: Path, cdn: FakeCdn) -> Kit:
    lines = write_bandcamp_tsv(path, cdn, {"jazz": PER_GENRE + 2, "metal": PER_GENRE + 2})
    tokens = {line.source_id: line.token for line in lines}

    def token_of(source_id: str) -> str:
        return tokens[source_id]

    break_cover, lose_cover = _spoilers(cdn, token_of)
    return Kit(
        name="bandcamp-tsv",
        genres=("jazz", "metal"),
        expected=lambda genre: [x.source_id for x in lines if x.genre == genre][:PER_GENRE],
        break_cover=break_cover,
        lose_cover=lose_cover,
        downloads=lambda sid: sum(f"/img/{tokens[sid]}_" in p for p in cdn.paths()),
        path=str(path),
    )


def mumu_kit(path: Path, coverart: FakeCoverArtArchive) -> Kit:
    albums = write_mumu_csv(path, coverart, {"Jazz": PER_GENRE + 2, "Metal": PER_GENRE + 2})
    break_cover, lose_cover = _archive_spoilers(coverart)
    return Kit(
        name="mumu-csv",
        genres=("jazz", "metal"),
        expected=lambda genre: [a.mbid for a in albums if a.genre.lower() == genre][:PER_GENRE],
        break_cover=break_cover,
        lose_cover=lose_cover,
        downloads=coverart.downloads,
        path=str(path),
    )


def manifest_kit(path: Path, cdn: FakeCdn) -> Kit:
    """The folder source reading a ``path_or_url,genre`` manifest of URLs on the fake CDN."""
    covers = iter(unique_covers(300)[240:270])
    rows: dict[str, list[str]] = {}
    lines = ["path_or_url,genre"]
    for n in range(PER_GENRE + 2):
        for raw in ("Country", "Rock"):
            token = f"mf{raw.lower()}{n}"
            cdn.add(token, next(covers))
            rows.setdefault(raw.lower(), []).append(cdn.file_url(token))
            lines.append(f"{cdn.file_url(token)},{raw}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def token_of(source_id: str) -> str:
        return source_id.rsplit("/", 1)[1].removesuffix(".jpg")

    break_cover, lose_cover = _spoilers(cdn, token_of)
    return Kit(
        name="folder",
        genres=("country", "rock"),
        expected=lambda genre: rows[genre][:PER_GENRE],
        break_cover=break_cover,
        lose_cover=lose_cover,
        downloads=lambda sid: cdn.paths().count(f"/files/{token_of(sid)}.jpg"),
        path=str(path),
    )


@dataclass
class Fakes:
    tmp_path: Path
    itunes: FakeItunes
    deezer: FakeDeezer
    musicbrainz: FakeMusicBrainz
    spotify: FakeSpotify


KITS: dict[str, Callable[[Fakes], Kit]] = {
    "folder": lambda f: folder_kit(f.tmp_path / "covers"),
    "folder-manifest": lambda f: manifest_kit(f.tmp_path / "covers.csv", f.itunes.cdn),
    "itunes": lambda f: itunes_kit(f.itunes),
    "deezer": lambda f: deezer_kit(f.deezer),
    "musicbrainz": lambda f: musicbrainz_kit(f.musicbrainz),
    "spotify": lambda f: spotify_kit(f.spotify),
    "bandcamp-tsv": lambda f: bandcamp_kit(f.tmp_path / "links.tsv", f.itunes.cdn),
    "mumu-csv": lambda f: mumu_kit(f.tmp_path / "mumu.csv", f.musicbrainz.coverart),
}


@pytest.fixture(params=sorted(KITS))
def kit(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    itunes: FakeItunes,
    deezer: FakeDeezer,
    musicbrainz: FakeMusicBrainz,
    spotify: FakeSpotify,
) -> Kit:
    return KITS[request.param](Fakes(tmp_path, itunes, deezer, musicbrainz, spotify))


async def albums_of(db: Database) -> list[Album]:
    async with db.session() as session:
        return list((await session.execute(select(Album).order_by(Album.id))).scalars())


async def runs_of(db: Database) -> list[ScrapeRun]:
    async with db.session() as session:
        return list((await session.execute(select(ScrapeRun).order_by(ScrapeRun.id))).scalars())


def by_genre(albums: list[Album]) -> dict[str, list[str]]:
    """Each label's genre → the source ids carrying it, in insertion order."""
    out: dict[str, list[str]] = {}
    for album in albums:
        for label in album.labels:
            out.setdefault(label.genre, []).append(album.source_id)
    return out


def snapshot(albums: list[Album]) -> set[tuple[Any, ...]]:
    return {
        (
            a.source,
            a.source_id,
            a.status,
            a.reject_reason,
            a.cover_key,
            a.content_sha256,
            frozenset((lab.genre, lab.raw_genre, lab.provenance) for lab in a.labels),
        )
        for a in albums
    }


def test_the_api_lists_exactly_the_registrys_sources() -> None:
    assert sources.names() == tuple(sorted(SOURCES))
    assert set(SOURCES) == set(ScrapeRequest.model_json_schema()["properties"]["source"]["enum"])


def test_the_contract_runs_over_every_implemented_source() -> None:
    named = {name.removesuffix("-manifest") for name in KITS}
    assert named == set(sources.names()), "give every implemented source a kit here"


async def test_yields_the_asked_genres_and_per_genre_counts(
    kit: Kit, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    run_id, counters = await run_scrape(
        api_runtime, kit.request(), on_progress=silent_progress, sleep=sleeps
    )

    total = 2 * PER_GENRE
    assert (counters.seen, counters.added, counters.duplicates, counters.rejected) == (
        total,
        total,
        0,
        0,
    )
    albums = await albums_of(api_runtime.db)
    assert by_genre(albums) == {genre: kit.expected(genre) for genre in kit.genres}
    assert {a.source for a in albums} == {kit.name}
    assert all(a.status == "accepted" and a.scrape_run_id == run_id for a in albums)
    stored = await api_runtime.store.list("covers/")
    assert sorted(stored) == sorted(str(a.cover_key) for a in albums)
    assert all(label.provenance.startswith(f"{kit.name}:") for a in albums for label in a.labels)
    [run] = await runs_of(api_runtime.db)
    assert (run.status, run.seen, run.added) == ("succeeded", total, total)
    assert sleeps.calls == []


async def test_a_rerun_adds_nothing_and_loses_nothing(
    kit: Kit, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    kit.lose_cover(kit.expected(kit.genres[0])[1])
    _, first = await run_scrape(
        api_runtime, kit.request(), on_progress=silent_progress, sleep=sleeps
    )
    before = snapshot(await albums_of(api_runtime.db))
    stored = await api_runtime.store.list("covers/")
    downloads = (
        {sid: kit.downloads(sid) for g in kit.genres for sid in kit.expected(g)}
        if kit.downloads
        else {}
    )

    _, second = await run_scrape(
        api_runtime, kit.request(), on_progress=silent_progress, sleep=sleeps
    )

    assert (first.seen, first.added, first.rejected) == (2 * PER_GENRE, 2 * PER_GENRE - 1, 1)
    assert (second.seen, second.added, second.duplicates, second.rejected) == (
        first.seen,
        0,
        first.seen,
        0,
    )
    assert snapshot(await albums_of(api_runtime.db)) == before
    assert await api_runtime.store.list("covers/") == stored
    if kit.downloads:  # nothing already recorded is downloaded again
        assert {sid: kit.downloads(sid) for sid in downloads} == downloads


async def test_resumes_from_the_cursor_to_the_rows_of_an_uninterrupted_run(
    kit: Kit, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    calls = 0

    async def crash_on_fourth(fraction: float, message: str, **_: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise Interrupted("worker lost")

    with pytest.raises(Interrupted):
        await run_scrape(api_runtime, kit.request(), on_progress=crash_on_fourth, sleep=sleeps)

    [failed] = await runs_of(api_runtime.db)
    assert (failed.status, failed.seen, failed.added) == ("failed", 4, 4)
    assert failed.cursor
    done_before = [a.source_id for a in await albums_of(api_runtime.db)]
    assert len(done_before) == 4

    run_id, counters = await run_scrape(
        api_runtime, kit.request(resume=failed.id), on_progress=silent_progress, sleep=sleeps
    )

    total = 2 * PER_GENRE
    assert run_id == failed.id
    assert (counters.seen, counters.added, counters.duplicates, counters.rejected) == (
        total,
        total,
        0,
        0,
    )
    albums = await albums_of(api_runtime.db)
    assert by_genre(albums) == {genre: kit.expected(genre) for genre in kit.genres}
    [run] = await runs_of(api_runtime.db)
    assert (run.status, run.seen, run.added, run.error) == ("succeeded", total, total, None)
    if kit.downloads:  # covers stored before the crash are not fetched again
        assert all(kit.downloads(sid) == 1 for sid in done_before)


async def test_failed_covers_are_recorded_with_their_reasons(
    kit: Kit, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    first, second = kit.genres
    broken = kit.expected(first)[0]
    lost = kit.expected(second)[-1]
    broken_reason = kit.break_cover(broken)
    lost_reason = kit.lose_cover(lost)

    _, counters = await run_scrape(
        api_runtime, kit.request(), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added, counters.rejected) == (
        2 * PER_GENRE,
        2 * PER_GENRE - 2,
        2,
    )
    rejected = {a.source_id: a for a in await albums_of(api_runtime.db) if a.status == "rejected"}
    assert set(rejected) == {broken, lost}
    assert str(rejected[broken].reject_reason).startswith(broken_reason)
    assert rejected[lost].reject_reason == lost_reason
    assert [lab.genre for lab in rejected[broken].labels] == [first]
    assert [lab.genre for lab in rejected[lost].labels] == [second]
    assert all(a.cover_key is None for a in rejected.values())
    assert len(await api_runtime.store.list("covers/")) == 2 * PER_GENRE - 2
