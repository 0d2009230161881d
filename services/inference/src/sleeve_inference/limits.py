"""Refuse request bodies the API cannot take, before any parsing: over a size limit (counted
as they stream in), or in a content coding it does not decode."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sleeve_inference.errors import error_body

__all__ = ["BodySizeLimit", "IdentityEncodingOnly"]


class _TooLarge(HTTPException):
    """Raised from ``receive``. An HTTPException, so a route parsing the body passes it on as
    a 413 (FastAPI turns any other error while reading a body into a 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _message(max_bytes))


def _message(max_bytes: int) -> str:
    return f"request body is over {max_bytes} bytes"


class BodySizeLimit:
    """ASGI middleware: 413 as soon as Content-Length or the received bytes pass ``max_bytes``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            error_body("payload_too_large", _message(self.max_bytes)),
            status_code=413,
            headers={"connection": "close"},
        )
        await response(scope, receive, send)


class _EncodedBody(HTTPException):
    """Raised from ``receive``, as ``_TooLarge``: each route answers it in its own body (V2's
    too), and a route that reads no body is not refused."""

    def __init__(self, coding: str) -> None:
        super().__init__(
            415,
            f"Content-Encoding {coding[:40]!r} is not supported: send the body uncompressed",
            headers={"Accept-Encoding": "identity"},
        )


class IdentityEncodingOnly:
    """ASGI middleware: 415 for a body sent with a ``Content-Encoding`` (RFC 9110 §15.5.16).

    Nothing here inflates a body: a gzip-compressed image was reported as "not a recognised
    image format" and compressed JSON as unparsable, neither naming the cause. A gzip bomb is
    refused the same way, before a byte of it is read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name != b"content-encoding":
                    continue
                coding = value.decode("latin-1").strip().lower()
                if coding not in ("", "identity"):
                    await self.app(scope, _refuse_body(coding), send)
                    return
        await self.app(scope, receive, send)


def _refuse_body(coding: str) -> Receive:
    async def refusing_receive() -> Message:
        raise _EncodedBody(coding)

    return refusing_receive
