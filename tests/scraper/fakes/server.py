"""A fake HTTP server for the scraper's tests: a real loopback socket, uvicorn in a thread.

``FakeServer`` is an ASGI app that records every request (``hits``) and answers from
``answer()``, unless a scripted ``Fault`` is queued for the request's path: a test queues
429s, empty 403s, slow or malformed answers for the next requests to a path prefix, and the
fake goes back to normal once they are used up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from support import ThreadedUvicorn

__all__ = [
    "FakeServer",
    "Fault",
    "Hit",
    "empty",
    "http_date",
    "json_body",
    "malformed",
    "serve",
    "slow",
    "status",
]

Fault = Callable[["FakeServer", Request], Awaitable[Response]]
"""Answers one request in place of the server (which it may still ask, as ``slow`` does)."""


@dataclass(frozen=True)
class Hit:
    """One request as the fake saw it; ``at`` is ``time.monotonic()`` on arrival."""

    at: float
    path: str
    query: dict[str, str]
    user_agent: str | None
    method: str = "GET"
    authorization: str | None = None


class FakeServer:
    """Records requests, plays queued faults, else answers through ``answer``."""

    def __init__(self) -> None:
        self.base_url = ""  # set by ``serve``
        self.hits: list[Hit] = []
        self._faults: deque[tuple[str, Fault]] = deque()

    def reset(self) -> None:
        """Forget hits and faults (fixtures call it between tests)."""
        self.hits.clear()
        self._faults.clear()

    def fail(self, prefix: str, *faults: Fault) -> None:
        """Answer the next requests whose path starts with ``prefix`` with ``faults``, in order."""
        self._faults.extend((prefix, fault) for fault in faults)

    def paths(self, prefix: str = "/") -> list[str]:
        return [hit.path for hit in self.hits if hit.path.startswith(prefix)]

    async def answer(self, request: Request) -> Response:
        return JSONResponse({"error": "not found"}, status_code=404)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.hits.append(
            Hit(
                at=time.monotonic(),
                path=request.url.path,
                query=dict(request.query_params),
                user_agent=request.headers.get("user-agent"),
                method=request.method,
                authorization=request.headers.get("authorization"),
            )
        )
        fault = self._take_fault(request.url.path)
        response = await (fault(self, request) if fault else self.answer(request))
        await response(scope, receive, send)

    def _take_fault(self, path: str) -> Fault | None:
        for index, (prefix, fault) in enumerate(self._faults):
            if path.startswith(prefix):
                del self._faults[index]
                return fault
        return None


def status(code: int, *, headers: dict[str, str] | None = None, body: bytes = b"") -> Fault:
    """An answer with ``code``, optional headers (``Retry-After``) and body."""

    async def fault(server: FakeServer, request: Request) -> Response:
        return Response(body, status_code=code, headers=headers)

    return fault


def empty(code: int) -> Fault:
    """A bare status with no body and no headers (iTunes throttles with a bare 403)."""
    return status(code)


def json_body(doc: object, code: int = 200) -> Fault:
    """A JSON answer, e.g. an error that an API puts inside HTTP 200."""

    async def fault(server: FakeServer, request: Request) -> Response:
        return JSONResponse(doc, status_code=code)

    return fault


def malformed() -> Fault:
    """HTTP 200 whose JSON body is cut off."""
    return status(200, body=b'{"feed": {"entry": [', headers={"content-type": "application/json"})


def slow(seconds: float) -> Fault:
    """The server's usual answer, ``seconds`` late (a timeout, where the client's is shorter)."""

    async def fault(server: FakeServer, request: Request) -> Response:
        await asyncio.sleep(seconds)
        return await server.answer(request)

    return fault


def http_date(seconds_from_now: float) -> str:
    return formatdate(time.time() + seconds_from_now, usegmt=True)


@contextlib.contextmanager
def serve(app: FakeServer) -> Iterator[FakeServer]:
    """Serve ``app`` on a free loopback port from a thread with its own loop."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="none",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = ThreadedUvicorn(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert server.startup_done.wait(30), "the fake server did not start within 30 s"
        assert server.started, "the fake server failed to start; see the captured log"
        host, port = sock.getsockname()[:2]
        app.base_url = f"http://{host}:{port}"
        yield app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive(), "the fake server did not stop within 30 s"
