"""Albums in the database as a scoring input: filters, stored genres and disagreement flags.

Real database (SQLite and PostgreSQL), real store, the tiny colour model (red → country,
green → rock, blue → pop, each with probability about 0.9).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from sleeve_common.models import (
    MAX_ROW_ID,
    Album,
    AlbumLabel,
    Dataset,
    DatasetMember,
    ScoringJob,
    ScrapeRun,
)
from sleeve_common.runtime import Runtime
from sleeve_common.store import cover_key
from sleeve_inference.scoring.errors import CatalogError
from sleeve_inference.scoring.exports import write_export
from sleeve_inference.scoring.jobs import create_scoring_job, run_scoring

from ..harness import Registered, image_bytes
from .conftest import BLUE, GREEN, RED
from .test_engine import predictions


async def add_album(
    runtime: Runtime,
    colour: tuple[int, int, int],
    genres: list[str],
    *,
    source: str = "folder",
    status: str = "accepted",
    with_cover: bool = True,
    scrape_run_id: int | None = None,
) -> int:
    """An album with a solid-colour cover in the store and one label per genre."""
    data = image_bytes(colour) + source.encode() + str(genres).encode() + status.encode()
    sha = hashlib.sha256(data).hexdigest()
    key = cover_key(sha, "png")
    await runtime.store.put(key, data)
    async with runtime.db.session() as session:
        album = Album(
            source=source,
            source_id=sha,
            cover_key=key if with_cover else None,
            content_sha256=sha,
            status=status,
            scrape_run_id=scrape_run_id,
            labels=[AlbumLabel(genre=g, raw_genre=g, provenance=f"test {g}") for g in genres],
        )
        session.add(album)
        await session.flush()
        return album.id


@pytest.fixture
async def albums(scoring_runtime: Runtime, colour_model: Registered) -> dict[str, int]:
    """Albums that agree, disagree, have two labels, a genre the model lacks, or are skipped."""
    rt = scoring_runtime
    async with rt.db.session() as session:
        run = ScrapeRun(source="deezer")
        session.add(run)
        await session.flush()
    ids = {
        "run": run.id,
        "agrees": await add_album(rt, RED, ["country"]),
        "mislabelled": await add_album(rt, RED, ["rock"]),
        "two_labels": await add_album(rt, GREEN, ["rock", "pop"]),
        "unknown_genre": await add_album(rt, BLUE, ["jazz"]),
        "deezer": await add_album(rt, BLUE, ["pop"], source="deezer", scrape_run_id=run.id),
        "rejected": await add_album(rt, RED, ["rock"], status="rejected"),
        "no_cover": await add_album(rt, GREEN, ["rock"], with_cover=False),
    }
    async with rt.db.session() as session:
        dataset = Dataset(name="ds", genres=["country", "rock"], counts={})
        session.add(dataset)
        await session.flush()
        # The dataset says the red "mislabelled" album is country: the dataset label wins.
        session.add_all(
            [
                DatasetMember(
                    dataset_id=dataset.id, album_id=ids["agrees"], split="test", genre="country"
                ),
                DatasetMember(
                    dataset_id=dataset.id,
                    album_id=ids["mislabelled"],
                    split="train",
                    genre="country",
                ),
            ]
        )
    return ids


async def score(runtime: Runtime, text: str, chunk_size: int = 2) -> int:
    job = await create_scoring_job(runtime=runtime, input=text)
    await run_scoring(runtime, job.id, chunk_size=chunk_size)
    return job.id


async def test_every_accepted_album_with_a_cover_is_scored_and_flagged(
    scoring_runtime: Runtime, albums: dict[str, int], tmp_path: Path
) -> None:
    job_id = await score(scoring_runtime, "albums:")

    rows = await predictions(scoring_runtime.db, job_id)
    wanted = ["agrees", "mislabelled", "two_labels", "unknown_genre", "deezer"]
    assert set(rows) == {str(albums[name]) for name in wanted}
    by_name = {name: rows[str(albums[name])] for name in wanted}
    assert all(row.album_id == albums[name] for name, row in by_name.items())
    assert all(row.error is None for row in by_name.values())
    flags = {
        name: (row.stored_genre, row.top_genre, row.disagrees) for name, row in by_name.items()
    }
    assert flags == {
        "agrees": ("country", "country", False),
        "mislabelled": ("rock", "country", True),
        "two_labels": (None, "rock", None),  # several labels: nothing to compare
        "unknown_genre": ("jazz", "pop", None),  # a genre the model cannot answer
        "deezer": ("pop", "pop", False),
    }

    path = tmp_path / "flags.csv"
    await write_export(db=scoring_runtime.db, scoring_job_id=job_id, path=path)
    with path.open(newline="") as handle:
        exported = {r["item"]: r for r in csv.DictReader(handle)}
    mislabelled = exported[str(albums["mislabelled"])]
    assert (mislabelled["stored_genre"], mislabelled["disagrees"]) == ("rock", "true")
    assert mislabelled["album_id"] == str(albums["mislabelled"])
    assert exported[str(albums["two_labels"])]["disagrees"] == ""


@pytest.mark.parametrize(
    ("text", "expected", "stored"),
    [
        ("albums:source=deezer", ["deezer"], ["pop"]),
        ("albums:genre=Rock", ["mislabelled", "two_labels"], ["rock", None]),
        ("albums: dataset=ds , split=test", ["agrees"], ["country"]),
        ("albums:dataset=ds", ["agrees", "mislabelled"], ["country", "country"]),
        ("albums:dataset=ds,genre=country,split=train", ["mislabelled"], ["country"]),
    ],
)
async def test_filters_select_albums_and_their_stored_genre(
    scoring_runtime: Runtime,
    albums: dict[str, int],
    text: str,
    expected: list[str],
    stored: list[str | None],
) -> None:
    job_id = await score(scoring_runtime, text)

    rows = await predictions(scoring_runtime.db, job_id)
    assert sorted(rows, key=int) == [str(albums[name]) for name in expected]
    assert [rows[str(albums[name])].stored_genre for name in expected] == stored


async def test_albums_of_a_scrape_run(scoring_runtime: Runtime, albums: dict[str, int]) -> None:
    job_id = await score(scoring_runtime, f"albums:scrape_run={albums['run']}")

    assert list(await predictions(scoring_runtime.db, job_id)) == [str(albums["deezer"])]
    with pytest.raises(CatalogError, match="no albums with a stored cover match"):
        await create_scoring_job(runtime=scoring_runtime, input=f"albums:scrape_run={MAX_ROW_ID}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("albums:colour=red", "unknown key 'colour'"),
        ("albums:genre", "write KEY=VALUE"),
        ("albums:genre=", "write KEY=VALUE"),
        ("albums:genre=rock,genre=pop", "'genre' is given twice"),
        ("albums:genre=!!!", "no letters or digits"),
        ("albums:scrape_run=abc", "scrape_run must be a run id"),
        ("albums:scrape_run=99999999999", "scrape_run must be a run id"),
        ("albums:split=test", "split needs a dataset"),
        ("albums:dataset=ds,split=holdout", "split must be one of train, val, test"),
        ("albums:dataset=nope", "no dataset named 'nope'"),
        ("albums:source=spotify", "no albums with a stored cover match albums:source=spotify"),
        ("albums:" + "x" * 2000, "longer than 1024 characters"),
    ],
)
async def test_a_bad_filter_fails_before_any_job_is_created(
    scoring_runtime: Runtime, albums: dict[str, int], text: str, message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        await create_scoring_job(runtime=scoring_runtime, input=text)

    async with scoring_runtime.db.session() as session:
        assert (await session.execute(select(ScoringJob))).first() is None
