"""Errors as JSON ``{"error": {"code", "message"}}``; HTTP codes are chosen here and only here.

ApiError (carries status, code, message)
 raised by routes; library errors are mapped below:
 NotFound → 404, Conflict → 409, InvalidImage → 422, DatabaseUnavailable/StoreUnavailable → 503
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sleeve_common.exceptions import (
    Conflict,
    DatabaseUnavailable,
    NotFound,
    SleeveError,
    StoreUnavailable,
)
from sleeve_common.images import InvalidImage

__all__ = ["ApiError", "error_body", "install_error_handlers"]

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

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def _json(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(code, message))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return _json(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return _json(exc.status_code, code, str(exc.detail))

    @app.exception_handler(SleeveError)
    async def _sleeve(_request: Request, exc: SleeveError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return _json(404, "not_found", str(exc))
        if isinstance(exc, Conflict):
            return _json(409, "conflict", str(exc))
        if isinstance(exc, InvalidImage):
            return _json(422, "invalid_image", str(exc))
        if isinstance(exc, DatabaseUnavailable | StoreUnavailable):
            logger.error("dependency down: %s", exc)
            return _json(503, "unavailable", str(exc))
        logger.exception("unexpected Sleeve error")
        return _json(500, "internal_error", "internal error; see the server log")
