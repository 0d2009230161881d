"""A fake MusicBrainz search API: ``/ws/2/release-group?query=…&fmt=json`` in its real shape.

As MusicBrainz does: a request without a User-Agent, or with a generic library one, gets 403;
``fmt=json`` is needed for JSON (XML otherwise); results hold release groups of every primary
type unless the query says ``primarytype:album``; ``limit`` is clamped to 100 (25 when not
given) and ``offset`` pages. With ``limit_rate(rate, window_s)`` the fake averages requests
over a sliding window as MusicBrainz does and answers 503 with its JSON error past the rate:
a burst within the window passes, a steady excess fails.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .cdn import unique_covers
from .coverart import FakeCoverArtArchive
from .server import FakeServer

__all__ = ["GENERIC_AGENTS", "RATE_EXCEEDED", "FakeMusicBrainz", "ReleaseGroup"]

GENERIC_AGENTS = ("python-httpx/", "python-requests/", "python-urllib/", "Python-urllib/")
RATE_EXCEEDED = {
    "error": "Your requests are exceeding the allowable rate limit. Please see "
    "http://wiki.musicbrainz.org/XMLWebService for more information."
}
_TAG = re.compile(r'tag:(?:"((?:[^"\\]|\\.)*)"|(\S+))')


@dataclass(frozen=True)
class ReleaseGroup:
    mbid: str
    title: str
    artist: str
    primary_type: str
    tags: tuple[tuple[str, int], ...]  # (tag, votes)


class FakeMusicBrainz(FakeServer):
    """``groups`` (in search-score order) drive the answers; covers go to ``coverart``."""

    def __init__(self, coverart: FakeCoverArtArchive) -> None:
        super().__init__()
        self.coverart = coverart
        self.groups: list[ReleaseGroup] = []
        self._rate: tuple[float, float] | None = None
        self._numbers = itertools.count(1)
        self._covers: Iterator[Path] = iter(())

    def reset(self) -> None:
        super().reset()
        self._rate = None

    def stock(self) -> None:
        """The default catalogue: 7 jazz albums (and a jazz single, which the type filter
        hides), 7 metal albums; every album has a cover at the Cover Art Archive."""
        self.groups.clear()
        self._numbers = itertools.count(1)
        # Past the covers of the iTunes and Deezer fakes: no cover shared by accident.
        self._covers = iter(unique_covers(300)[120:150])
        for n in range(1, 8):
            self.group(f"Modal Nights {n}", tags=(("jazz", 4), ("hard bop", 2)))
            if n == 2:
                self.group("Modal Single", primary_type="Single", tags=(("jazz", 3),))
        for n in range(1, 8):
            self.group(f"Doom Forge {n}", tags=(("heavy metal", 3), ("metal", 5)))

    def group(
        self,
        title: str,
        *,
        tags: tuple[tuple[str, int], ...],
        primary_type: str = "Album",
        art: bool = True,
    ) -> ReleaseGroup:
        """A new release group, searchable at once; with ``art`` its cover is on the archive."""
        number = next(self._numbers)
        mbid = str(uuid.UUID(int=number * 7919 + 0xC0FFEE))
        group = ReleaseGroup(mbid, title, f"Artist {number}", primary_type, tags)
        self.groups.append(group)
        if art:
            release = str(uuid.UUID(int=number * 104_729 + 0xBADA55))
            self.coverart.art[mbid] = release
            self.coverart.cdn.add(release, next(self._covers))
        return group

    def limit_rate(self, rate: float, window_s: float) -> None:
        """Answer 503 once more than ``rate`` requests/s arrive on average over ``window_s``."""
        self._rate = (rate, window_s)

    async def answer(self, request: Request) -> Response:
        agent = request.headers.get("user-agent", "")
        if not agent or agent.startswith(GENERIC_AGENTS):
            return PlainTextResponse(
                "Your requests are being blocked: please supply a meaningful User-Agent",
                status_code=403,
            )
        if self._over_rate():
            return JSONResponse(RATE_EXCEEDED, status_code=503)
        if request.url.path.rstrip("/") != "/ws/2/release-group":
            return JSONResponse({"error": "Not Found", "help": "…"}, status_code=404)
        if request.query_params.get("fmt") != "json":
            return Response("<?xml version='1.0'?><metadata/>", media_type="application/xml")
        return self._search(request)

    def _over_rate(self) -> bool:
        if self._rate is None:
            return False
        rate, window = self._rate
        now = time.monotonic()
        recent = sum(1 for hit in self.hits if now - window < hit.at <= now)
        # One request of slack: arrivals paced at exactly the rate may straddle the window.
        return recent > rate * window + 1

    def _search(self, request: Request) -> Response:
        query = request.query_params.get("query", "")
        limit = min(int(request.query_params.get("limit", "25")), 100)
        offset = int(request.query_params.get("offset", "0"))
        wanted = {
            (m.group(1) if m.group(1) is not None else m.group(2)).replace('\\"', '"').lower()
            for m in _TAG.finditer(query)
        }
        albums_only = "primarytype:album" in query.lower()
        hits = [
            g
            for g in self.groups
            if wanted & {tag for tag, _ in g.tags}
            and (not albums_only or g.primary_type == "Album")
        ]
        return JSONResponse(
            {
                "created": "2024-05-01T12:00:00.000Z",
                "count": len(hits),
                "offset": offset,
                "release-groups": [_entry(g) for g in hits[offset : offset + limit]],
            }
        )


def _entry(group: ReleaseGroup) -> dict[str, Any]:
    artist_id = str(uuid.uuid5(uuid.NAMESPACE_OID, group.artist))
    return {
        "id": group.mbid,
        "type-id": "f529b476-6e62-324f-b0aa-1f3e33d313fc",
        "score": 100,
        "primary-type-id": "f529b476-6e62-324f-b0aa-1f3e33d313fc",
        "count": 1,
        "title": group.title,
        "first-release-date": "2019-03-01",
        "primary-type": group.primary_type,
        "artist-credit": [
            {
                "name": group.artist,
                "artist": {"id": artist_id, "name": group.artist, "sort-name": group.artist},
            }
        ],
        "releases": [
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, group.mbid)),
                "status-id": "4e304316-386d-3409-af2e-78857eec5cfe",
                "title": group.title,
                "status": "Official",
            }
        ],
        "tags": [{"count": votes, "name": tag} for tag, votes in group.tags],
    }
