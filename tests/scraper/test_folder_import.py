"""Importing a folder of real covers: dedupe, labels with provenance, rejects, resume.

Covers come from the discogs5 kit (read there, copied into ``tmp_path``); every test runs
on SQLite and on a real PostgreSQL through the ``runtime`` fixture.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import struct
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError
from sqlalchemy import select
from support import DISCOGS5, make_settings

from sleeve_common.db import Database
from sleeve_common.exceptions import InvalidRequest
from sleeve_common.genres import normalize_genre
from sleeve_common.models import Album, ScrapeRun
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime
from sleeve_common.store import ObjectStore, cover_key
from sleeve_scraper.exceptions import RunStateError, SourceError
from sleeve_scraper.scrape import run_scrape

GENRES = ("Country", "HipHop", "Rock")
MAX_COVER_BYTES = 64 * 1024
MAX_IMAGE_PIXELS = 100_000  # the kit's covers are 300x300 = 90,000 pixels


class Interrupted(Exception):
    """Stands in for a crash, a Ctrl-C or a lost worker in the middle of a run."""


@cache
def kit_covers() -> dict[str, tuple[Path, ...]]:
    """Six covers per kit genre, byte-unique across all genres (the kit has cross-genre copies)."""
    seen: set[str] = set()
    picked: dict[str, tuple[Path, ...]] = {}
    for folder in sorted(p for p in DISCOGS5.iterdir() if p.is_dir()):
        chosen: list[Path] = []
        for path in sorted(folder.glob("*.jpg")):
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            if sha not in seen:
                seen.add(sha)
                chosen.append(path)
            if len(chosen) == 6:
                break
        picked[folder.name] = tuple(chosen)
    return picked


def build_library(root: Path, *, per_genre: int = 4, genres: tuple[str, ...] = GENRES) -> Path:
    """``root/<Genre>/<kit file name>`` with ``per_genre`` real covers each."""
    for genre in genres:
        (root / genre).mkdir(parents=True, exist_ok=True)
        for path in kit_covers()[genre][:per_genre]:
            shutil.copyfile(path, root / genre / path.name)
    return root


def png(width: int, height: int) -> bytes:
    """A real, tiny PNG of the given size (one flat colour compresses to almost nothing)."""
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, format="PNG")
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A well-formed PNG header declaring ``width`` x ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_request(root: Path, **fields: Any) -> ScrapeRequest:
    return ScrapeRequest(source="folder", path=str(root), **fields)


async def all_albums(db: Database) -> list[Album]:
    async with db.session() as session:
        return list((await session.execute(select(Album).order_by(Album.id))).scalars())


async def all_runs(db: Database) -> list[ScrapeRun]:
    async with db.session() as session:
        return list((await session.execute(select(ScrapeRun).order_by(ScrapeRun.id))).scalars())


def snapshot(albums: list[Album]) -> set[tuple[Any, ...]]:
    """Everything an import decides about an album, labels included."""
    return {
        (
            a.id,
            a.content_sha256,
            a.status,
            a.reject_reason,
            a.cover_key,
            a.perceptual_hash,
            frozenset((lab.genre, lab.raw_genre, lab.provenance) for lab in a.labels),
        )
        for a in albums
    }


@pytest.fixture
def strict_runtime(runtime: Runtime, tmp_path: Path) -> Runtime:
    """The same database and store, with byte and pixel limits small enough to test."""
    settings = make_settings(
        tmp_path,
        runtime.settings.database_url,
        max_cover_bytes=MAX_COVER_BYTES,
        max_image_pixels=MAX_IMAGE_PIXELS,
    )
    return dataclasses.replace(runtime, settings=settings)


async def test_import_records_albums_labels_and_content_addressed_covers(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = build_library(tmp_path / "covers")
    nested = root / "Rock" / "1970s"
    nested.mkdir()
    shutil.copyfile(kit_covers()["Rock"][5], nested / "deep.jpg")
    messages: list[tuple[float, str]] = []

    async def record(fraction: float, message: str, **_: object) -> None:
        messages.append((fraction, message))

    run_id, counters = await run_scrape(runtime, folder_request(root), on_progress=record)

    assert (counters.seen, counters.added, counters.duplicates, counters.rejected) == (13, 13, 0, 0)
    assert messages[-1] == (1.0, f"run {run_id} done: 13 seen: 13 added, 0 duplicates, 0 rejected")
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.jpg"))}
    albums = await all_albums(runtime.db)
    assert len(albums) == 13
    by_provenance = {a.labels[0].provenance: a for a in albums}
    assert set(by_provenance) == {f"folder:{rel}" for rel in files}
    for rel, path in files.items():
        album = by_provenance[f"folder:{rel}"]
        raw_genre = rel.split("/")[0]
        assert [(lab.genre, lab.raw_genre) for lab in album.labels] == [
            (normalize_genre(raw_genre), raw_genre)
        ]
        assert album.status == "accepted"
        assert album.reject_reason is None
        assert album.scrape_run_id == run_id
        assert album.content_sha256 == sha256(path)
        assert album.cover_key == cover_key(sha256(path), "jpg")
        assert await runtime.store.exists(album.cover_key)
        assert await runtime.store.get(album.cover_key) == path.read_bytes()
        with Image.open(path) as image:
            assert (album.width, album.height) == image.size
        assert album.perceptual_hash is not None
        assert len(album.perceptual_hash) == 16
    assert sorted(await runtime.store.list("covers/")) == sorted(a.cover_key for a in albums)
    [run] = await all_runs(runtime.db)
    assert (run.id, run.status, run.error, run.source) == (run_id, "succeeded", None, "folder")
    assert (run.seen, run.added, run.duplicates, run.rejected) == (13, 13, 0, 0)
    assert run.cursor == {"files_done": 13}
    assert run.finished_at is not None


async def test_cross_genre_copy_is_one_album_with_two_labels(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = build_library(tmp_path / "covers", per_genre=2)
    shared = kit_covers()["Pop"][0]
    shutil.copyfile(shared, root / "Country" / "same-sleeve.jpg")
    shutil.copyfile(shared, root / "Rock" / "another-name.jpg")

    _, counters = await run_scrape(runtime, folder_request(root), on_progress=silent_progress)

    assert (counters.seen, counters.added, counters.duplicates, counters.rejected) == (8, 7, 1, 0)
    albums = await all_albums(runtime.db)
    assert len(albums) == 7
    [album] = [a for a in albums if a.content_sha256 == sha256(shared)]
    assert {(lab.genre, lab.raw_genre, lab.provenance) for lab in album.labels} == {
        ("country", "Country", "folder:Country/same-sleeve.jpg"),
        ("rock", "Rock", "folder:Rock/another-name.jpg"),
    }
    assert album.status == "accepted"
    assert len(await runtime.store.list("covers/")) == 7


async def test_hostile_files_are_rejected_with_reasons_and_the_import_goes_on(
    strict_runtime: Runtime, tmp_path: Path
) -> None:
    root = build_library(tmp_path / "covers", per_genre=3)
    # Lowercase names sort after the kit's "R-…" names: hostile files sit between good ones.
    country = root / "Country"
    real = kit_covers()["Country"][0].read_bytes()
    (country / "corrupt.jpg").write_bytes(real[: len(real) // 2])
    (country / "empty.jpg").write_bytes(b"")
    (country / "notes.jpg").write_text("tracklist: 1. intro 2. outro\n")
    huge = real + b"\x00" * (MAX_COVER_BYTES + 1 - len(real))  # a real JPEG, padded
    (country / "huge.jpg").write_bytes(huge)
    (country / "big.png").write_bytes(png(400, 400))
    (country / "bomb.png").write_bytes(png_bomb(100_000, 100_000))
    (country / "tiny.png").write_bytes(png(4, 4))
    (root / "Rock" / "zz-last.png").write_bytes(png(64, 64))

    _, counters = await run_scrape(
        strict_runtime, folder_request(root), on_progress=silent_progress
    )

    assert (counters.seen, counters.added, counters.duplicates, counters.rejected) == (17, 10, 0, 7)
    albums = await all_albums(strict_runtime.db)
    rejected = {a.labels[0].provenance: a for a in albums if a.status == "rejected"}
    reasons = {
        prov.removeprefix("folder:Country/"): a.reject_reason for prov, a in rejected.items()
    }
    assert reasons.keys() == {
        "corrupt.jpg",
        "empty.jpg",
        "notes.jpg",
        "huge.jpg",
        "big.png",
        "bomb.png",
        "tiny.png",
    }
    assert reasons["corrupt.jpg"].startswith("corrupt image: image file is truncated")
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["notes.jpg"] == "not a recognised image format"
    assert reasons["huge.jpg"] == f"file too large: {len(huge)} bytes (limit {MAX_COVER_BYTES})"
    assert reasons["big.png"] == f"image too large: 400x400 pixels (limit {MAX_IMAGE_PIXELS})"
    assert reasons["bomb.png"].startswith("image too large: ")
    assert "10000000000 pixels" in reasons["bomb.png"]
    assert reasons["tiny.png"] == "image too small: 4x4 pixels"
    for album in rejected.values():
        assert album.cover_key is None
        assert [lab.genre for lab in album.labels] == ["country"]
    accepted = [a for a in albums if a.status == "accepted"]
    assert len(accepted) == 10
    last = next(a for a in accepted if a.labels[0].provenance == "folder:Rock/zz-last.png")
    assert last.cover_key == cover_key(sha256(root / "Rock" / "zz-last.png"), "png")
    assert (last.width, last.height) == (64, 64)
    stored = await strict_runtime.store.list("covers/")
    assert sorted(stored) == sorted(a.cover_key for a in accepted)


async def test_second_import_of_the_same_folder_adds_nothing_and_loses_nothing(
    strict_runtime: Runtime, tmp_path: Path
) -> None:
    root = build_library(tmp_path / "covers", per_genre=3)
    shutil.copyfile(kit_covers()["Pop"][0], root / "Country" / "dup.jpg")
    shutil.copyfile(kit_covers()["Pop"][0], root / "Rock" / "dup.jpg")
    (root / "Rock" / "empty.jpg").write_bytes(b"")
    (root / "Rock" / "notes.jpg").write_text("not an image")
    (root / "Rock" / "huge.jpg").write_bytes(b"\xff" * (MAX_COVER_BYTES + 1))
    request = folder_request(root)

    _, first = await run_scrape(strict_runtime, request, on_progress=silent_progress)
    before = snapshot(await all_albums(strict_runtime.db))
    stored_before = await strict_runtime.store.list("covers/")
    _, second = await run_scrape(strict_runtime, request, on_progress=silent_progress)

    assert (first.seen, first.added, first.duplicates, first.rejected) == (14, 10, 1, 3)
    assert (second.seen, second.added, second.duplicates, second.rejected) == (14, 0, 14, 0)
    assert snapshot(await all_albums(strict_runtime.db)) == before
    assert sum(len(entry[-1]) for entry in before) == 14  # one label per file
    assert await strict_runtime.store.list("covers/") == stored_before
    assert [r.status for r in await all_runs(strict_runtime.db)] == ["succeeded", "succeeded"]


async def test_interrupted_run_resumes_where_it_stopped(runtime: Runtime, tmp_path: Path) -> None:
    root = build_library(tmp_path / "covers")
    shutil.copyfile(kit_covers()["Pop"][0], root / "Country" / "dup.jpg")
    shutil.copyfile(kit_covers()["Pop"][0], root / "Rock" / "dup.jpg")
    (root / "HipHop" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    calls = 0

    async def crash_on_sixth(fraction: float, message: str, **_: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 6:
            raise Interrupted("worker lost")

    with pytest.raises(Interrupted):
        await run_scrape(runtime, folder_request(root), on_progress=crash_on_sixth)

    [failed] = await all_runs(runtime.db)
    assert (failed.status, failed.error) == ("failed", "Interrupted: worker lost")
    assert failed.cursor == {"files_done": 6}
    assert failed.seen == 6
    assert len(await all_albums(runtime.db)) == 6 - failed.duplicates

    run_id, counters = await run_scrape(
        runtime, folder_request(root, resume=failed.id), on_progress=silent_progress
    )

    assert run_id == failed.id
    assert (counters.seen, counters.added, counters.duplicates, counters.rejected) == (15, 13, 1, 1)
    [run] = await all_runs(runtime.db)
    assert (run.status, run.error, run.cursor) == ("succeeded", None, {"files_done": 15})
    assert (run.seen, run.added, run.duplicates, run.rejected) == (15, 13, 1, 1)
    assert run.finished_at is not None
    albums = await all_albums(runtime.db)
    assert len(albums) == 14
    assert sum(len(a.labels) for a in albums) == 15
    assert {a.scrape_run_id for a in albums} == {run_id}


async def test_runs_that_cannot_be_resumed(runtime: Runtime, tmp_path: Path) -> None:
    root = build_library(tmp_path / "covers", per_genre=1)
    done_id, _ = await run_scrape(runtime, folder_request(root), on_progress=silent_progress)
    async with runtime.db.session() as session:
        other = ScrapeRun(source="itunes", status="failed", cursor={"page": 3})
        session.add(other)
        await session.flush()
        other_id = other.id
    before = snapshot(await all_albums(runtime.db))

    with pytest.raises(RunStateError, match=f"scrape run {done_id} already finished"):
        await run_scrape(runtime, folder_request(root, resume=done_id), on_progress=silent_progress)
    with pytest.raises(RunStateError, match="scrape run 9999 does not exist"):
        await run_scrape(runtime, folder_request(root, resume=9999), on_progress=silent_progress)
    with pytest.raises(RunStateError, match=r"scraped 'itunes', not 'folder'.*--source itunes"):
        await run_scrape(
            runtime, folder_request(root, resume=other_id), on_progress=silent_progress
        )

    runs = {r.id: r for r in await all_runs(runtime.db)}
    assert set(runs) == {done_id, other_id}
    assert (runs[done_id].status, runs[done_id].seen) == ("succeeded", 3)
    assert (runs[other_id].status, runs[other_id].cursor) == ("failed", {"page": 3})
    assert snapshot(await all_albums(runtime.db)) == before


async def test_genre_filter_and_per_genre_limit(runtime: Runtime, tmp_path: Path) -> None:
    root = build_library(tmp_path / "covers")
    request = folder_request(root, genres=("Hip-Hop/Rap", " rock "), per_genre=2)

    _, counters = await run_scrape(runtime, request, on_progress=silent_progress)

    assert (counters.seen, counters.added) == (4, 4)
    expected = {
        f"folder:{genre}/{p.name}" for genre in ("HipHop", "Rock") for p in kit_covers()[genre][:2]
    }
    albums = await all_albums(runtime.db)
    assert {lab.provenance for a in albums for lab in a.labels} == expected
    assert sorted(lab.genre for a in albums for lab in a.labels) == ["hiphop"] * 2 + ["rock"] * 2


async def test_genre_filter_matching_no_folder(runtime: Runtime, tmp_path: Path) -> None:
    root = build_library(tmp_path / "covers", per_genre=1)
    with pytest.raises(SourceError, match=r"no sub-folder of .* matches the genres \['jazz'\]"):
        await run_scrape(
            runtime, folder_request(root, genres=("Jazz",)), on_progress=silent_progress
        )
    assert await all_runs(runtime.db) == []


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", r"folder .*/missing does not exist"),
        ("file", r".*/file\.jpg is not a folder \(nor a \.csv manifest\)"),
        ("flat", r".*/flat has no genre sub-folders \(expected DIR/<genre>/<file>\)"),
        ("symbols", r"sub-folder '!!!' of .*/symbols is not a genre name"),
    ],
)
async def test_unusable_folders_raise_source_error(
    runtime: Runtime, tmp_path: Path, layout: str, message: str
) -> None:
    cover = kit_covers()["Rock"][0]
    if layout == "file":
        path = tmp_path / "file.jpg"
        shutil.copyfile(cover, path)
    elif layout == "symbols":
        path = tmp_path / "symbols"
        (path / "!!!").mkdir(parents=True)
        shutil.copyfile(cover, path / "!!!" / cover.name)
    elif layout == "flat":
        path = tmp_path / "flat"
        path.mkdir()
        shutil.copyfile(cover, path / cover.name)
    else:
        path = tmp_path / "missing"

    # A missing path or a file that is no manifest is refused as the API refuses it, up front.
    refused = InvalidRequest if layout in ("missing", "file") else SourceError
    with pytest.raises(refused, match=message):
        await run_scrape(runtime, folder_request(path), on_progress=silent_progress)

    assert await all_runs(runtime.db) == []
    assert await all_albums(runtime.db) == []


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"source": "folder", "path": "/covers", "per_genre": 0}, ("per_genre",)),
        ({"source": "folder", "path": "/covers", "resume": 0}, ("resume",)),
        ({"source": "folder"}, ()),
        ({"source": "folder", "path": ""}, ()),
        ({"source": "myspace", "path": "/covers"}, ("source",)),
        ({"source": "folder", "path": "/covers", "folder": "/x"}, ("folder",)),
        ({"source": "folder", "path": "/covers", "genres": ["rock", " "]}, ("genres",)),
        ({"source": "folder", "path": "/covers", "genres": ["!!!"]}, ("genres",)),
        ({"source": "folder", "path": "/covers", "genres": ["x" * 65]}, ("genres",)),
    ],
)
def test_scrape_request_validation(fields: dict[str, Any], where: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        ScrapeRequest.model_validate(fields)
    [error] = caught.value.errors()
    assert error["loc"] == where


def test_scrape_request_path_message() -> None:
    with pytest.raises(ValidationError, match="the folder source needs a path"):
        ScrapeRequest(source="folder")


@pytest.mark.parametrize(
    ("raw", "genre"),
    [
        ("Hip-Hop/Rap", "hiphop"),
        ("HipHop", "hiphop"),
        ("Dance & Electronic", "electronic"),
        ("R&B", "rnb"),
        ("Rock", "rock"),
        ("  Singer / Songwriter ", "singersongwriter"),
    ],
)
def test_normalize_genre(raw: str, genre: str) -> None:
    assert normalize_genre(raw) == genre


@pytest.mark.parametrize("raw", ["", "   ", "--/--"])
def test_normalize_genre_refuses_names_without_letters(raw: str) -> None:
    with pytest.raises(ValueError, match="has no letters or digits"):
        normalize_genre(raw)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("store", ["s3"], indirect=True)
async def test_import_into_a_real_s3_store(
    database: Database, database_url: str, store: ObjectStore, tmp_path: Path
) -> None:
    runtime = Runtime(settings=make_settings(tmp_path, database_url), db=database, store=store)
    root = build_library(tmp_path / "covers", per_genre=2, genres=("Country", "Rock"))
    shutil.copyfile(kit_covers()["Pop"][0], root / "Country" / "dup.jpg")
    shutil.copyfile(kit_covers()["Pop"][0], root / "Rock" / "dup.jpg")

    _, first = await run_scrape(runtime, folder_request(root), on_progress=silent_progress)
    _, second = await run_scrape(runtime, folder_request(root), on_progress=silent_progress)

    assert (first.added, first.duplicates, second.added, second.duplicates) == (5, 1, 0, 6)
    albums = await all_albums(database)
    assert len(albums) == 5
    assert sorted(await store.list("covers/")) == sorted(a.cover_key for a in albums)
    for path in root.rglob("*.jpg"):
        key = cover_key(sha256(path), "jpg")
        assert await store.get(key) == path.read_bytes()
