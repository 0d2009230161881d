"""A scoring job's rows as JSONL, CSV or Parquet, streamed a page at a time.

``iter_export`` reads the rows in pages by id (keyset pagination, never the whole job in
memory) and yields bytes chunks, ready for a streaming HTTP response; ``write_export``
writes them to a file atomically. Parquet gets one row group per page.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from sleeve_common.exceptions import NotFound
from sleeve_common.models import ModelVersion, Prediction, ScoringJob
from sleeve_inference.scoring.errors import OutputError

if TYPE_CHECKING:
    from sleeve_common.db import Database

__all__ = ["FORMATS", "ExportFormat", "format_for_path", "iter_export", "write_export"]

ExportFormat = Literal["jsonl", "csv", "parquet"]
FORMATS: dict[str, ExportFormat] = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_FIXED_COLUMNS = (
    "item",
    "source",
    "album_id",
    "model_version",
    "top_genre",
    "confidence",
    "stored_genre",
    "disagrees",
    "top_genres",
)


def format_for_path(path: Path) -> ExportFormat:
    """The export format named by ``path``'s extension, or ``OutputError``."""
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise OutputError(
            f"{path}: the output's extension picks the format; use one of {', '.join(FORMATS)}"
        )
    return found


async def iter_export(
    *,
    db: Database,
    scoring_job_id: int,
    export_format: ExportFormat,
    top_k: int = 5,
    page_size: int = 1000,
) -> AsyncIterator[bytes]:
    """The job's rows in ``export_format``, in bytes chunks of about one page each."""
    version, labels = await _model(db, scoring_job_id)
    writer = _FORMATTERS[export_format](labels)
    async for page in _pages(db, scoring_job_id, page_size):
        rows = [_row(p, version, labels, top_k) for p in page]
        yield writer.page(rows)
    yield writer.close()


async def write_export(
    *,
    db: Database,
    scoring_job_id: int,
    path: Path,
    top_k: int = 5,
    page_size: int = 1000,
) -> int:
    """Write the job's rows to ``path`` (format from its extension); return the bytes written."""
    export_format = format_for_path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    size = 0
    try:
        with partial.open("wb") as sink:
            async for chunk in iter_export(
                db=db,
                scoring_job_id=scoring_job_id,
                export_format=export_format,
                top_k=top_k,
                page_size=page_size,
            ):
                await asyncio.to_thread(sink.write, chunk)
                size += len(chunk)
        partial.replace(path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return size


async def _model(db: Database, scoring_job_id: int) -> tuple[str, list[str]]:
    async with db.session() as session:
        row = (
            await session.execute(
                select(ModelVersion.version, ModelVersion.labels)
                .join(ScoringJob, ScoringJob.model_version_id == ModelVersion.id)
                .where(ScoringJob.id == scoring_job_id)
            )
        ).first()
    if row is None:
        raise NotFound(f"scoring job {scoring_job_id} does not exist")
    return str(row.version), [str(label) for label in row.labels]


async def _pages(db: Database, scoring_job_id: int, size: int) -> AsyncIterator[list[Prediction]]:
    after = 0
    while True:
        async with db.session() as session:
            page = list(
                (
                    await session.execute(
                        select(Prediction)
                        .where(Prediction.scoring_job_id == scoring_job_id, Prediction.id > after)
                        .order_by(Prediction.id)
                        .limit(size)
                    )
                ).scalars()
            )
        if not page:
            return
        yield page
        after = page[-1].id


def _row(p: Prediction, version: str, labels: list[str], top_k: int) -> dict[str, Any]:
    probabilities = p.probabilities
    ranked = sorted((probabilities or {}).items(), key=lambda kv: kv[1], reverse=True)[:top_k]
    return {
        "item": p.item,
        "source": p.source,
        "album_id": p.album_id,
        "model_version": version,
        "top_genre": p.top_genre,
        "confidence": p.confidence,
        "stored_genre": p.stored_genre,
        "disagrees": p.disagrees,
        "top_genres": [{"genre": g, "probability": float(v)} for g, v in ranked],
        "probabilities": (
            None if probabilities is None else {label: probabilities.get(label) for label in labels}
        ),
        "error": p.error,
    }


class _Jsonl:
    def __init__(self, labels: list[str]) -> None:
        self._labels = labels

    def page(self, rows: list[dict[str, Any]]) -> bytes:
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()

    def close(self) -> bytes:
        return b""


class _Csv:
    """One column per genre (``p_<genre>``); ``top_genres`` as ``genre:p;genre:p``."""

    def __init__(self, labels: list[str]) -> None:
        self._labels = labels
        self._header = [*_FIXED_COLUMNS, *(f"p_{label}" for label in labels), "error"]
        self._started = False

    def page(self, rows: list[dict[str, Any]]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if not self._started:
            writer.writerow(self._header)
            self._started = True
        for row in rows:
            probabilities = row["probabilities"] or {}
            writer.writerow(
                [
                    row["item"],
                    row["source"],
                    "" if row["album_id"] is None else row["album_id"],
                    row["model_version"],
                    row["top_genre"] or "",
                    "" if row["confidence"] is None else repr(row["confidence"]),
                    row["stored_genre"] or "",
                    "" if row["disagrees"] is None else str(row["disagrees"]).lower(),
                    ";".join(f"{t['genre']}:{t['probability']!r}" for t in row["top_genres"]),
                    *(
                        "" if probabilities.get(label) is None else repr(probabilities[label])
                        for label in self._labels
                    ),
                    row["error"] or "",
                ]
            )
        return buffer.getvalue().encode()

    def close(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return (",".join(self._header) + "\n").encode()


class _ChunkSink(io.RawIOBase):
    """A write-only file that hands out what was written since it was last drained."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class _Parquet:
    """A ParquetWriter over a draining sink: each page becomes one row group, then bytes."""

    def __init__(self, labels: list[str]) -> None:
        genre = pa.struct([("genre", pa.string()), ("probability", pa.float64())])
        self._schema = pa.schema(
            [
                ("item", pa.string()),
                ("source", pa.string()),
                ("album_id", pa.int64()),
                ("model_version", pa.string()),
                ("top_genre", pa.string()),
                ("confidence", pa.float64()),
                ("stored_genre", pa.string()),
                ("disagrees", pa.bool_()),
                ("top_genres", pa.list_(genre)),
                ("probabilities", pa.struct([(label, pa.float64()) for label in labels])),
                ("error", pa.string()),
            ]
        )
        self._sink = _ChunkSink()
        self._writer = pq.ParquetWriter(self._sink, self._schema)

    def page(self, rows: list[dict[str, Any]]) -> bytes:
        self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))
        return self._sink.drain()

    def close(self) -> bytes:
        self._writer.close()
        return self._sink.drain()


_FORMATTERS: dict[ExportFormat, type[_Jsonl | _Csv | _Parquet]] = {
    "jsonl": _Jsonl,
    "csv": _Csv,
    "parquet": _Parquet,
}
