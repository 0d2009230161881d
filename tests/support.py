"""What tests share besides fixtures: where the kit lives, settings for a test, and real
``sleeve`` child processes on a test's database and store."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import asyncpg
import uvicorn
from sqlalchemy.engine import make_url

from sleeve_common.db import upgrade_database
from sleeve_common.settings import Settings

__all__ = [
    "BASE_WEIGHTS",
    "DISCOGS5",
    "KIT",
    "REPO_ROOT",
    "ThreadedUvicorn",
    "child_env",
    "fresh_postgres_database",
    "make_settings",
    "serve_folder",
    "sleeve_process",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
KIT = REPO_ROOT.parent / "shared"  # read-only, beside the checkout (CI has it there too)
DISCOGS5 = KIT / "datasets" / "discogs5"
BASE_WEIGHTS = KIT / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"


def make_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    """Settings for a test: its own database, local store and data folder."""
    values: dict[str, object] = {
        "database_url": database_url,
        "store_url": f"file://{tmp_path / 'store'}",
        "data_dir": tmp_path / "var",
        "base_weights": str(BASE_WEIGHTS),
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def fresh_postgres_database(server_url: str) -> AsyncIterator[str]:
    """A new, migrated database on the PostgreSQL server at ``server_url``, dropped afterwards."""
    server = make_url(server_url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=server.host,
        port=server.port,
        user=server.username,
        password=server.password,
        database=server.database,
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = server.set(database=name).render_as_string(hide_password=False)
        await asyncio.to_thread(upgrade_database, url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


class ThreadedUvicorn(uvicorn.Server):
    """uvicorn for a server thread: signals when its startup has finished, well or not."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.startup_done.set()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A real static HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def child_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a ``sleeve`` child on the test's database and store: this one
    without any ``SLEEVE_*`` variable, then ``overrides`` (``SLEEVE_JOB_LEASE_SECONDS=…``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEVE_")}
    return env | {
        "SLEEVE_DATABASE_URL": settings.database_url,
        "SLEEVE_STORE_URL": settings.store_url,
        "SLEEVE_DATA_DIR": str(settings.data_dir),
        "SLEEVE_LOG_LEVEL": "WARNING",
        **overrides,
    }


@contextlib.asynccontextmanager
async def sleeve_process(
    *argv: str, env: dict[str, str], stdout: int | None = None, stderr: IO[Any] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``sleeve ARGV`` as a child process; stopped with SIGTERM (then SIGKILL) if still alive.
    ``stderr``: a file for what it says there (default: the test's)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sleeve_common", *argv, env=env, stdout=stdout, stderr=stderr
    )
    try:
        yield child
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), timeout=30)
            except TimeoutError:
                child.kill()
                await child.wait()


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    child: asyncio.subprocess.Process | None,
    what: str,
    timeout_s: float = 90,
) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail if ``child`` ends or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert child is None or child.returncode is None, f"the child ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        await asyncio.sleep(0.05)
