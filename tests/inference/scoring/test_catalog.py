"""Catalog enumeration: bounded chunks whatever the size, every row once, ids as text."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from sleeve_common.db import Database
from sleeve_common.store import ObjectStore, ObstoreStore
from sleeve_inference.scoring.catalog import Item, iter_chunks, open_catalog

ROWS = 30_000


@pytest.fixture
def local_store(tmp_path: Path) -> ObjectStore:
    return ObstoreStore.local(tmp_path / "store")


# Files and store prefixes never touch the database: an empty in-memory one will do.
UNUSED_DB = Database("sqlite+aiosqlite:///:memory:")


async def _chunks(text: str, store: ObjectStore, size: int) -> list[list[Item]]:
    catalog = await open_catalog(text, store=store, db=UNUSED_DB)
    return [chunk async for chunk in iter_chunks(catalog, store=store, db=UNUSED_DB, size=size)]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
async def test_a_large_manifest_streams_in_bounded_chunks(
    tmp_path: Path, local_store: ObjectStore, suffix: str
) -> None:
    path = tmp_path / f"big.{suffix}"
    table = pa.table({"id": list(range(ROWS)), "key": [f"c/{i}.jpg" for i in range(ROWS)]})
    if suffix == "csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path, row_group_size=7_000)

    catalog = await open_catalog(str(path), store=local_store, db=UNUSED_DB)
    chunks = await _chunks(str(path), local_store, 500)

    assert (catalog.total, catalog.locator) == (ROWS, "key")
    assert all(len(chunk) == 500 for chunk in chunks)
    items = [item for chunk in chunks for item in chunk]
    assert [item.item for item in items] == [str(i) for i in range(ROWS)]  # numbers as text
    assert items[-1] == Item(item=str(ROWS - 1), kind="key", locator=f"c/{ROWS - 1}.jpg")


async def test_a_folder_is_walked_in_name_order(tmp_path: Path, local_store: ObjectStore) -> None:
    for name in ["b/2.jpg", "a.png", "b/1.JPG", "c/d/e.webp", "c/skip.txt"]:
        (tmp_path / "f" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "f" / name).write_bytes(b"x")

    chunks = await _chunks(str(tmp_path / "f"), local_store, 2)

    assert [[i.item for i in chunk] for chunk in chunks] == [
        ["a.png", "b/1.JPG"],
        ["b/2.jpg", "c/d/e.webp"],
    ]


async def test_a_store_prefix_is_listed_in_pages(local_store: ObjectStore) -> None:
    for index in range(7):
        await local_store.put(f"in/{index}.jpg", b"x")
    await local_store.put("in/readme.md", b"x")
    await local_store.put("inbox/0.jpg", b"x")  # outside the prefix

    chunks = await _chunks("store:in/", local_store, 3)

    assert [len(chunk) for chunk in chunks] == [3, 3, 1]
    assert sorted(i.item for chunk in chunks for i in chunk) == [f"in/{i}.jpg" for i in range(7)]
