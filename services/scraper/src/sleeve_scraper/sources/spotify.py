"""Spotify: albums from genre-filtered searches, their genres from their artists.

Token: the client-credentials grant (``POST SLEEVE_SPOTIFY_AUTH_URL`` with
``grant_type=client_credentials``, the app's id and secret as HTTP Basic auth). It is renewed a
minute before its ``expires_in`` runs out, and at once when a request answers 401 (a token that
expired early or was revoked); a second 401 in a row fails the run. Neither the secret nor a
token appears in a message or log line.

Listing: for each of the asked genre's Spotify genre names (the taxonomy's ``ids``),
``/search?q=genre:"NAME"&type=album&limit=L&offset=O``, paged until a page comes back short,
without ``next``, or at the search's offset cap. Only ``album_type`` "album" is kept.

Genres: an album's ``genres`` is almost always empty, so its own genres are its artists':
one ``/artists?ids=…`` request per search page (up to 50 ids). The genre filter of an album
search matches loosely, so an album whose artists' genres name Sleeve genres, none of them the
asked one, is skipped (as iTunes search results of another primary genre are); an album
whose artists have no genres keeps the searched one. Several Sleeve genres follow
``SLEEVE_SCRAPE_MULTI_GENRE``. Covers: the largest of the album's ``images``.

Degrading: Spotify answers 403 or 404 for endpoints it has withdrawn from new apps. When
``/artists?ids=`` does, artists are asked one by one (``/artists/{id}``); when that does too,
albums are labelled by the searched genre alone. Each switch is logged once as a warning. A
search answering 403 or 404 leaves nothing to list: the run fails with that explanation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sleeve_common.exceptions import ConfigError
from sleeve_scraper.exceptions import Refused, SourceError
from sleeve_scraper.sources.base import (
    Candidate,
    GenreApiSource,
    Label,
    SourceContext,
    choose_labels,
    text_or_none,
)

__all__ = ["SpotifySource", "spotify_source"]

logger = logging.getLogger(__name__)

_now: Callable[[], float] = time.monotonic
"""The token's clock; tests replace it to make a token expire."""

_PAGE_MAX = 50  # the search's largest ``limit``
_OFFSET_MAX = 1000  # the search answers nothing past this offset
_ARTISTS_MAX = 50  # ids per ``/artists`` request
_RENEW_BEFORE_S = 60.0  # a token this close to its end is renewed before use
_WITHDRAWN = (403, 404)


def spotify_source(context: SourceContext) -> SpotifySource:
    """The Spotify source for the asked genres, with the app's client credentials."""
    settings = context.settings
    if settings.spotify_client_id is None or settings.spotify_client_secret is None:
        # ``check_scrape_request`` says so first, at length.
        raise ConfigError(
            "the spotify source needs SLEEVE_SPOTIFY_CLIENT_ID and SLEEVE_SPOTIFY_CLIENT_SECRET"
        )
    pair = f"{settings.spotify_client_id}:{settings.spotify_client_secret.get_secret_value()}"
    return SpotifySource(
        context,
        base_url=settings.spotify_api_base_url,
        auth_url=settings.spotify_auth_url,
        basic_auth=base64.b64encode(pair.encode()).decode("ascii"),
    )


@dataclass(frozen=True)
class _Album:
    source_id: str
    title: str | None
    artist: str | None
    cover: str | None
    term: str  # the Spotify genre searched
    genres: tuple[str, ...]  # the album's own and its artists' Spotify genres


class SpotifySource(GenreApiSource):
    """Albums of the asked genres from Spotify's search, labelled by their artists' genres."""

    name = "spotify"

    def __init__(
        self, context: SourceContext, *, base_url: str, auth_url: str, basic_auth: str
    ) -> None:
        super().__init__(context, base_url=base_url)
        self._auth_url = auth_url
        self._basic_auth = basic_auth  # never logged
        self._token: str | None = None
        self._token_until = float("-inf")
        self._token_lock = asyncio.Lock()
        self._artist_genres: dict[str, tuple[str, ...]] = {}
        self._artists_mode = "batch"  # then "single", then "none" as Spotify withdraws them

    # --- listing --------------------------------------------------------------------------

    async def _albums(self, genre: str) -> AsyncGenerator[_Album, None]:
        page = min(self._per_genre, _PAGE_MAX)
        for term in self._taxonomy.ids(genre):
            offset = 0
            while offset < _OFFSET_MAX:
                items, more = await self._search(term, limit=page, offset=offset)
                await self._learn_artists(_artist_ids(items))
                for item in items:
                    album = self._album(item, term)
                    if album is not None and self._fits(album, genre):
                        yield album
                if len(items) < page or not more:
                    break
                offset += len(items)

    async def _search(self, term: str, *, limit: int, offset: int) -> tuple[list[Any], bool]:
        """One page of albums for ``genre:"term"``, and whether Spotify says more follow."""
        params: dict[str, str | int] = {
            "q": f'genre:"{term}"',
            "type": "album",
            "limit": limit,
            "offset": offset,
        }
        try:
            doc = await self._get("/search", params)
        except Refused as exc:
            if exc.status in _WITHDRAWN:
                raise SourceError(
                    f"spotify answered its search with HTTP {exc.status}{_said(exc)}: the search "
                    "is not available to this app, so the spotify source has nothing to list"
                ) from None
            raise
        albums = doc.get("albums")
        if not isinstance(albums, dict) or not isinstance(albums.get("items"), list):
            raise SourceError(f"spotify answered the search for {term!r} without 'albums.items'")
        return albums["items"], bool(albums.get("next"))

    def _album(self, item: object, term: str) -> _Album | None:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return None
        if item.get("album_type", "album") != "album":
            return None  # singles and compilations
        artists = [a for a in item.get("artists") or [] if isinstance(a, dict)]
        genres = [*_strings(item.get("genres"))]
        for artist in artists:
            genres.extend(self._artist_genres.get(str(artist.get("id")), ()))
        names = [text_or_none(a.get("name")) for a in artists]
        return _Album(
            source_id=item["id"],
            title=text_or_none(item.get("name")),
            artist=", ".join(n for n in names if n) or None,
            cover=_largest_image(item.get("images")),
            term=term,
            genres=tuple(dict.fromkeys(genres)),
        )

    def _fits(self, album: _Album, genre: str) -> bool:
        """False for an album whose known genres name other Sleeve genres only."""
        own = {label.genre for label in self._own_labels(album)}
        return not own or genre in own

    # --- labels ---------------------------------------------------------------------------

    async def _describe(self, album: _Album, genre: str) -> tuple[Candidate, str | None]:
        labels, dropped = choose_labels(
            Label(genre, album.term), self._own_labels(album), keep_multi=self._keep_multi
        )
        candidate = Candidate(
            source=self.name,
            source_id=album.source_id,
            labels=labels,
            provenance=f"spotify:search/genre:{album.term}",
            artist=album.artist,
            title=album.title,
            cover_url=album.cover,
        )
        return candidate, dropped or (None if album.cover else "no cover image")

    def _own_labels(self, album: _Album) -> list[Label]:
        labels: dict[str, Label] = {}
        for name in album.genres:
            genre = self._taxonomy.genre_of_id(name) or self._taxonomy.genre_of_name(name)
            if genre:
                labels.setdefault(genre, Label(genre, name))
        return list(labels.values())

    async def _learn_artists(self, ids: Iterable[str]) -> None:
        """Fetch the genres of the artists not known yet, as far as Spotify still allows."""
        wanted = [i for i in dict.fromkeys(ids) if i not in self._artist_genres]
        if self._artists_mode == "none":
            return
        for start in range(0, len(wanted), _ARTISTS_MAX):
            chunk = wanted[start : start + _ARTISTS_MAX]
            if self._artists_mode == "batch":
                try:
                    doc = await self._get("/artists", {"ids": ",".join(chunk)})
                except Refused as exc:
                    if exc.status not in _WITHDRAWN:
                        raise
                    self._withdrawn("/artists?ids=", exc, "asking for artists one by one")
                    self._artists_mode = "single"
                else:
                    found = doc.get("artists")
                    for artist in found if isinstance(found, list) else []:
                        self._remember(artist)
                    for artist_id in chunk:  # unknown ids come back as null
                        self._artist_genres.setdefault(artist_id, ())
                    continue
            for artist_id in chunk:
                if self._artists_mode != "single":
                    break
                try:
                    self._remember(await self._get(f"/artists/{artist_id}"))
                except Refused as exc:
                    if exc.status not in _WITHDRAWN:
                        raise
                    self._withdrawn(
                        "/artists/{id}", exc, "labelling albums by the searched genre alone"
                    )
                    self._artists_mode = "none"

    def _remember(self, artist: object) -> None:
        if isinstance(artist, dict) and isinstance(artist.get("id"), str):
            self._artist_genres[artist["id"]] = tuple(_strings(artist.get("genres")))

    def _withdrawn(self, endpoint: str, exc: Refused, instead: str) -> None:
        logger.warning(
            "spotify answered %s with HTTP %s%s (withdrawn for this app?); %s",
            endpoint,
            exc.status,
            _said(exc),
            instead,
        )

    # --- requests -------------------------------------------------------------------------

    async def _get(self, path: str, params: dict[str, str | int] | None = None) -> dict[str, Any]:
        """GET an API path with a valid token; a 401 renews the token once and asks again."""
        url = f"{self._base}{path}"
        for renewed in (False, True):
            token = await self._access_token(renew=renewed)
            try:
                doc = await self._http.get_json(
                    url, params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except Refused as exc:
                if exc.status != 401:
                    raise
                if renewed:
                    raise SourceError(
                        f"spotify refused a fresh access token for {path} (HTTP 401{_said(exc)})"
                    ) from None
                logger.info("spotify answered %s with 401; renewing the access token", path)
                continue
            if not isinstance(doc, dict):
                raise SourceError(
                    f"spotify answered {path} with {type(doc).__name__}, not an object"
                )
            return doc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _access_token(self, *, renew: bool) -> str:
        """The current token, or a new one when it is (nearly) expired or ``renew`` is set."""
        async with self._token_lock:
            stale = self._token is None or _now() >= self._token_until
            if renew or stale:
                self._token, lifetime = await self._grant()
                self._token_until = _now() + max(0.0, lifetime - _RENEW_BEFORE_S)
            assert self._token is not None
            return self._token

    async def _grant(self) -> tuple[str, float]:
        try:
            doc = await self._http.post_form(
                self._auth_url,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {self._basic_auth}"},
            )
        except Refused as exc:
            raise SourceError(
                f"spotify refused the client credentials (HTTP {exc.status}{_said(exc)}); "
                "check SLEEVE_SPOTIFY_CLIENT_ID and SLEEVE_SPOTIFY_CLIENT_SECRET"
            ) from None
        token = doc.get("access_token") if isinstance(doc, dict) else None
        lifetime = doc.get("expires_in") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceError("spotify's token answer holds no access_token")
        return token, float(lifetime) if isinstance(lifetime, int | float) else 3600.0


def _said(exc: Refused) -> str:
    """What Spotify said in an error body (``{"error": {"message"}}`` or OAuth's
    ``{"error", "error_description"}``), as ``": message"``, or nothing."""
    try:
        doc = json.loads(exc.body)
    except ValueError:
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        message = text_or_none(error.get("message"))
    else:
        description = text_or_none(doc.get("error_description")) if isinstance(doc, dict) else None
        message = ": ".join(m for m in (text_or_none(error), description) if m) or None
    return f": {message}" if message else ""


def _artist_ids(items: list[Any]) -> list[str]:
    return [
        artist["id"]
        for item in items
        if isinstance(item, dict)
        for artist in item.get("artists") or []
        if isinstance(artist, dict) and isinstance(artist.get("id"), str)
    ]


def _strings(value: object) -> list[str]:
    return [s for v in value if (s := text_or_none(v))] if isinstance(value, list) else []


def _largest_image(images: object) -> str | None:
    """The URL of the widest image (Spotify lists 640, 300 and 64 px)."""
    if not isinstance(images, list):
        return None
    usable = [i for i in images if isinstance(i, dict) and text_or_none(i.get("url"))]
    best = max(usable, key=lambda i: i.get("width") or 0, default=None)
    return text_or_none(best.get("url")) if best else None
