"""What every service process holds: settings, the database and the object store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sleeve_common.db import Database
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore, open_store

__all__ = ["Runtime", "open_runtime"]


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    store: ObjectStore


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Connect to the database and store, failing fast with a clear error if either is down."""
    db = Database(settings.database_url)
    try:
        await db.ping()
        await db.check_schema()
        store = open_store(settings)
        await store.ping()
        yield Runtime(settings=settings, db=db, store=store)
    finally:
        await db.aclose()
