"""A plain fake host for the HTTP edge's own tests: JSON, sized bodies, streams, redirects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from .server import FakeServer

__all__ = ["FakeEcho"]


class FakeEcho(FakeServer):
    """``/bytes/N`` (with Content-Length), ``/stream/N`` (chunked, no length),
    ``/hop/K`` (K redirects, 307 then 302, like the Cover Art Archive), ``/echo`` (the
    request's method, form body and chosen headers), else ``{"path": …}``."""

    async def answer(self, request: Request) -> Response:
        if request.url.path == "/echo":
            return JSONResponse(
                {
                    "method": request.method,
                    "form": dict(parse_qsl((await request.body()).decode())),
                    "content_type": request.headers.get("content-type"),
                    "authorization": request.headers.get("authorization"),
                    "user_agent": request.headers.get("user-agent"),
                }
            )
        parts = request.url.path.strip("/").split("/")
        if len(parts) == 2 and parts[1].isdigit():
            size = int(parts[1])
            if parts[0] == "bytes":
                return Response(b"x" * size, media_type="application/octet-stream")
            if parts[0] == "stream":
                return StreamingResponse(_chunks(size), media_type="application/octet-stream")
            if parts[0] == "hop":
                if size == 0:
                    return JSONResponse({"landed": True})
                code = 307 if size % 2 else 302
                return RedirectResponse(f"/hop/{size - 1}", status_code=code)
        return JSONResponse({"path": request.url.path})


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for start in range(0, size, 1024):
        yield b"y" * min(1024, size - start)
