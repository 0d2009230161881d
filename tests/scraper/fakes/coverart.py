"""A fake Cover Art Archive: ``/release-group/{mbid}/front-{size}`` as the real one answers it.

A release group with art answers 307 to archive.org (the fake CDN), which answers 302 to a
data node serving the file: two redirects to follow. A group without art answers 404, a
malformed MBID 400, both with the archive's plain-text bodies.
"""

from __future__ import annotations

import itertools
import re

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from .cdn import FakeCdn
from .server import FakeServer

__all__ = ["FakeCoverArtArchive"]

_MBID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SIZES = {"front", "front-250", "front-500", "front-1200"}


class FakeCoverArtArchive(FakeServer):
    """``art`` maps a release group's MBID to the release whose front image the archive picked;
    that release id is the cover's token on the CDN."""

    def __init__(self, cdn: FakeCdn) -> None:
        super().__init__()
        self.cdn = cdn
        self.art: dict[str, str] = {}
        self._image_ids = itertools.count(10_000_000_001)

    def reset(self) -> None:
        super().reset()
        self.art.clear()

    def downloads(self, mbid: str) -> int:
        """Requests for this release group's cover so far."""
        return len(self.paths(f"/release-group/{mbid}/"))

    async def answer(self, request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "release-group" or parts[2] not in _SIZES:
            return PlainTextResponse("Not Found", status_code=404)
        mbid = parts[1]
        if not _MBID.fullmatch(mbid):
            return PlainTextResponse(f"{mbid} is not a valid MBID", status_code=400)
        release = self.art.get(mbid)
        if release is None:
            return PlainTextResponse(
                f"No cover art found for release group {mbid}", status_code=404
            )
        target = self.cdn.archive_url(release, next(self._image_ids))
        return RedirectResponse(target, status_code=307)
