"""Logging setup, called once by entry points; every line names the request it belongs to."""

from __future__ import annotations

import contextvars
import logging

__all__ = ["REQUEST_ID", "RequestIdFilter", "configure_logging"]

# Set by the API for each request ("-" outside one); shown in every log line.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's, or "-") to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    for noisy in ("httpx", "httpcore", "alembic", "aiosqlite", "asyncio", "tf2onnx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
