"""A local Deezer for `bench/scrape_rate.py`, run as its own process (the scraper's is apart).

    PYTHONPATH=tests python bench/deezer_fake.py --api-port P --cdn-port Q --covers 5000

One uvicorn server listens on two loopback ports: the API (the test suite's ``FakeDeezer``
from tests/scraper/fakes, so ``/genre``, ``/chart/{id}/albums`` and ``/album/{id}`` have
Deezer's real shapes) and the image host (the suite's ``FakeCdn``, serving ``cover_xl``).
As with Deezer, the image host is a separate host that does not count against the API's
quota. Every answer of either port comes ``--latency-ms`` late. The API enforces its limit as
Deezer does, inside HTTP 200 (``{"error": {"type": "Exception", "message": "Quota limit
exceeded", "code": 4}}``, no Retry-After), to any request past ``--limit`` in any sliding
1 s window (refused requests count in the window, as Deezer counts them); each such answer
is a violation.

The catalogue: ``--covers`` albums spread over five genre charts, each album with its own
kit cover from ../shared/datasets/discogs5 (read at start, never copied into the project).
The kit holds 4,702 distinct files among its 5,000; a cover whose bytes were served already
gets a JPEG comment naming its album after its JFIF header, so every album's cover has
distinct bytes (the ingester deduplicates by content hash) and is still a real JPEG.

``GET /_bench/progress`` and ``GET /_bench/stats`` on the image port report to the benchmark
(never paced, never counted): covers served so far; every API request's arrival time, kind
and the time its answer was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
import time
from collections import Counter, deque
from pathlib import Path

import uvicorn
from benchkit import COVERS, select_covers
from scraper.fakes import DeezerAlbum, FakeCdn, FakeDeezer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# Deezer's genre ids of the charts the benchmark scrapes, and the Sleeve genre of each.
CHARTS = {129: "jazz", 464: "metal", 132: "pop", 152: "rock", 116: "hiphop"}
QUOTA_EXCEEDED = {"error": {"type": "Exception", "message": "Quota limit exceeded", "code": 4}}
_WINDOW_S = 1.0
_FIRST_ID = 300_001


class _Paced:
    """An app's answers ``latency_s`` late, past ``limit`` requests per sliding second refused."""

    def __init__(self, app: ASGIApp, *, latency_s: float, limit: int | None) -> None:
        self._app = app
        self._latency_s = latency_s
        self._limit = limit
        self._recent: deque[float] = deque()
        self.arrivals: list[float] = []
        self.kinds: list[str] = []
        self.answered: list[tuple[float, float]] = []  # (arrival, answer sent) of each request
        self.violations = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        now = time.monotonic()
        self.arrivals.append(now)
        self.kinds.append(scope["path"].strip("/").split("/")[0])
        while self._recent and self._recent[0] <= now - _WINDOW_S:
            self._recent.popleft()
        self._recent.append(now)
        over = self._limit is not None and len(self._recent) > self._limit
        await asyncio.sleep(self._latency_s)
        if over:
            self.violations += 1
            await JSONResponse(QUOTA_EXCEEDED)(scope, receive, send)
        else:
            await self._app(scope, receive, send)
        self.answered.append((now, time.monotonic()))


class _Ports:
    """One ASGI app for both sockets: the API or the image host, by the port asked."""

    def __init__(self, *, api: _Paced, api_port: int, cdn: _Paced) -> None:
        self._api = api
        self._api_port = api_port
        self._cdn = cdn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["server"][1] == self._api_port:
            await self._api(scope, receive, send)
        elif scope["path"] == "/_bench/progress":
            await JSONResponse({"covers_served": len(self._cdn.arrivals)})(scope, receive, send)
        elif scope["path"] == "/_bench/stats":
            stats = {
                "api_arrivals": self._api.arrivals,
                "api_answered": sorted(self._api.answered),
                "api_kinds": dict(Counter(self._api.kinds)),
                "violations": self._api.violations,
                "covers_served": len(self._cdn.arrivals),
            }
            await JSONResponse(stats)(scope, receive, send)
        else:
            await self._cdn(scope, receive, send)


def stock(deezer: FakeDeezer, cdn: FakeCdn, covers: int) -> None:
    """``covers`` albums, one genre each, dealt in turn to the charts; distinct cover bytes."""
    files = select_covers(COVERS, min(covers, 5000))
    seen: set[str] = set()
    deezer.charts = {genre_id: [] for genre_id in CHARTS}
    for index in range(covers):
        number = _FIRST_ID + index
        data = Path(files[index % len(files)]).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha in seen:
            data = _with_comment(data, f"sleeve bench album {number}".encode())
        seen.add(sha)
        genre_id = list(CHARTS)[index % len(CHARTS)]
        album = DeezerAlbum(
            number, f"Record {number}", f"Artist {number % 997}", (genre_id,), f"dz{number}"
        )
        cdn.files[album.token] = data
        deezer.catalogue[number] = album
        deezer.charts[genre_id].append(album)


def _with_comment(jpeg: bytes, text: bytes) -> bytes:
    """``jpeg`` with a COM segment after its SOI and APP0 (JFIF) segments: new bytes, same image."""
    at = 2
    if jpeg[2:4] == b"\xff\xe0":
        at = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:at] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[at:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--cdn-port", type=int, required=True)
    parser.add_argument("--covers", type=int, default=5000)
    parser.add_argument("--limit", type=int, default=20, help="API requests per sliding second")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    cdn = FakeCdn()
    cdn.base_url = f"http://127.0.0.1:{args.cdn_port}"
    deezer = FakeDeezer(cdn)
    deezer.base_url = f"http://127.0.0.1:{args.api_port}"
    stock(deezer, cdn, args.covers)
    latency_s = args.latency_ms / 1000
    app = _Ports(
        api=_Paced(deezer, latency_s=latency_s, limit=args.limit),
        api_port=args.api_port,
        cdn=_Paced(cdn, latency_s=latency_s, limit=None),
    )
    sockets = [socket.create_server(("127.0.0.1", port)) for port in (args.api_port, args.cdn_port)]
    config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
