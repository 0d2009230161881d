"""A fake image host (mzstatic / dzcdn) serving real covers from the discogs5 kit."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from support import DISCOGS5

from .server import FakeServer

__all__ = ["DEEZER_SIZE", "ITUNES_SIZE", "FakeCdn", "unique_covers"]

ITUNES_SIZE = "600x600bb.jpg"  # the only artwork size this fake serves: proves the rewrite
DEEZER_SIZE = "1000x1000-000000-80-0-0.jpg"


@cache
def unique_covers(count: int = 120) -> tuple[Path, ...]:
    """``count`` kit covers with distinct bytes (the kit has cross-genre copies)."""
    seen: set[str] = set()
    picked: list[Path] = []
    for path in sorted(DISCOGS5.glob("*/*.jpg")):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha not in seen:
            seen.add(sha)
            picked.append(path)
        if len(picked) == count:
            break
    return tuple(picked)


class FakeCdn(FakeServer):
    """``/image/thumb/Music/<token>/<size>`` (iTunes) and ``/images/cover/<token>/<size>`` (Deezer).

    A token names a cover; ``files`` maps tokens to the bytes served, so a test can spoil one
    (broken bytes) or remove it (404).
    """

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}

    def reset(self) -> None:
        super().reset()
        self.files.clear()

    def add(self, token: str, cover: Path) -> None:
        self.files[token] = cover.read_bytes()

    def itunes_url(self, token: str, size: str = "100x100bb.jpg") -> str:
        return f"{self.base_url}/image/thumb/Music/{token}/{size}"

    def deezer_url(self, token: str) -> str:
        return f"{self.base_url}/images/cover/{token}/{DEEZER_SIZE}"

    async def answer(self, request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        if parts[:3] == ["image", "thumb", "Music"] and len(parts) == 5:
            token, size, wanted = parts[3], parts[4], ITUNES_SIZE
        elif parts[:2] == ["images", "cover"] and len(parts) == 4:
            token, size, wanted = parts[2], parts[3], DEEZER_SIZE
        else:
            return Response(status_code=404)
        data = self.files.get(token)
        if data is None or size != wanted:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg")
