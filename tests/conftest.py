"""Shared fixtures: databases and object stores on the embedded default and on real servers."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from servers import S3Server, embedded_postgres, seaweedfs_s3
from sqlalchemy.engine import make_url
from support import fresh_postgres_database, make_settings

from sleeve_common.db import Database, upgrade_database
from sleeve_common.logs import RequestIdFilter
from sleeve_common.runtime import Runtime, open_runtime
from sleeve_common.store import ObjectStore, ObstoreStore

# TensorFlow's C++ start-up chatter hides test output; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _cli_logging_removed() -> Iterator[None]:
    """Undo the logging set-up of a CLI run in-process: ``main([...])`` gives the root logger
    a handler on that test's stderr, which pytest closes when the test ends, and later tests'
    log lines would go to the closed stream (``configure_logging``'s handlers carry a
    ``RequestIdFilter``; pytest's own handlers are left to pytest)."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        ours = any(isinstance(f, RequestIdFilter) for f in handler.filters)
        if ours and handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, migrated database URL: a SQLite file, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}"
        await asyncio.to_thread(upgrade_database, url)
        yield url
        return
    async with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
async def postgres_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database on the real PostgreSQL (for tests that need only that one)."""
    async with fresh_postgres_database(postgres_url) as url:
        yield url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.aclose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL for the session: ``SLEEVE_TEST_DATABASE_URL``, else an embedded one.

    The embedded server listens on a free loopback port with a random password, keeps its
    data in a temporary directory and is stopped after the session.
    """
    configured = os.environ.get("SLEEVE_TEST_DATABASE_URL")
    if configured:
        yield (
            make_url(configured)
            .set(drivername="postgresql+asyncpg")
            .render_as_string(hide_password=False)
        )
        return
    with embedded_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 server for the session (SeaweedFS ``weed mini``), bucket created, auth on."""
    with seaweedfs_s3() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty object store: a local directory, or a fresh prefix on the real S3 server."""
    if request.param == "local":
        return ObstoreStore.local(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    return ObstoreStore.s3(
        server.bucket,
        prefix=f"t-{uuid.uuid4().hex[:12]}",
        endpoint=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
    )


@pytest.fixture
async def runtime(database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    """Settings, a migrated database (SQLite or PostgreSQL) and a local store, opened."""
    async with open_runtime(make_settings(tmp_path, database_url)) as opened:
        yield opened
