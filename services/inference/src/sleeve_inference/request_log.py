"""Request ids and the access log.

Each request gets an id (or keeps a sane ``X-Request-ID`` it came with); every log line written
while it is handled carries it (``sleeve_common.logs``), the answer returns it in
``X-Request-ID``, and one access-log line per request (logger ``sleeve.access``, INFO) says
method, path, status and time.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sleeve_common.logs import REQUEST_ID

__all__ = ["RequestLogMiddleware"]

_access = logging.getLogger("sleeve.access")

_HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(_HEADER.encode(), b"").decode("latin-1")
        request_id = given if _SANE.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if _access.isEnabledFor(logging.INFO):
                _access.info(
                    '%s "%s %s" %d %.1f ms',
                    scope["client"][0] if scope.get("client") else "-",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                )
            REQUEST_ID.reset(token)
