"""iTunes: Apple's top-albums RSS feed per genre id, topped up by the Search API.

For each asked genre the source lists the RSS feed of each of its Apple genre ids
(``/us/rss/topalbums/limit=N/genre=ID/json``), then, when those hold fewer than
``--per-genre`` albums, Search API results (``/search?term=…&entity=album``) whose primary
genre is that genre. Artwork URLs are rewritten to 600x600, the size every album offers.

Quirks handled: the feed's ``entry`` is one object instead of a list when there is one album
and is missing when there are none; past its limit the Search API answers 403 with an empty
body and no Retry-After, which is throttling (backed off and retried), not a refusal.
"""

from __future__ import annotations

import re
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

__all__ = ["ItunesSource", "itunes_source", "largest_artwork"]

_STOREFRONT = "us"
_FEED_MAX = 200  # the feed's largest limit
_SEARCH_MAX = 200  # the Search API's largest limit
_ARTWORK_SIZE = re.compile(r"/\d+x\d+[a-z]*\.(?:jpe?g|png|webp)$", re.IGNORECASE)
_LARGEST = "/600x600bb.jpg"


def largest_artwork(url: str) -> str:
    """``…/100x100bb.jpg`` → ``…/600x600bb.jpg``; other URLs unchanged."""
    return _ARTWORK_SIZE.sub(_LARGEST, url)


def itunes_source(context: SourceContext) -> ItunesSource:
    """The iTunes source for the asked genres, with the taxonomy of the settings."""
    return ItunesSource(context, base_url=context.settings.itunes_base_url)


@dataclass(frozen=True)
class _Album:
    source_id: str
    title: str | None
    artist: str | None
    artwork: str | None
    genre_id: str | None  # the album's own primary genre
    genre_name: str | None
    listed_as: str  # the listing's genre, as Apple names it
    provenance: str


class ItunesSource(GenreApiSource):
    """Albums of the asked genres from Apple's feeds and Search API."""

    name = "itunes"

    async def _albums(self, genre: str) -> AsyncGenerator[_Album, None]:
        """The feeds of the genre's ids, then (asked only if still short) search results."""
        for genre_id in self._taxonomy.ids(genre):
            for album in await self._feed(genre_id):
                yield album
        for album in await self._search(genre):
            yield album

    async def _feed(self, genre_id: str) -> list[_Album]:
        limit = min(self._per_genre, _FEED_MAX)
        url = f"{self._base}/{_STOREFRONT}/rss/topalbums/limit={limit}/genre={genre_id}/json"
        doc = await self._http.get_json(url, throttled=_throttled)
        feed = doc.get("feed") if isinstance(doc, dict) else None
        if not isinstance(feed, dict):
            raise SourceError(f"the iTunes feed for genre {genre_id} has no 'feed' object ({url})")
        entries = feed.get("entry", [])  # absent when the feed is empty
        if isinstance(entries, dict):  # one album: an object, not a list
            entries = [entries]
        if not isinstance(entries, list):
            raise SourceError(f"the iTunes feed for genre {genre_id} has a malformed 'entry'")
        albums = (_from_entry(e, genre_id) for e in entries if isinstance(e, dict))
        return [a for a in albums if a is not None]

    async def _search(self, genre: str) -> list[_Album]:
        term = self._taxonomy.term(genre)
        doc = await self._http.get_json(
            f"{self._base}/search",
            params={
                "term": term,
                "media": "music",
                "entity": "album",
                "country": _STOREFRONT,
                "limit": _SEARCH_MAX,
            },
            throttled=_throttled,
        )
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list):
            raise SourceError(f"the iTunes Search API answered without 'results' for {term!r}")
        albums = (_from_result(r, term) for r in results if isinstance(r, dict))
        # Search matches words, not genres: keep the albums whose primary genre is this one.
        return [
            a
            for a in albums
            if a is not None and self._taxonomy.genre_of_name(a.genre_name or "") == genre
        ]

    async def _describe(self, album: _Album, genre: str) -> tuple[Candidate, str | None]:
        own = self._taxonomy.genre_of_id(album.genre_id) or self._taxonomy.genre_of_name(
            album.genre_name or ""
        )
        own_labels = (
            [Label(own, album.genre_name or f"Apple genre {album.genre_id}")] if own else []
        )
        labels, dropped = choose_labels(
            Label(genre, album.listed_as), own_labels, keep_multi=self._keep_multi
        )
        candidate = Candidate(
            source=self.name,
            source_id=album.source_id,
            labels=labels,
            provenance=album.provenance,
            artist=album.artist,
            title=album.title,
            cover_url=album.artwork,
        )
        failure = dropped or (None if album.artwork else "no artwork URL")
        return candidate, failure


def _throttled(status: int, body: bytes) -> bool:
    """Apple's Search API throttles with a bare 403: no body, no Retry-After."""
    return status == 403 and not body.strip()


def _from_entry(entry: dict[str, Any], feed_genre_id: str) -> _Album | None:
    source_id = _dig(entry, "id", "attributes", "im:id")
    if not isinstance(source_id, str) or not source_id:
        return None
    images = [i for i in entry.get("im:image") or [] if isinstance(i, dict) and i.get("label")]
    biggest = max(images, key=_height, default=None)
    category = _dig(entry, "category", "attributes") or {}
    term = category.get("term") if isinstance(category, dict) else None
    return _Album(
        source_id=source_id,
        title=text_or_none(_dig(entry, "im:name", "label")),
        artist=text_or_none(_dig(entry, "im:artist", "label")),
        artwork=largest_artwork(biggest["label"]) if biggest else None,
        genre_id=text_or_none(category.get("im:id")) if isinstance(category, dict) else None,
        genre_name=text_or_none(term),
        listed_as=f"Apple genre {feed_genre_id}",
        provenance=f"itunes:rss/{_STOREFRONT}/genre={feed_genre_id}",
    )


def _from_result(result: dict[str, Any], term: str) -> _Album | None:
    source_id = result.get("collectionId")
    if result.get("wrapperType") != "collection" or not isinstance(source_id, int):
        return None
    artwork = text_or_none(result.get("artworkUrl100"))
    return _Album(
        source_id=str(source_id),
        title=text_or_none(result.get("collectionName")),
        artist=text_or_none(result.get("artistName")),
        artwork=largest_artwork(artwork) if artwork else None,
        genre_id=None,
        genre_name=text_or_none(result.get("primaryGenreName")),
        listed_as=f"search {term!r}",
        provenance=f"itunes:search/{term}",
    )


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _height(image: dict[str, Any]) -> int:
    height = _dig(image, "attributes", "height")
    return int(height) if isinstance(height, str) and height.isdigit() else 0
