"""A fake Deezer API: ``/genre``, ``/chart/{id}/albums`` and ``/album/{id}`` in their real shapes.

As Deezer does: errors come inside HTTP 200 (``DataException`` 800 for an unknown album,
``ParameterException`` 500 for an unknown chart genre; tests queue ``QUOTA_EXCEEDED``); chart
items carry no genre; a chart answers 10 items unless given ``limit``, honours ``index``,
and reports a ``total`` equal to what it returned, with no ``next``.
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

__all__ = ["DEEZER_GENRES", "NO_DATA", "QUOTA_EXCEEDED", "DeezerAlbum", "FakeDeezer"]

DEEZER_GENRES = {
    0: "All",
    132: "Pop",
    116: "Rap/Hip Hop",
    152: "Rock",
    113: "Dance",
    106: "Electro",
    129: "Jazz",
    464: "Metal",
    98: "Classical",
    173: "Films/Games",
}
QUOTA_EXCEEDED = {"error": {"type": "Exception", "message": "Quota limit exceeded", "code": 4}}
NO_DATA = {"error": {"type": "DataException", "message": "no data", "code": 800}}
WRONG_PARAMETER = {
    "error": {"type": "ParameterException", "message": "Wrong parameter", "code": 500}
}


@dataclass(frozen=True)
class DeezerAlbum:
    id: int
    title: str
    artist: str
    genre_ids: tuple[int, ...]  # the album's own genres; the first is its genre_id
    token: str


class FakeDeezer(FakeServer):
    """``charts`` (genre id → albums in chart order) and ``catalogue`` drive the answers."""

    def __init__(self, cdn: FakeCdn) -> None:
        super().__init__()
        self.cdn = cdn
        self.charts: dict[int, list[DeezerAlbum]] = {}
        self.catalogue: dict[int, DeezerAlbum] = {}
        self._ids = itertools.count(300_001)
        # From the other end of the kit than the iTunes fake: no cover is shared by accident.
        self._covers: Iterator[Path] = reversed(unique_covers())

    def stock(self) -> None:
        """The default catalogue: a jazz chart of 12 albums and a metal chart of 6."""
        self.charts.clear()
        self.catalogue.clear()
        self._ids = itertools.count(300_001)
        self._covers = reversed(unique_covers())
        self.charts[129] = [self.album((129,), f"Late Set {n}") for n in range(1, 13)]
        self.charts[464] = [self.album((464,), f"Black Anvil {n}") for n in range(1, 7)]

    def album(self, genre_ids: tuple[int, ...], title: str) -> DeezerAlbum:
        """A new album in the catalogue, with its own cover on the CDN."""
        number = next(self._ids)
        token = f"dz{number}"
        self.cdn.add(token, next(self._covers))
        album = DeezerAlbum(number, title, f"Artist {number % 1000}", genre_ids, token)
        self.catalogue[number] = album
        return album

    async def answer(self, request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        if parts == ["genre"]:
            return JSONResponse({"data": [_genre(i) for i in DEEZER_GENRES]})
        if len(parts) == 3 and parts[0] == "chart" and parts[2] == "albums":
            return self._chart(parts[1], request)
        if len(parts) == 2 and parts[0] == "album":
            album = self.catalogue.get(int(parts[1])) if parts[1].isdigit() else None
            return JSONResponse(self._album(album) if album else NO_DATA)
        return JSONResponse(NO_DATA)

    def _chart(self, genre: str, request: Request) -> Response:
        if not genre.isdigit() or int(genre) not in self.charts:
            return JSONResponse(WRONG_PARAMETER)
        limit = int(request.query_params.get("limit", "10"))
        index = int(request.query_params.get("index", "0"))
        items = [
            self._item(album, position)
            for position, album in enumerate(self.charts[int(genre)], start=1)
        ][index : index + limit]
        return JSONResponse({"data": items, "total": len(items)})

    def _covers_of(self, album: DeezerAlbum) -> dict[str, str]:
        small = f"{self.cdn.base_url}/images/cover/{album.token}"
        return {
            "cover": f"https://api.deezer.com/album/{album.id}/image",
            "cover_small": f"{small}/56x56-000000-80-0-0.jpg",
            "cover_medium": f"{small}/250x250-000000-80-0-0.jpg",
            "cover_big": f"{small}/500x500-000000-80-0-0.jpg",
            "cover_xl": self.cdn.deezer_url(album.token),
            "md5_image": album.token,
        }

    def _artist(self, album: DeezerAlbum) -> dict[str, Any]:
        artist_id = 27_000 + album.id % 1000
        return {
            "id": artist_id,
            "name": album.artist,
            "link": f"https://www.deezer.com/artist/{artist_id}",
            "picture": f"https://api.deezer.com/artist/{artist_id}/image",
            "radio": True,
            "tracklist": f"https://api.deezer.com/artist/{artist_id}/top?limit=50",
            "type": "artist",
        }

    def _item(self, album: DeezerAlbum, position: int) -> dict[str, Any]:
        return {
            "id": album.id,
            "title": album.title,
            "link": f"https://www.deezer.com/album/{album.id}",
            **self._covers_of(album),
            "record_type": "album",
            "tracklist": f"https://api.deezer.com/album/{album.id}/tracks",
            "explicit_lyrics": False,
            "position": position,
            "artist": self._artist(album),
            "type": "album",
        }

    def _album(self, album: DeezerAlbum) -> dict[str, Any]:
        return {
            "id": album.id,
            "title": album.title,
            "upc": f"0{album.id:011d}",
            "link": f"https://www.deezer.com/album/{album.id}",
            "share": f"https://www.deezer.com/album/{album.id}?utm_source=deezer",
            **self._covers_of(album),
            "genre_id": album.genre_ids[0] if album.genre_ids else -1,
            "genres": {"data": [_genre(i) for i in album.genre_ids]},
            "label": "Fake Records",
            "nb_tracks": 9,
            "duration": 2400,
            "fans": 1234,
            "release_date": "2019-03-01",
            "record_type": "album",
            "available": True,
            "tracklist": f"https://api.deezer.com/album/{album.id}/tracks",
            "explicit_lyrics": False,
            "explicit_content_lyrics": 0,
            "explicit_content_cover": 0,
            "contributors": [self._artist(album) | {"role": "Main"}],
            "artist": self._artist(album),
            "type": "album",
            "tracks": {"data": []},
        }


def _genre(genre_id: int) -> dict[str, Any]:
    return {
        "id": genre_id,
        "name": DEEZER_GENRES[genre_id],
        "picture": f"https://api.deezer.com/genre/{genre_id}/image",
        "type": "genre",
    }
