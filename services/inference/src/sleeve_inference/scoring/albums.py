"""Albums in the database as a scoring input: ``albums:`` plus an optional filter.

``albums:source=itunes,genre=rock,scrape_run=3,dataset=discogs5,split=test`` selects the
accepted albums with a stored cover that match every given key (none: all of them). The
item id is the album id, its bytes are its cover in the object store, and its stored genre
(the dataset's label when a dataset is named, else the album's one label, none when it has
several) lets each row say whether the model confidently disagrees with it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select

from sleeve_common.genres import normalize_genre
from sleeve_common.models import MAX_ROW_ID, Album, AlbumLabel, Dataset, DatasetMember
from sleeve_inference.scoring.errors import CatalogError

if TYPE_CHECKING:
    from sleeve_common.db import Database

__all__ = ["ALBUMS_SCHEME", "AlbumFilter", "AlbumRow", "count_albums", "iter_album_pages"]

ALBUMS_SCHEME = "albums:"
SPLITS = ("train", "val", "test")
_KEYS = ("source", "genre", "scrape_run", "dataset", "split")
_MAX_FILTER_LENGTH = 1024


@dataclass(frozen=True)
class AlbumFilter:
    """Which albums to score; every field given must match."""

    source: str | None = None
    genre: str | None = None
    scrape_run: int | None = None
    dataset: str | None = None
    split: str | None = None

    @classmethod
    def parse(cls, text: str) -> AlbumFilter:
        """``source=itunes,genre=rock`` → a filter; ``CatalogError`` says what is wrong."""
        if len(text) > _MAX_FILTER_LENGTH:
            raise CatalogError(f"the albums filter is longer than {_MAX_FILTER_LENGTH} characters")
        values: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, equals, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not equals or not value:
                raise CatalogError(f"albums filter {part!r}: write KEY=VALUE")
            if key not in _KEYS:
                raise CatalogError(
                    f"albums filter: unknown key {key!r}; use {', '.join(_KEYS)} "
                    "(e.g. albums:source=itunes,genre=rock)"
                )
            if key in values:
                raise CatalogError(f"albums filter: {key!r} is given twice")
            if any(unicodedata.category(char) == "Cc" for char in value):
                # PostgreSQL cannot even compare a string holding NUL: a 500, not "none".
                raise CatalogError(f"albums filter: the {key} holds a control character")
            values[key] = value
        return cls(
            source=values.get("source"),
            genre=_genre(values["genre"]) if "genre" in values else None,
            scrape_run=_row_id("scrape_run", values["scrape_run"])
            if "scrape_run" in values
            else None,
            dataset=values.get("dataset"),
            split=_split(values.get("split"), values.get("dataset")),
        )

    def describe(self) -> str:
        given = [f"{k}={v}" for k in _KEYS if (v := getattr(self, k)) is not None]
        return ALBUMS_SCHEME + ",".join(given)


@dataclass(frozen=True)
class AlbumRow:
    """One album to score: its id, its cover's key and its stored genre (None: not one)."""

    album_id: int
    cover_key: str
    stored_genre: str | None


async def count_albums(db: Database, wanted: AlbumFilter) -> int:
    """How many albums the filter selects; ``CatalogError`` for an unknown dataset or none."""
    if wanted.dataset is not None:
        async with db.session() as session:
            found = await session.scalar(select(Dataset.id).where(Dataset.name == wanted.dataset))
        if found is None:
            raise CatalogError(f"albums filter: no dataset named {wanted.dataset!r}")
    query = _selection(wanted).with_only_columns(func.count(Album.id.distinct()))
    async with db.session() as session:
        total = int(await session.scalar(query) or 0)
    if total == 0:
        raise CatalogError(f"no albums with a stored cover match {wanted.describe()}")
    return total


async def iter_album_pages(
    db: Database, wanted: AlbumFilter, *, size: int
) -> AsyncIterator[list[AlbumRow]]:
    """The selected albums in id order, ``size`` at a time (keyset paging: memory stays flat)."""
    after = 0
    while True:
        query = (
            _selection(wanted)
            .with_only_columns(Album.id, Album.cover_key, _stored_genre(wanted))
            .where(Album.id > after)
            .group_by(Album.id, Album.cover_key)
            .order_by(Album.id)
            .limit(size)
        )
        async with db.session() as session:
            rows = (await session.execute(query)).all()
        if not rows:
            return
        yield [AlbumRow(album_id=r[0], cover_key=str(r[1]), stored_genre=r[2]) for r in rows]
        after = rows[-1][0]


def _selection(wanted: AlbumFilter) -> Select[Any]:
    query = select(Album.id).where(Album.status == "accepted", Album.cover_key.is_not(None))
    if wanted.source is not None:
        query = query.where(Album.source == wanted.source)
    if wanted.scrape_run is not None:
        query = query.where(Album.scrape_run_id == wanted.scrape_run)
    if wanted.dataset is not None:
        member = and_(DatasetMember.album_id == Album.id)
        if wanted.split is not None:
            member = and_(member, DatasetMember.split == wanted.split)
        query = query.join(DatasetMember, member).join(
            Dataset, and_(Dataset.id == DatasetMember.dataset_id, Dataset.name == wanted.dataset)
        )
        if wanted.genre is not None:
            query = query.where(DatasetMember.genre == wanted.genre)
    else:
        query = query.outerjoin(AlbumLabel, AlbumLabel.album_id == Album.id)
        if wanted.genre is not None:
            query = query.where(
                Album.id.in_(select(AlbumLabel.album_id).where(AlbumLabel.genre == wanted.genre))
            )
    return query


def _stored_genre(wanted: AlbumFilter) -> ColumnElement[str | None]:
    """The dataset member's genre, or the album's genre when all its labels agree."""
    if wanted.dataset is not None:
        return func.min(DatasetMember.genre)
    genre = func.min(AlbumLabel.genre)
    return case((func.count(AlbumLabel.genre.distinct()) == 1, genre), else_=None)


def _genre(value: str) -> str:
    try:
        return normalize_genre(value)
    except ValueError as exc:
        raise CatalogError(f"albums filter: {exc}") from None


def _row_id(key: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_ROW_ID:
        raise CatalogError(f"albums filter: {key} must be a run id (1 to {MAX_ROW_ID})")
    return int(value)


def _split(split: str | None, dataset: str | None) -> str | None:
    if split is None:
        return None
    if dataset is None:
        raise CatalogError("albums filter: split needs a dataset (dataset=NAME,split=test)")
    if split not in SPLITS:
        raise CatalogError(f"albums filter: split must be one of {', '.join(SPLITS)}")
    return split
