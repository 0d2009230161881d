"""What a scoring job reads: a folder, a store prefix or a manifest, checked before any work.

``open_catalog`` parses the ``--input`` text and validates it (a counting pass that keeps
nothing but counters), so a bad input fails with a clear ``CatalogError`` before a single
item is scored. ``iter_chunks`` then enumerates the items in bounded chunks (manifests in
pyarrow batches, store prefixes a listing page at a time, folders one directory at a time)
and ``read_item`` gets one item's bytes: a store key through the store, a path through a
thread, a URL through the SSRF guard.

Inputs:
- ``DIR``: images under a local folder, recursively; the item id is the relative path.
- ``store:PREFIX``: images under a prefix of the configured object store; the id is the key.
- ``FILE.csv`` / ``FILE.parquet``: a manifest with a column ``id`` and exactly one of
  ``url``, ``key`` or ``path`` (relative paths are relative to the manifest's folder).
- ``albums:FILTER``: albums in the database (see ``albums``); the id is the album id, the
  bytes its stored cover, and each item carries its stored genre.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from sleeve_common.exceptions import InvalidKey, ObjectNotFound, StoreUnavailable
from sleeve_inference.scoring.albums import (
    ALBUMS_SCHEME,
    AlbumFilter,
    count_albums,
    iter_album_pages,
)
from sleeve_inference.scoring.errors import CatalogError, ItemUnreadable, ManifestError
from sleeve_inference.url_fetch import UrlFetchError

if TYPE_CHECKING:
    from sleeve_common.db import Database
    from sleeve_common.store import ObjectStore
    from sleeve_inference.url_fetch import UrlFetcher

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_ITEM_LENGTH",
    "Catalog",
    "Item",
    "LocatorKind",
    "iter_chunks",
    "open_catalog",
    "read_item",
]

LocatorKind = Literal["key", "path", "url"]
CatalogKind = Literal["folder", "store", "csv", "parquet", "albums"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_ITEM_LENGTH = 1024  # the predictions.item column
STORE_SCHEME = "store:"
_LOCATORS: tuple[LocatorKind, ...] = ("url", "key", "path")
_CSV_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Item:
    """One catalog entry: its id, and where its bytes are (``locator`` None: not given); an
    album also carries its id and stored genre."""

    item: str
    kind: LocatorKind
    locator: str | None
    album_id: int | None = None
    stored_genre: str | None = None


@dataclass(frozen=True)
class Catalog:
    """A validated input: what it is, where, how its items are located and how many there are."""

    kind: CatalogKind
    location: str
    locator: LocatorKind
    total: int

    def describe(self) -> str:
        """``folder /covers``, ``store:covers/``, ``csv /tmp/m.csv`` …"""
        if self.kind == "store":
            return f"{STORE_SCHEME}{self.location}"
        if self.kind == "albums":
            return self.location
        return f"{self.kind} {self.location}"


async def open_catalog(text: str, *, store: ObjectStore, db: Database) -> Catalog:
    """Parse and validate ``--input``; ``CatalogError`` (or a subclass) says what is wrong."""
    if text.startswith(ALBUMS_SCHEME):
        wanted = AlbumFilter.parse(text.removeprefix(ALBUMS_SCHEME))
        total = await count_albums(db, wanted)
        return Catalog(kind="albums", location=wanted.describe(), locator="key", total=total)
    if text.startswith(STORE_SCHEME):
        prefix = text.removeprefix(STORE_SCHEME)
        try:
            total = 0
            async for page in store.iter_keys(prefix):
                total += sum(1 for key in page if _is_image(key))
        except InvalidKey as exc:
            raise CatalogError(f"invalid store prefix {prefix!r}: {exc}") from None
        if total == 0:
            raise CatalogError(f"no images under {STORE_SCHEME}{prefix} in {store.describe()}")
        return Catalog(kind="store", location=prefix, locator="key", total=total)
    path = Path(text).expanduser().absolute()
    if path.is_dir():
        total = await asyncio.to_thread(_count_folder, path)
        if total == 0:
            raise CatalogError(f"no images in the folder {path}")
        return Catalog(kind="folder", location=str(path), locator="path", total=total)
    if not path.exists():
        raise CatalogError(f"{text}: no such folder or manifest (or use store:PREFIX)")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise CatalogError(f"{path}: a manifest must be a .csv or .parquet file")
    kind: CatalogKind = "csv" if suffix == ".csv" else "parquet"
    locator, total = await asyncio.to_thread(_check_manifest, kind, path)
    return Catalog(kind=kind, location=str(path), locator=locator, total=total)


async def iter_chunks(
    catalog: Catalog, *, store: ObjectStore, db: Database, size: int
) -> AsyncIterator[list[Item]]:
    """The catalog's items in order, ``size`` at a time (blocking reads run in threads)."""
    if catalog.kind == "albums":
        wanted = AlbumFilter.parse(catalog.location.removeprefix(ALBUMS_SCHEME))
        async for albums in iter_album_pages(db, wanted, size=size):
            yield [
                Item(
                    item=str(row.album_id),
                    kind="key",
                    locator=row.cover_key,
                    album_id=row.album_id,
                    stored_genre=row.stored_genre,
                )
                for row in albums
            ]
        return
    if catalog.kind == "store":
        chunk: list[Item] = []
        async for page in store.iter_keys(catalog.location, page_size=size):
            chunk.extend(Item(item=k, kind="key", locator=k) for k in page if _is_image(k))
            while len(chunk) >= size:
                yield chunk[:size]
                chunk = chunk[size:]
        if chunk:
            yield chunk
        return
    items: Iterator[Item]
    if catalog.kind == "folder":
        items = _folder_items(Path(catalog.location))
    else:
        items = _manifest_items(catalog, size)
    while chunk := await asyncio.to_thread(_take, items, size):
        yield chunk


async def read_item(item: Item, *, store: ObjectStore, fetcher: UrlFetcher) -> bytes:
    """The item's bytes, or ``ItemUnreadable`` saying why (a store that is down or refuses,
    ``StoreUnavailable`` or ``StoreRefused``, propagates: no item is to blame)."""
    if item.locator is None:
        raise ItemUnreadable(f"the manifest gives no {item.kind} for this item")
    try:
        if item.kind == "key":
            return await store.get(item.locator)
        if item.kind == "path":
            return await asyncio.to_thread(Path(item.locator).read_bytes)
        return await fetcher.fetch(item.locator)
    except StoreUnavailable:
        raise
    except (ObjectNotFound, InvalidKey) as exc:
        raise ItemUnreadable(str(exc)) from None
    except UrlFetchError as exc:
        raise ItemUnreadable(f"{exc.kind}: {exc}") from None
    except OSError as exc:
        raise ItemUnreadable(f"cannot read {item.locator}: {exc.strerror or exc}") from None


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _take(items: Iterator[Item], size: int) -> list[Item]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            break
    return chunk


def _walk(root: Path) -> Iterator[Path]:
    """Image files under ``root``, depth first in name order, one directory listed at a time."""
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as exc:
        raise CatalogError(f"cannot read the folder {root}: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file() and _is_image(entry.name):
            yield Path(entry.path)


def _count_folder(root: Path) -> int:
    return sum(1 for _ in _walk(root))


def _folder_items(root: Path) -> Iterator[Item]:
    for path in _walk(root):
        yield Item(item=path.relative_to(root).as_posix(), kind="path", locator=str(path))


def _batches(kind: CatalogKind, path: Path, columns: list[str], size: int) -> Iterator[pa.Table]:
    """The manifest's ``columns`` as small tables, read in a streaming fashion."""
    try:
        if kind == "parquet":
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=size, columns=columns):
                yield pa.Table.from_batches([batch])
            return
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in columns},
                include_columns=columns,
            ),
        )
        for batch in reader:
            yield pa.Table.from_batches([batch])
    except (OSError, pa.ArrowException) as exc:
        raise ManifestError(f"cannot read the manifest {path}: {_first_line(exc)}") from None


def _columns(kind: CatalogKind, path: Path) -> list[str]:
    try:
        if kind == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES))
        names = list(reader.schema.names)
        reader.close()
        return names
    except (OSError, pa.ArrowException) as exc:
        message = _first_line(exc)
        if "empty" in message.lower():
            raise ManifestError(f"the manifest {path} is empty") from None
        raise ManifestError(f"cannot read the manifest {path}: {message}") from None


def _check_manifest(kind: CatalogKind, path: Path) -> tuple[LocatorKind, int]:
    """The locator column and the row count; ``ManifestError`` for bad columns or ids."""
    names = _columns(kind, path)
    if "id" not in names:
        raise ManifestError(f"the manifest {path} has no 'id' column (columns: {names})")
    locators = [name for name in _LOCATORS if name in names]
    if len(locators) != 1:
        found = "none" if not locators else " and ".join(locators)
        raise ManifestError(
            f"the manifest {path} needs exactly one of the columns url, key or path; has {found}"
        )
    total = 0
    for table in _batches(kind, path, ["id"], 65_536):
        ids = table.column("id").cast(pa.string())
        for offset, value in enumerate(ids.to_pylist()):
            if not value or not value.strip():
                raise ManifestError(f"row {total + offset + 1} of {path} has an empty id")
            if len(value) > MAX_ITEM_LENGTH:
                raise ManifestError(
                    f"row {total + offset + 1} of {path} has an id over"
                    f" {MAX_ITEM_LENGTH} characters"
                )
        total += table.num_rows
    if total == 0:
        raise ManifestError(f"the manifest {path} is empty (no rows)")
    return locators[0], total


def _manifest_items(catalog: Catalog, size: int) -> Iterator[Item]:
    path = Path(catalog.location)
    for table in _batches(catalog.kind, path, ["id", catalog.locator], size):
        ids = table.column("id").cast(pa.string()).to_pylist()
        locators = table.column(catalog.locator).cast(pa.string()).to_pylist()
        for item_id, locator in zip(ids, locators, strict=True):
            where = locator.strip() if isinstance(locator, str) and locator.strip() else None
            if where is not None and catalog.locator == "path":
                where = str(path.parent / where)
            yield Item(item=str(item_id), kind=catalog.locator, locator=where)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
