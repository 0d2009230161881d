"""Deezer: album charts per genre, each album's own genres, covers from ``cover_xl``.

For each asked genre the source pages ``/chart/{genre_id}/albums?limit=N&index=I`` for each
of its Deezer genre ids (named through ``/genre``), then asks ``/album/{id}`` for the album's
own genres (``genre_id``, ``genres.data``): chart items carry none, the genre is the chart's.
Covers come from ``cover_xl`` on Deezer's image host, which has its own limiter
(``SLEEVE_DOWNLOAD_RATE``) and does not count against the API quota.

Quirks handled: Deezer answers errors inside HTTP 200 as ``{"error": {"type", "message",
"code"}}``. Code 4 "Quota limit exceeded" (past 50 requests per 5 s) is throttling, backed
off and retried; code 800 "no data" for an album rejects that album with the reason; code
500 "Wrong parameter" for a chart means the taxonomy names a genre id Deezer does not have.
A chart answers 10 items unless asked for more, with ``total`` equal to what it returned and
no ``next``: pages are asked with ``limit`` and ``index`` until one comes back short.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.sources.base import (
    Candidate,
    GenreApiSource,
    Label,
    SourceContext,
    choose_labels,
    text_or_none,
)

if TYPE_CHECKING:
    pass

__all__ = ["DeezerSource", "deezer_source"]

_PAGE_MAX = 100
_QUOTA_EXCEEDED = 4
_NO_DATA = 800
_WRONG_PARAMETER = 500


def deezer_source(context: SourceContext) -> DeezerSource:
    """The Deezer source for the asked genres, with the taxonomy of the settings."""
    return DeezerSource(context, base_url=context.settings.deezer_base_url)


class _ApiError(SourceError):
    """An error Deezer put inside an HTTP 200 answer."""

    def __init__(self, path: str, error: object) -> None:
        details = error if isinstance(error, dict) else {}
        self.kind = str(details.get("type", "error"))
        self.code = details.get("code")
        self.text = str(details.get("message", error))
        super().__init__(f"deezer answered {path} with {self.kind} {self.code}: {self.text}")


@dataclass(frozen=True)
class _Album:
    source_id: str
    title: str | None
    artist: str | None
    cover: str | None
    chart_id: str
    listed_as: str  # the chart's genre, as Deezer names it


class DeezerSource(GenreApiSource):
    """Albums of the asked genres from Deezer's genre charts."""

    name = "deezer"

    def __init__(self, context: SourceContext, *, base_url: str) -> None:
        super().__init__(context, base_url=base_url)
        self._genre_names: dict[str, str] | None = None

    async def _albums(self, genre: str) -> AsyncGenerator[_Album, None]:
        names = await self._names()
        page = min(self._per_genre, _PAGE_MAX)
        for chart_id in self._taxonomy.ids(genre):
            listed_as = names.get(chart_id, f"Deezer genre {chart_id}")
            index = 0
            seen: set[str] = set()
            while True:
                items = await self._chart_page(chart_id, limit=page, index=index)
                albums = [_from_chart(item, chart_id, listed_as) for item in items]
                new = [a for a in albums if a is not None and a.source_id not in seen]
                for album in new:
                    seen.add(album.source_id)
                    yield album
                # A short page is the last; a page of nothing new means ``index`` is ignored.
                if len(items) < page or not new:
                    break
                index += len(items)

    async def _chart_page(self, chart_id: str, *, limit: int, index: int) -> list[Any]:
        path = f"/chart/{chart_id}/albums"
        try:
            doc = await self._get(path, {"limit": limit, "index": index})
        except _ApiError as exc:
            if exc.code == _WRONG_PARAMETER:
                raise SourceError(
                    f"deezer has no chart for genre id {chart_id} ({exc.kind} {exc.code}: "
                    f"{exc.text}); fix the [deezer] table of the taxonomy"
                ) from None
            raise
        items = doc.get("data", [])
        if not isinstance(items, list):
            raise SourceError(f"deezer answered {path} with a malformed 'data'")
        return items

    async def _describe(self, album: _Album, genre: str) -> tuple[Candidate, str | None]:
        listed_as = Label(genre, album.listed_as)
        try:
            doc = await self._get(f"/album/{album.source_id}")
        except _ApiError as exc:
            if exc.code != _NO_DATA:
                raise
            # Listed in a chart but gone from the catalogue: record why and go on.
            return self._candidate(album, (listed_as,), album.cover), (
                f"no data at deezer ({exc.kind} {exc.code})"
            )
        labels, dropped = choose_labels(
            listed_as, self._own_labels(doc), keep_multi=self._keep_multi
        )
        cover = text_or_none(doc.get("cover_xl")) or album.cover
        failure = dropped or (None if cover else "no cover_xl")
        return self._candidate(album, labels, cover), failure

    def _candidate(self, album: _Album, labels: tuple[Label, ...], cover: str | None) -> Candidate:
        return Candidate(
            source=self.name,
            source_id=album.source_id,
            labels=labels,
            provenance=f"deezer:chart/{album.chart_id}",
            artist=album.artist,
            title=album.title,
            cover_url=cover,
        )

    def _own_labels(self, album: dict[str, Any]) -> list[Label]:
        """The Sleeve genres of an album's ``genre_id`` and ``genres.data``."""
        genres = album.get("genres")
        entries = genres.get("data") if isinstance(genres, dict) else None
        own: list[Label] = []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            name = text_or_none(entry.get("name")) or f"Deezer genre {entry.get('id')}"
            genre = self._taxonomy.genre_of_id(entry.get("id")) or self._taxonomy.genre_of_name(
                name
            )
            if genre:
                own.append(Label(genre, name))
        main = self._taxonomy.genre_of_id(album.get("genre_id"))
        if main and all(label.genre != main for label in own):
            own.append(Label(main, f"Deezer genre {album.get('genre_id')}"))
        return own

    async def _names(self) -> dict[str, str]:
        """Deezer's genre names by id, asked once per run."""
        if self._genre_names is None:
            doc = await self._get("/genre")
            data = doc.get("data")
            self._genre_names = {
                str(g["id"]): str(g["name"])
                for g in (data if isinstance(data, list) else [])
                if isinstance(g, dict) and "id" in g and "name" in g
            }
        return self._genre_names

    async def _get(self, path: str, params: dict[str, str | int] | None = None) -> dict[str, Any]:
        doc = await self._http.get_json(
            f"{self._base}{path}", params=params, throttled=_quota_exceeded
        )
        if not isinstance(doc, dict):
            raise SourceError(f"deezer answered {path} with {type(doc).__name__}, not an object")
        if "error" in doc:
            raise _ApiError(path, doc["error"])
        return doc


def _quota_exceeded(status: int, body: bytes) -> bool:
    """Deezer's throttle answer: HTTP 200 with error code 4 "Quota limit exceeded"."""
    if status != 200:
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    error = doc.get("error") if isinstance(doc, dict) else None
    return isinstance(error, dict) and error.get("code") == _QUOTA_EXCEEDED


def _from_chart(item: object, chart_id: str, listed_as: str) -> _Album | None:
    if not isinstance(item, dict) or not isinstance(item.get("id"), int):
        return None
    artist = item.get("artist")
    return _Album(
        source_id=str(item["id"]),
        title=text_or_none(item.get("title")),
        artist=text_or_none(artist.get("name")) if isinstance(artist, dict) else None,
        cover=text_or_none(item.get("cover_xl")),
        chart_id=chart_id,
        listed_as=listed_as,
    )
