"""libpq's ``sslmode`` in ``SLEEVE_DATABASE_URL``, against the real PostgreSQL (issue 9).

asyncpg takes libpq's six modes as its ``ssl`` argument; ``?sslmode=require`` used to fail at
the first connection (``TypeError: connect() got an unexpected keyword argument 'sslmode'``,
a traceback in ``sleeve db upgrade``). Now the mode is translated, and a mode that is not one
of the six is refused at start in one line naming the variable.

The embedded PostgreSQL is built without TLS, so each mode is seen to take effect by how the
server answers: ``disable``, ``allow`` and ``prefer`` connect in clear (``pg_stat_ssl``),
``require`` is refused by the server ("rejected SSL upgrade"), and ``verify-ca`` and
``verify-full`` stop before connecting for want of a root certificate.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from sleeve_common.cli import main
from sleeve_common.db import Database, asyncpg_url, upgrade_database
from sleeve_common.exceptions import ConfigError, DatabaseUnavailable
from sleeve_common.settings import load_settings

MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _with(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def _uses_tls(url: str) -> bool:
    """Connect through ``Database`` and ask the server whether this session is encrypted."""
    db = Database(url)
    try:
        await db.ping()
        async with db.engine.connect() as connection:
            query = text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            return bool((await connection.execute(query)).scalar_one())
    finally:
        await db.aclose()


@pytest.mark.parametrize("mode", MODES)
def test_every_libpq_mode_becomes_asyncpgs_ssl(mode: str) -> None:
    url = "postgresql+asyncpg://u:p%40ss@h:5432/db"
    translated = make_url(asyncpg_url(f"{url}?sslmode={mode}&application_name=x"))
    assert dict(translated.query) == {"ssl": mode, "application_name": "x"}
    assert translated.password == "p@ss"
    assert asyncpg_url(f"{url}?ssl={mode}") == f"{url}?ssl={mode}"
    assert asyncpg_url(f"{url}?ssl={mode}&sslmode={mode}").count(mode) == 1
    assert asyncpg_url(url) == url


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=bogus", "sslmode 'bogus' is not one of disable, allow, prefer, require"),
        ("sslmode=REQUIRE", "sslmode 'REQUIRE' is not one of"),
        ("ssl=true", "ssl 'true' is not one of"),
        ("sslmode=" + "x" * 500, "sslmode 'xxxxxxxxx"),
        ("sslmode=require&sslmode=disable", "sslmode is given 2 times"),
        ("sslmode=require&ssl=disable", "sslmode=require and ssl=disable disagree"),
        ("sslmode=verify-full&sslrootcert=/ca.pem", "set the PGSSLROOTCERT environment variable"),
        ("sslcert=/c.pem", "sslcert in the URL is not supported: set the PGSSLCERT"),
    ],
)
def test_a_bad_ssl_parameter_is_refused_at_start_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    query: str,
    message: str,
) -> None:
    password = "pg-secret-4b1d"
    url = f"postgresql://sleeve:{password}@127.0.0.1:5432/sleeve?{query}"
    monkeypatch.setenv("SLEEVE_DATABASE_URL", url)
    monkeypatch.setenv("SLEEVE_STORE_URL", f"file://{tmp_path / 'store'}")
    with pytest.raises(ConfigError, match=r"^SLEEVE_DATABASE_URL: ") as raised:
        load_settings()
    assert message in str(raised.value)
    assert len(str(raised.value)) < 200
    with pytest.raises(ConfigError, match=r"^database URL: "):
        Database(url.replace("postgresql://", "postgresql+asyncpg://"))

    # The CLI: exit 2, one line, no traceback, no password; nothing was connected to.
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sleeve: configuration error: SLEEVE_DATABASE_URL: ")
    assert err.count("\n") == 1 and message in err
    assert password not in err and "Traceback" not in err


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
async def test_modes_without_tls_work_against_a_server_without_tls(
    postgres_database_url: str, mode: str
) -> None:
    url = _with(postgres_database_url, f"sslmode={mode}")
    assert await _uses_tls(url) is False
    db = Database(url)
    try:
        await db.check_schema()
    finally:
        await db.aclose()


async def test_migrations_take_the_sslmode_too(postgres_url: str) -> None:
    """``sleeve db upgrade`` ended in a TypeError traceback on any ``sslmode``."""
    admin = make_url(postgres_url)
    name = f"t_sslmode_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        password=admin.password,
        database=admin.database,
    )
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
        url = _with(
            admin.set(database=name).render_as_string(hide_password=False), "sslmode=disable"
        )
        await asyncio.to_thread(upgrade_database, url)
        db = Database(url)
        try:
            await db.check_schema()
        finally:
            await db.aclose()
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


async def test_require_against_a_server_without_tls_says_so(postgres_database_url: str) -> None:
    db = Database(_with(postgres_database_url, "sslmode=require"))
    try:
        with pytest.raises(DatabaseUnavailable, match="rejected SSL upgrade") as raised:
            await db.ping()
    finally:
        await db.aclose()
    password = make_url(postgres_database_url).password
    assert password and password not in str(raised.value)


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
async def test_verifying_modes_look_for_the_root_certificate(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    """``verify-*`` reach asyncpg as such: without a root certificate it refuses to connect,
    naming the file it looked for (``PGSSLROOTCERT``, else ``~/.postgresql/root.crt``)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    db = Database(_with(postgres_database_url, f"sslmode={mode}"))
    try:
        with pytest.raises(DatabaseUnavailable, match="root certificate file"):
            await db.ping()
    finally:
        await db.aclose()
