"""Exports in JSONL, CSV and Parquet, read back with the standard readers, match the rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sleeve_common.runtime import Runtime
from sleeve_inference.scoring.exports import iter_export, write_export
from sleeve_inference.scoring.jobs import create_scoring_job, run_scoring

from ..harness import LABELS, Registered
from .test_engine import predictions


@pytest.fixture
async def scored(scoring_runtime: Runtime, colour_model: Registered, covers: Path) -> int:
    """A finished job over the covers folder, with one unreadable file among them."""
    (covers / "broken.png").write_bytes(b"not a png")
    job = await create_scoring_job(runtime=scoring_runtime, input=str(covers))
    await run_scoring(scoring_runtime, job.id)
    return job.id


async def _expected(runtime: Runtime, job_id: int) -> dict[str, dict[str, Any]]:
    rows = await predictions(runtime.db, job_id)
    return {
        item: {
            "source": row.source,
            "top_genre": row.top_genre,
            "probabilities": row.probabilities,
            "error": row.error,
        }
        for item, row in rows.items()
    }


def _check(record: dict[str, Any], expected: dict[str, Any]) -> None:
    assert record["source"] == expected["source"]
    assert record["model_version"] == "v1"
    assert record["top_genre"] == expected["top_genre"]
    assert record["error"] == expected["error"]
    if expected["probabilities"] is None:
        assert record["top_genres"] == []
        return
    assert record["probabilities"] == pytest.approx(expected["probabilities"])
    ranked = sorted(expected["probabilities"].items(), key=lambda kv: kv[1], reverse=True)[:2]
    assert [(t["genre"], t["probability"]) for t in record["top_genres"]] == pytest.approx(ranked)


async def test_jsonl(scoring_runtime: Runtime, scored: int, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    await write_export(
        db=scoring_runtime.db, scoring_job_id=scored, path=path, top_k=2, page_size=3
    )

    records = [json.loads(line) for line in path.read_text().splitlines()]
    expected = await _expected(scoring_runtime, scored)
    assert sorted(r["item"] for r in records) == sorted(expected)
    for record in records:
        _check(record, expected[record["item"]])
    assert expected["broken.png"]["error"]


async def test_csv(scoring_runtime: Runtime, scored: int, tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    await write_export(
        db=scoring_runtime.db, scoring_job_id=scored, path=path, top_k=2, page_size=3
    )

    with path.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    expected = await _expected(scoring_runtime, scored)
    assert sorted(r["item"] for r in records) == sorted(expected)
    for record in records:
        want = expected[record["item"]]
        probabilities = {g: record[f"p_{g}"] for g in LABELS}
        top = [part.split(":") for part in record["top_genres"].split(";") if part]
        _check(
            {
                **record,
                "top_genre": record["top_genre"] or None,
                "error": record["error"] or None,
                "probabilities": {g: float(p) for g, p in probabilities.items() if p},
                "top_genres": [{"genre": g, "probability": float(p)} for g, p in top],
            },
            want,
        )


async def test_parquet_has_one_row_group_per_page(
    scoring_runtime: Runtime, scored: int, tmp_path: Path
) -> None:
    path = tmp_path / "out.parquet"
    await write_export(
        db=scoring_runtime.db, scoring_job_id=scored, path=path, top_k=2, page_size=4
    )

    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_rows == 9
    assert parquet.metadata.num_row_groups == 3
    records = parquet.read().to_pylist()
    expected = await _expected(scoring_runtime, scored)
    assert sorted(r["item"] for r in records) == sorted(expected)
    for record in records:
        _check(record, expected[record["item"]])


async def test_the_stream_yields_a_chunk_per_page(scoring_runtime: Runtime, scored: int) -> None:
    chunks = [
        c
        async for c in iter_export(
            db=scoring_runtime.db, scoring_job_id=scored, export_format="jsonl", page_size=2
        )
    ]
    assert len([c for c in chunks if c]) == 5  # 9 rows in pages of 2
    assert b"".join(chunks).count(b"\n") == 9


async def test_an_empty_csv_export_still_has_its_header(
    scoring_runtime: Runtime, colour_model: Registered, covers: Path, tmp_path: Path
) -> None:
    job = await create_scoring_job(runtime=scoring_runtime, input=str(covers))
    path = tmp_path / "empty.csv"
    await write_export(db=scoring_runtime.db, scoring_job_id=job.id, path=path)
    assert path.read_text().startswith("item,source,album_id,model_version,top_genre")
