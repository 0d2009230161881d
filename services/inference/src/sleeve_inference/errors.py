"""Errors as JSON ``{"error": {"code", "message"}}``; HTTP codes are chosen here and only here.

Routes declare the errors they answer with ``error_responses`` (the body schema, and what
each status means there), so the OpenAPI spec lists every status a client can get.

ApiError (carries status, code, message, headers)
 raised by routes; library and serving errors are mapped below:
 NotFound → 404, Conflict and ModelUnusable → 409, InvalidImage and ScoringInputError → 422,
 TooManyPixels → 413, DatabaseUnavailable/StoreUnavailable → 503, SQLAlchemy's
 OperationalError/InterfaceError and any DBAPIError that invalidated its connection (the
 database went away mid-request, a server shutting down) → 503,
 StoreRefused (wrong S3 keys, a deleted bucket) → 503 ``store_refused`` without Retry-After:
 the request was fine and the server cannot answer it, as when the store is down, but it will
 not pass by itself, and its own code keeps it apart from an outage (and from the 500s that
 mean a bug),
 NoModelLoaded/NoModel → 503, Overloaded/QueueFull → 503 with Retry-After,
 DeadlineExceeded → 503,
 anything else → 500, still in this JSON shape (``UnhandledErrors``), naming the request id
 under which the traceback is logged, and nothing of the exception.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sleeve_common.exceptions import (
    Conflict,
    DatabaseUnavailable,
    ModelUnusable,
    NotFound,
    SleeveError,
    StoreRefused,
    StoreUnavailable,
)
from sleeve_common.images import InvalidImage
from sleeve_common.logs import REQUEST_ID
from sleeve_inference.admission import Overloaded
from sleeve_inference.batcher import BatcherClosed, NoModel, QueueFull
from sleeve_inference.scoring.errors import ScoringInputError
from sleeve_inference.serving import DeadlineExceeded, NoModelLoaded, TooManyPixels

__all__ = [
    "SERVING_ERRORS",
    "ApiError",
    "ErrorBody",
    "UnhandledErrors",
    "allowed_methods",
    "error_body",
    "error_responses",
    "install_error_handlers",
    "serving_error",
]

logger = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the client should see, with its HTTP status and a stable code."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, for programs", examples=["not_found"])
    message: str = Field(description="for people", examples=["scoring job 7 does not exist"])


class ErrorBody(BaseModel):
    """Every error of the API outside ``/v2``."""

    error: ErrorDetail


# What each status means on any route; a route can say more for its own.
_MEANINGS = {
    400: "the body could not be parsed: not UTF-8 JSON, or malformed multipart",
    401: "no `X-API-Key` header, or a wrong key",
    403: "this server has no SLEEVE_API_KEY, so writes are off",
    404: "no such resource",
    409: "the resource is in a state that does not allow this",
    413: "the body is over the size limit: SLEEVE_MAX_UPLOAD_BYTES for each image it may hold",
    422: "a parameter or a field of the body is invalid; the message names it",
    503: "the database or the object store cannot be reached (`unavailable`: try again "
    "shortly), or the store refuses the server's credentials or has no such bucket "
    "(`store_refused`: an operator must fix the store's settings)",
}


def error_responses(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with ``ErrorBody``; a
    ``(status, meaning)`` pair says what the status means on this route."""
    responses: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, meaning = entry if isinstance(entry, tuple) else (entry, _MEANINGS[entry])
        responses[status] = {"model": ErrorBody, "description": meaning}
    return responses


def _json(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(code, message), headers=headers)


def _internal_error() -> JSONResponse:
    """The 500: the request id finds the traceback in the log; the exception stays there."""
    return _json(
        500, "internal_error", f"internal error; see the server log for {REQUEST_ID.get()}"
    )


class UnhandledErrors:
    """ASGI middleware (inside the request log): an exception no handler took is logged once,
    with its traceback and the request's id, and answered with the 500 above.

    Starlette's own last resort answers outside the request log: its traceback carried no
    request id and its answer no ``X-Request-ID``, so a client had nothing to quote.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            if not started:  # else the server closes the connection of the unfinished answer
                await _internal_error()(scope, receive, send)


# What the serving core raises for a request it cannot answer now; ``serving_error`` maps each.
SERVING_ERRORS = (
    Overloaded,
    QueueFull,
    NoModelLoaded,
    NoModel,
    BatcherClosed,
    DeadlineExceeded,
    TooManyPixels,
)


def serving_error(exc: Exception) -> ApiError:
    """The API's answer to an error of the serving core (``SERVING_ERRORS``)."""
    if isinstance(exc, Overloaded):
        retry = {"Retry-After": str(exc.retry_after_s)}
        return ApiError(503, "overloaded", str(exc), headers=retry)
    if isinstance(exc, QueueFull):
        return ApiError(503, "overloaded", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, NoModelLoaded | NoModel):
        return ApiError(503, "model_not_loaded", str(exc))
    if isinstance(exc, DeadlineExceeded):
        return ApiError(
            503,
            "deadline_exceeded",
            f"{exc}: the server is too busy (SLEEVE_REQUEST_DEADLINE_S)",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, TooManyPixels):
        return ApiError(413, "too_many_pixels", str(exc))
    return ApiError(503, "unavailable", str(exc))


# The methods a 405's Allow can name (TRACE and CONNECT: no route takes them).
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """The methods any of ``routes`` takes at the request's path, each tried on them as the
    request with that method (Starlette's own 405 names the first route's methods only)."""
    routes = list(routes)
    return [
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.code, exc.message, exc.headers)

    async def _serving(_request: Request, exc: Exception) -> JSONResponse:
        answer = serving_error(exc)
        return _json(answer.status, answer.code, answer.message, answer.headers)

    for kind in SERVING_ERRORS:
        app.add_exception_handler(kind, _serving)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        # Only for an error outside ``UnhandledErrors`` (the request log's own); Starlette
        # logs its traceback after this answer.
        return _internal_error()

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return _json(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette's Allow names the methods of the first route on the path only.
            allowed = allowed_methods(request.app.router.routes, request.scope)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return _json(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(DBAPIError)
    async def _database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        # The database went away mid-request (a moved SQLite file, a stopped server, a
        # session killed by a shutdown): 503, and the next request tries a fresh connection.
        # Any other driver error is a bug of ours: 500, with its traceback in the log.
        if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
            logger.error("database error: %s", str(exc).splitlines()[0])
            return _json(503, "unavailable", "the database is unavailable; try again shortly")
        logger.error("unexpected database error", exc_info=exc)
        return _internal_error()

    @app.exception_handler(SleeveError)
    async def _sleeve(_request: Request, exc: SleeveError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return _json(404, "not_found", str(exc))
        if isinstance(exc, Conflict):
            return _json(409, "conflict", str(exc))
        if isinstance(exc, ModelUnusable):
            return _json(409, "model_unusable", str(exc))
        if isinstance(exc, InvalidImage):
            return _json(422, "invalid_image", str(exc))
        if isinstance(exc, ScoringInputError):
            return _json(422, "invalid_request", str(exc))
        if isinstance(exc, DatabaseUnavailable | StoreUnavailable):
            logger.error("dependency down: %s", exc)
            return _json(503, "unavailable", str(exc))
        if isinstance(exc, StoreRefused):
            logger.error("object store refuses: %s", exc)
            return _json(503, "store_refused", str(exc))
        logger.exception("unexpected Sleeve error")
        return _internal_error()
