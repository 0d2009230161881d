"""A fake image host (mzstatic, dzcdn, scdn, bcbits, archive.org) serving discogs5 kit covers."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
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
    """The image hosts of every source, one path shape each:

    - ``/image/thumb/Music/<token>/<size>`` (iTunes' mzstatic: only 600x600 is served);
    - ``/images/cover/<token>/<size>`` (Deezer's ``cover_xl``);
    - ``/image/<token>`` (Spotify's i.scdn.co);
    - ``/img/<token>_2.jpg`` (Bandcamp's f1.bcbits.com, as the dataset's links name them);
    - ``/download/mbid-<release>/<file>`` (archive.org, where the Cover Art Archive redirects):
      a 302 to ``/ia<n>/items/mbid-<release>/<file>``, the data node serving the token
      ``<release>``;
    - ``/files/<token>.jpg`` (any web server, for manifests of URLs).

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

    def spotify_url(self, token: str) -> str:
        return f"{self.base_url}/image/{token}"

    def bandcamp_url(self, token: str) -> str:
        return f"{self.base_url}/img/{token}_2.jpg"

    def archive_url(self, release: str, image_id: int) -> str:
        """Where the Cover Art Archive sends a release's front 500 px thumbnail."""
        name = f"mbid-{release}"
        return f"{self.base_url}/download/{name}/{name}-{image_id}_thumb500.jpg"

    def file_url(self, token: str) -> str:
        return f"{self.base_url}/files/{token}.jpg"

    async def answer(self, request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        token, size, wanted = "", "", ""
        if parts[:3] == ["image", "thumb", "Music"] and len(parts) == 5:
            token, size, wanted = parts[3], parts[4], ITUNES_SIZE
        elif parts[:2] == ["images", "cover"] and len(parts) == 4:
            token, size, wanted = parts[2], parts[3], DEEZER_SIZE
        elif parts[0] == "image" and len(parts) == 2:
            token = parts[1]
        elif parts[0] == "img" and len(parts) == 2 and parts[1].endswith("_2.jpg"):
            token = parts[1].removesuffix("_2.jpg")
        elif parts[0] == "files" and len(parts) == 2:
            token = parts[1].removesuffix(".jpg")
        elif parts[0] == "download" and len(parts) == 3 and parts[1].startswith("mbid-"):
            # archive.org's answer: the item lives on a data node.
            return RedirectResponse(f"/ia800{len(parts[1]) % 10}/items/{parts[1]}/{parts[2]}", 302)
        elif len(parts) == 4 and parts[1] == "items" and parts[2].startswith("mbid-"):
            token = parts[2].removeprefix("mbid-")
        data = self.files.get(token)
        if not token or data is None or size != wanted:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg")
