"""A fake Spotify: the client-credentials token endpoint and the Web API, in their real shapes.

``POST /api/token`` checks HTTP Basic client credentials and ``grant_type`` and answers
``{"access_token", "token_type", "expires_in"}`` (OAuth errors as ``{"error",
"error_description"}`` with 400). Under ``/v1`` every request needs a live bearer token, else
401 ``{"error": {"status", "message"}}``; ``/search?type=album`` answers ``searches[term]`` for
``q=genre:"term"`` (the fake's view of what Spotify's loose genre filter returns), paged by
``limit`` (1 to 50) and ``offset`` (at most 1000), with ``next``; ``/artists?ids=`` (at most
50) and ``/artists/{id}`` answer artists with their ``genres``; search results carry no album
genres. Paths in ``withdrawn`` answer 403, as endpoints Spotify withdrew from new apps do.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .cdn import FakeCdn, unique_covers
from .server import FakeServer

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "FakeSpotify", "SpotifyAlbum", "SpotifyArtist"]

CLIENT_ID = "5f0c2a1e9d8b4c7a8e6f1d2c3b4a5968"
CLIENT_SECRET = "9a8b7c6d5e4f30211f2e3d4c5b6a7988"
_GENRE_QUERY = re.compile(r'genre:"([^"]*)"|genre:(\S+)')


@dataclass(frozen=True)
class SpotifyArtist:
    id: str
    name: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class SpotifyAlbum:
    id: str
    name: str
    artists: tuple[SpotifyArtist, ...]
    token: str  # the cover's name on the CDN
    album_type: str = "album"


class FakeSpotify(FakeServer):
    """``searches`` (genre term → albums in result order) and ``artists`` drive the answers."""

    def __init__(self, cdn: FakeCdn) -> None:
        super().__init__()
        self.cdn = cdn
        self.searches: dict[str, list[SpotifyAlbum]] = {}
        self.artists: dict[str, SpotifyArtist] = {}
        self.withdrawn: set[str] = set()
        self.expires_in = 3600
        self.tokens: dict[str, float] = {}  # token → when it expires (time.monotonic)
        self._numbers = itertools.count(1)
        self._covers: Iterator[Path] = iter(())

    def reset(self) -> None:
        super().reset()
        self.withdrawn.clear()
        self.tokens.clear()
        self.expires_in = 3600

    def stock(self) -> None:
        """The default catalogue: 7 jazz albums by jazz artists (one of them without genres)
        and 7 metal albums; a single among the jazz results, which is not an album."""
        self.searches.clear()
        self.artists.clear()
        self._numbers = itertools.count(1)
        self._covers = iter(unique_covers(300)[150:180])
        jazz = self.artist("Quartet Nine", ("jazz", "hard bop"))
        vocal = self.artist("June Vale", ("vocal jazz",))
        newcomer = self.artist("New Trio", ())
        metal = self.artist("Iron Veil", ("metal", "thrash metal"))
        self.searches["jazz"] = [
            self.album(f"Blue Hours {n}", (jazz, vocal, newcomer)[n % 3]) for n in range(1, 8)
        ]
        self.searches["jazz"].insert(2, self.album("Blue Single", jazz, album_type="single"))
        self.searches["metal"] = [self.album(f"Steel Rain {n}", metal) for n in range(1, 8)]

    def artist(self, name: str, genres: tuple[str, ...]) -> SpotifyArtist:
        artist = SpotifyArtist(_spotify_id("ar", next(self._numbers)), name, genres)
        self.artists[artist.id] = artist
        return artist

    def album(self, name: str, *artists: SpotifyArtist, album_type: str = "album") -> SpotifyAlbum:
        """A new album with its own cover on the CDN (listed nowhere until a test lists it)."""
        number = next(self._numbers)
        token = f"ab67616d0000b273{number:024x}"
        self.cdn.add(token, next(self._covers))
        return SpotifyAlbum(_spotify_id("al", number), name, artists, token, album_type)

    def expire_tokens(self) -> None:
        """Every token handed out so far expires now (Spotify answers 401 from here on)."""
        for token in self.tokens:
            self.tokens[token] = float("-inf")

    # --- answers --------------------------------------------------------------------------

    async def answer(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if path == "/api/token":
            return await self._token(request)
        if not path.startswith("/v1/"):
            return _error(404, "Service not found")
        if (refused := self._authorise(request)) is not None:
            return refused
        if any(path.startswith(prefix) for prefix in self.withdrawn):
            return _error(403, "Forbidden")
        parts = path.split("/")[2:]
        if parts == ["search"]:
            return self._search(request)
        if parts == ["artists"]:
            ids = [i for i in request.query_params.get("ids", "").split(",") if i]
            if not ids or len(ids) > 50:
                return _error(400, "Too many ids requested" if ids else "Missing ids")
            found = [self.artists.get(i) for i in ids]
            return JSONResponse({"artists": [_artist(a) if a else None for a in found]})
        if len(parts) == 2 and parts[0] == "artists":
            artist = self.artists.get(parts[1])
            return JSONResponse(_artist(artist)) if artist else _error(404, "non existing id")
        return _error(404, "Service not found")

    async def _token(self, request: Request) -> Response:
        if request.method != "POST":
            return _error(405, "Method not allowed")
        form = parse_qs((await request.body()).decode())
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client"},
                status_code=400,
            )
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant_type parameter is missing",
                },
                status_code=400,
            )
        token = f"BQ{next(self._numbers):030d}"
        self.tokens[token] = time.monotonic() + self.expires_in
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        )

    def _authorise(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return _error(401, "No token provided")
        expires = self.tokens.get(header.removeprefix("Bearer "))
        if expires is None:
            return _error(401, "Invalid access token")
        if time.monotonic() >= expires:
            return _error(401, "The access token expired")
        return None

    def _search(self, request: Request) -> Response:
        params = request.query_params
        limit, offset = int(params.get("limit", "20")), int(params.get("offset", "0"))
        if not 0 < limit <= 50:
            return _error(400, "Invalid limit")
        if not 0 <= offset <= 1000:
            return _error(400, "Invalid offset")
        match = _GENRE_QUERY.search(params.get("q", ""))
        if params.get("type") != "album" or match is None:
            return _error(400, "Unsupported query")
        term = match.group(1) if match.group(1) is not None else match.group(2)
        found = self.searches.get(term.lower(), [])
        page = found[offset : offset + limit]
        api = "https://api.spotify.com/v1/search"
        more = offset + limit < len(found)
        query = {"q": params.get("q", ""), "type": "album", "limit": limit}
        return JSONResponse(
            {
                "albums": {
                    "href": f"{api}?{urlencode({**query, 'offset': offset})}",
                    "limit": limit,
                    "next": f"{api}?{urlencode({**query, 'offset': offset + limit})}"
                    if more
                    else None,
                    "offset": offset,
                    "previous": None,
                    "total": len(found),
                    "items": [self._album(a) for a in page],
                }
            }
        )

    def _album(self, album: SpotifyAlbum) -> dict[str, Any]:
        return {
            "album_type": album.album_type,
            "total_tracks": 9,
            "available_markets": ["US", "GB"],
            "external_urls": {"spotify": f"https://open.spotify.com/album/{album.id}"},
            "href": f"https://api.spotify.com/v1/albums/{album.id}",
            "id": album.id,
            "images": [
                {"url": self.cdn.spotify_url(album.token), "height": 640, "width": 640},
                {"url": f"{self.cdn.base_url}/small/{album.token}", "height": 300, "width": 300},
                {"url": f"{self.cdn.base_url}/tiny/{album.token}", "height": 64, "width": 64},
            ],
            "name": album.name,
            "release_date": "2019-03-01",
            "release_date_precision": "day",
            "type": "album",
            "uri": f"spotify:album:{album.id}",
            "artists": [
                {
                    "external_urls": {"spotify": f"https://open.spotify.com/artist/{a.id}"},
                    "href": f"https://api.spotify.com/v1/artists/{a.id}",
                    "id": a.id,
                    "name": a.name,
                    "type": "artist",
                    "uri": f"spotify:artist:{a.id}",
                }
                for a in album.artists
            ],
        }


def _artist(artist: SpotifyArtist) -> dict[str, Any]:
    return {
        "external_urls": {"spotify": f"https://open.spotify.com/artist/{artist.id}"},
        "followers": {"href": None, "total": 1234},
        "genres": list(artist.genres),
        "href": f"https://api.spotify.com/v1/artists/{artist.id}",
        "id": artist.id,
        "images": [],
        "name": artist.name,
        "popularity": 42,
        "type": "artist",
        "uri": f"spotify:artist:{artist.id}",
    }


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def _spotify_id(kind: str, number: int) -> str:
    """A 22-character base-62 id, as Spotify's look."""
    return f"{kind}{number:020d}"
