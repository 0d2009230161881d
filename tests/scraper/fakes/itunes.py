"""A fake iTunes: the top-albums RSS feed and the Search API, in their real JSON shapes.

The feed answers ``/us/rss/topalbums/limit=N/genre=ID/json`` with ``limit=`` and ``genre=``
in either order (as Apple does); its ``entry`` is a list, a single object when the feed
holds one album, and absent when it holds none. Artwork URLs point at the fake CDN in the
small sizes Apple lists; the CDN serves only 600x600.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .cdn import FakeCdn, unique_covers
from .server import FakeServer

__all__ = ["APPLE_GENRES", "FakeItunes", "ItunesAlbum"]

APPLE_GENRES = {
    "6": "Country",
    "7": "Electronic",
    "11": "Jazz",
    "14": "Pop",
    "18": "Hip-Hop/Rap",
    "21": "Rock",
    "1153": "Metal",
}


@dataclass(frozen=True)
class ItunesAlbum:
    collection_id: int
    name: str
    artist: str
    genre_id: str
    token: str  # the cover's name on the CDN

    @property
    def genre_name(self) -> str:
        return APPLE_GENRES[self.genre_id]


class FakeItunes(FakeServer):
    """``feeds`` (genre id → albums in chart order) and ``searchable`` drive the answers."""

    def __init__(self, cdn: FakeCdn) -> None:
        super().__init__()
        self.cdn = cdn
        self.feeds: dict[str, list[ItunesAlbum]] = {}
        self.searchable: list[ItunesAlbum] = []
        self._ids = itertools.count(1_440_000_001)
        self._covers: Iterator[Path] = iter(unique_covers())

    def stock(self) -> None:
        """The default catalogue: 8 jazz albums (the feed lists 4, search finds the rest),
        6 metal, 2 rock (one, "Jazz Odyssey", matches a jazz search but is not jazz)."""
        self.feeds.clear()
        self.searchable.clear()
        self._ids = itertools.count(1_440_000_001)
        self._covers = iter(unique_covers())
        jazz = [self.album("11", f"Blue Session {n}") for n in range(1, 9)]
        metal = [self.album("1153", f"Iron Hymns {n}") for n in range(1, 7)]
        rock = [self.album("21", "Garage Days"), self.album("21", "Jazz Odyssey")]
        self.feeds.update({"11": jazz[:4], "1153": metal, "21": rock})
        self.searchable.extend([*jazz[2:], rock[1]])

    def album(self, genre_id: str, name: str) -> ItunesAlbum:
        """A new album with its own cover on the CDN (listed nowhere until a test lists it)."""
        number = next(self._ids)
        token = f"it{number}"
        self.cdn.add(token, next(self._covers))
        return ItunesAlbum(number, name, f"Artist {number % 1000}", genre_id, token)

    async def answer(self, request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["us", "rss", "topalbums"] and parts[5] == "json":
            params = dict(p.split("=", 1) for p in parts[3:5] if "=" in p)
            if set(params) == {"limit", "genre"} and params["limit"].isdigit():
                return self._feed(params["genre"], int(params["limit"]))
        if parts == ["search"]:
            return self._search(request)
        return Response(status_code=404)

    def _feed(self, genre_id: str, limit: int) -> Response:
        albums = self.feeds.get(genre_id, [])[: min(limit, 200)]
        url = f"https://itunes.apple.com/us/rss/topalbums/limit={limit}/genre={genre_id}/json"
        feed: dict[str, Any] = {
            "author": {
                "name": {"label": "iTunes Store"},
                "uri": {"label": "http://www.apple.com/itunes/"},
            },
            "updated": {"label": "2024-05-01T01:23:45-07:00"},
            "rights": {"label": "Copyright 2008 Apple Inc."},
            "title": {"label": f"iTunes Store: Top Albums in {APPLE_GENRES.get(genre_id, '?')}"},
            "icon": {"label": "http://itunes.apple.com/favicon.ico"},
            "link": [
                {"attributes": {"rel": "alternate", "type": "text/html", "href": "https://x"}},
                {"attributes": {"rel": "self", "href": url}},
            ],
            "id": {"label": url},
        }
        entries = [self._entry(a) for a in albums]
        if len(entries) == 1:
            feed["entry"] = entries[0]  # Apple's quirk: one album is an object, not a list
        elif entries:
            feed["entry"] = entries
        return JSONResponse({"feed": feed})

    def _entry(self, album: ItunesAlbum) -> dict[str, Any]:
        link = f"https://music.apple.com/us/album/x/{album.collection_id}?uo=2"
        return {
            "im:name": {"label": album.name},
            "im:image": [
                {
                    "label": self.cdn.itunes_url(album.token, f"{size}x{size}bb.png"),
                    "attributes": {"height": str(size)},
                }
                for size in (55, 60, 170)
            ],
            "im:itemCount": {"label": "11"},
            "im:price": {"label": "$9.99", "attributes": {"amount": "9.99", "currency": "USD"}},
            "im:contentType": {
                "im:contentType": {"attributes": {"term": "Album", "label": "Album"}},
                "attributes": {"term": "Music", "label": "Music"},
            },
            "rights": {"label": "℗ 2019 Fake Records"},
            "title": {"label": f"{album.name} - {album.artist}"},
            "link": {"attributes": {"rel": "alternate", "type": "text/html", "href": link}},
            "id": {"label": link, "attributes": {"im:id": str(album.collection_id)}},
            "im:artist": {
                "label": album.artist,
                "attributes": {"href": "https://music.apple.com/us/artist/x/1?uo=2"},
            },
            "category": {
                "attributes": {
                    "im:id": album.genre_id,
                    "term": album.genre_name,
                    "scheme": f"https://music.apple.com/us/genre/music/id{album.genre_id}?uo=2",
                    "label": album.genre_name,
                }
            },
            "im:releaseDate": {
                "label": "2019-03-01T00:00:00-07:00",
                "attributes": {"label": "March 1, 2019"},
            },
        }

    def _search(self, request: Request) -> Response:
        term = request.query_params.get("term", "").lower()
        limit = min(int(request.query_params.get("limit", "50")), 200)
        if request.query_params.get("entity") != "album":
            return JSONResponse({"resultCount": 0, "results": []})
        hits = [a for a in self.searchable if term in f"{a.name} {a.genre_name}".lower()][:limit]
        return JSONResponse({"resultCount": len(hits), "results": [self._result(a) for a in hits]})

    def _result(self, album: ItunesAlbum) -> dict[str, Any]:
        return {
            "wrapperType": "collection",
            "collectionType": "Album",
            "artistId": 900_000 + album.collection_id % 1000,
            "collectionId": album.collection_id,
            "artistName": album.artist,
            "collectionName": album.name,
            "collectionCensoredName": album.name,
            "artistViewUrl": "https://music.apple.com/us/artist/x/1?uo=4",
            "collectionViewUrl": f"https://music.apple.com/us/album/x/{album.collection_id}?uo=4",
            "artworkUrl60": self.cdn.itunes_url(album.token, "60x60bb.jpg"),
            "artworkUrl100": self.cdn.itunes_url(album.token, "100x100bb.jpg"),
            "collectionPrice": 9.99,
            "collectionExplicitness": "notExplicit",
            "trackCount": 11,
            "copyright": "℗ 2012 Fake Records",
            "country": "USA",
            "currency": "USD",
            "releaseDate": "2012-01-01T08:00:00Z",
            "primaryGenreName": album.genre_name,
        }
