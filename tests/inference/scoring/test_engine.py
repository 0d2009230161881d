"""The local scoring engine on real inputs: folders, store prefixes, CSV and Parquet manifests.

Everything is real: the database (SQLite and PostgreSQL), the stores (a local directory and
the S3 server), the covers (the kit's discogs5 copies), an HTTP server on 127.0.0.1 and the
tiny colour ONNX model (red → country, green → rock, blue → pop).
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from support import make_settings

from sleeve_common.db import Database
from sleeve_common.models import Prediction, ScoringJob
from sleeve_common.runtime import Runtime
from sleeve_common.store import ObjectStore
from sleeve_inference.scoring.jobs import create_scoring_job, run_scoring

from ..harness import LABELS, Registered, image_bytes, register_model
from .conftest import BLUE, GREEN, RED, real_covers

FOLDER_ITEMS = {
    "cover0.jpg",
    "sub/cover1.jpg",
    "cover2.jpg",
    "sub/cover3.jpg",
    "cover4.jpg",
    "red.png",
    "green.png",
    "sub/blue.png",
}


async def predictions(db: Database, scoring_job_id: int) -> dict[str, Prediction]:
    async with db.session() as session:
        rows = await session.execute(
            select(Prediction).where(Prediction.scoring_job_id == scoring_job_id)
        )
        return {row.item: row for row in rows.scalars()}


async def job_row(db: Database, scoring_job_id: int) -> ScoringJob:
    async with db.session() as session:
        job = await session.get(ScoringJob, scoring_job_id)
        assert job is not None
        return job


def assert_scored(row: Prediction, genre: str | None = None) -> None:
    assert row.error is None, row.error
    assert row.probabilities is not None
    assert set(row.probabilities) == set(LABELS)
    assert math.isclose(sum(row.probabilities.values()), 1.0, rel_tol=1e-5)
    assert row.top_genre == max(row.probabilities, key=row.probabilities.__getitem__)
    assert row.confidence == pytest.approx(max(row.probabilities.values()))
    if genre is not None:
        assert row.top_genre == genre


async def test_a_folder_is_scored_by_relative_path(
    scoring_runtime: Runtime, colour_model: Registered, covers: Path
) -> None:
    job = await create_scoring_job(runtime=scoring_runtime, input=str(covers))
    assert (job.total, job.status) == (8, "queued")

    summary = await run_scoring(scoring_runtime, job.id, chunk_size=3)

    rows = await predictions(scoring_runtime.db, job.id)
    assert set(rows) == FOLDER_ITEMS
    for row in rows.values():
        assert_scored(row)
        assert row.model_version_id == colour_model.version.id
        assert Path(row.source).is_file()
    assert rows["red.png"].top_genre == "country"
    assert rows["green.png"].top_genre == "rock"
    assert rows["sub/blue.png"].top_genre == "pop"
    assert rows["sub/blue.png"].source == str(covers / "sub" / "blue.png")
    finished = await job_row(scoring_runtime.db, job.id)
    assert (finished.status, finished.done, finished.failed, finished.duplicates) == (
        "succeeded",
        8,
        0,
        0,
    )
    assert finished.started_at is not None and finished.finished_at is not None
    assert (summary.done, summary.written, summary.total) == (8, 8, 8)


async def test_a_store_prefix_is_scored_by_key(
    store: ObjectStore, database_url: str, tmp_path: Path
) -> None:
    db = Database(database_url)
    runtime = Runtime(settings=make_settings(tmp_path, database_url), db=db, store=store)
    try:
        await register_model(db, store)
        cover = real_covers(1)[0].read_bytes()
        await store.put("catalog/a/cover.jpg", cover)
        await store.put("catalog/red.png", image_bytes(RED))
        await store.put("catalog/readme.txt", b"not an image")
        await store.put("other/blue.png", image_bytes(BLUE))

        job = await create_scoring_job(runtime=runtime, input="store:catalog/")
        await run_scoring(runtime, job.id, chunk_size=1)  # one listing page per item

        rows = await predictions(db, job.id)
        assert set(rows) == {"catalog/a/cover.jpg", "catalog/red.png"}
        assert_scored(rows["catalog/a/cover.jpg"])
        assert_scored(rows["catalog/red.png"], "country")
        assert rows["catalog/red.png"].source == "catalog/red.png"
    finally:
        await db.aclose()


@pytest.mark.parametrize("chunk_size", [1, 4])
async def test_a_csv_manifest_of_keys_records_failures_and_duplicates(
    scoring_runtime: Runtime, colour_model: Registered, tmp_path: Path, chunk_size: int
) -> None:
    store = scoring_runtime.store
    await store.put("in/red.png", image_bytes(RED))
    await store.put("in/green.png", image_bytes(GREEN))
    await store.put("in/broken.jpg", b"\xff\xd8 not really a jpeg")
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "key", "extra"])
        writer.writerows(
            [
                ["r", "in/red.png", "x"],
                ["g", "in/green.png", "x"],
                ["missing", "in/nothing-here.jpg", "x"],
                ["broken", "in/broken.jpg", "x"],
                ["r", "in/green.png", "x"],  # a duplicate id: reported, scored once
                ["none", "", "x"],
            ]
        )

    job = await create_scoring_job(runtime=scoring_runtime, input=str(manifest))
    summary = await run_scoring(scoring_runtime, job.id, chunk_size=chunk_size)

    rows = await predictions(scoring_runtime.db, job.id)
    assert set(rows) == {"r", "g", "missing", "broken", "none"}
    assert_scored(rows["r"], "country")  # the first row with the id wins
    assert_scored(rows["g"], "rock")
    assert "no object" in (rows["missing"].error or "")
    assert (rows["broken"].error or "").startswith("invalid image")
    assert "no key" in (rows["none"].error or "")
    for name in ("missing", "broken", "none"):
        assert rows[name].top_genre is None and rows[name].probabilities is None
    assert (summary.done, summary.failed, summary.duplicates) == (2, 3, 1)
    assert summary.duplicate_examples == ["r"]
    assert "duplicate" in summary.line() and "'r'" in summary.line()
    finished = await job_row(scoring_runtime.db, job.id)
    assert (finished.done, finished.failed, finished.duplicates, finished.total) == (2, 3, 1, 6)


async def test_a_parquet_manifest_of_paths_is_relative_to_its_folder(
    scoring_runtime: Runtime, colour_model: Registered, covers: Path
) -> None:
    manifest = covers.parent / "manifest.parquet"
    table = pa.table(
        {
            "id": ["blue", "cover", "gone"],
            "path": ["covers/sub/blue.png", str(covers / "cover0.jpg"), "covers/gone.png"],
        }
    )
    pq.write_table(table, manifest)

    job = await create_scoring_job(runtime=scoring_runtime, input=str(manifest))
    await run_scoring(scoring_runtime, job.id)

    rows = await predictions(scoring_runtime.db, job.id)
    assert_scored(rows["blue"], "pop")
    assert_scored(rows["cover"])
    assert "cannot read" in (rows["gone"].error or "")


async def test_a_url_manifest_goes_through_the_ssrf_guard(
    scoring_runtime: Runtime, colour_model: Registered, cover_server: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "urls.parquet"
    urls = {
        "red": f"{cover_server}/red.png",
        "cover": f"{cover_server}/cover0.jpg",
        "absent": f"{cover_server}/absent.png",
        "private": "http://10.1.2.3/cover.jpg",
        "dead": "http://127.0.0.1:1/cover.jpg",
    }
    pq.write_table(pa.table({"id": list(urls), "url": list(urls.values())}), manifest)

    job = await create_scoring_job(runtime=scoring_runtime, input=str(manifest))
    summary = await run_scoring(scoring_runtime, job.id)

    rows = await predictions(scoring_runtime.db, job.id)
    assert_scored(rows["red"], "country")
    assert_scored(rows["cover"])
    assert rows["red"].source == urls["red"]
    assert (rows["absent"].error or "").startswith("http_error")
    assert (rows["private"].error or "").startswith("forbidden_address")
    assert (rows["dead"].error or "").startswith("unreachable")
    assert (summary.done, summary.failed) == (2, 3)


class _Interrupt(Exception):
    pass


async def test_an_interrupted_job_resumes_without_rescoring(
    scoring_runtime: Runtime, colour_model: Registered, covers: Path
) -> None:
    db = scoring_runtime.db
    job = await create_scoring_job(runtime=scoring_runtime, input=str(covers))

    async def stop_after_first_chunk(fraction: float, message: str) -> None:
        raise _Interrupt(message)

    with pytest.raises(_Interrupt):
        await run_scoring(scoring_runtime, job.id, stop_after_first_chunk, chunk_size=3)

    first = await predictions(db, job.id)
    assert len(first) == 3
    stopped = await job_row(db, job.id)
    assert (stopped.status, stopped.done, stopped.failed) == ("failed", 3, 0)
    assert "_Interrupt" in (stopped.error or "")

    summary = await run_scoring(scoring_runtime, job.id, chunk_size=3)

    rows = await predictions(db, job.id)
    assert set(rows) == FOLDER_ITEMS
    assert summary.written == 5
    for item, row in first.items():  # the finished items were not scored again
        assert (rows[item].id, rows[item].created_at) == (row.id, row.created_at)
    resumed = await job_row(db, job.id)
    assert (resumed.status, resumed.done, resumed.failed, resumed.error) == (
        "succeeded",
        8,
        0,
        None,
    )

    again = await run_scoring(scoring_runtime, job.id, chunk_size=3)

    assert (again.written, again.done, again.duplicates) == (0, 8, 0)
    assert {item: row.id for item, row in (await predictions(db, job.id)).items()} == {
        item: row.id for item, row in rows.items()
    }


async def test_a_deleted_cover_fails_its_row_only(
    scoring_runtime: Runtime, colour_model: Registered, covers: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(covers, tmp_path / "copy")
    (copy / "sub" / "broken.jpg").write_bytes(b"")

    job = await create_scoring_job(runtime=scoring_runtime, input=str(copy))
    summary = await run_scoring(scoring_runtime, job.id)

    rows = await predictions(scoring_runtime.db, job.id)
    assert rows["sub/broken.jpg"].error == "invalid image: empty file"
    assert (summary.done, summary.failed) == (8, 1)
