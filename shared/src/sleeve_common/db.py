"""Database engine, sessions, reachability check and migrations.

One ``Database`` per process, made by an entry point from ``Settings`` and closed by it.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from sleeve_common.exceptions import ConfigError, DatabaseUnavailable

__all__ = ["Database", "asyncpg_url", "upgrade_database"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_CONNECT_TIMEOUT_S = 5
# libpq's sslmode values, which asyncpg takes under another name: its ``ssl`` argument.
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq's TLS files, which asyncpg takes from the environment only (as libpq does too).
_SSL_FILES = {
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
}


class Database:
    """An async engine and its session factory.

    A SQLite file is opened read-write but never created here (only ``upgrade_database``
    creates one): a database file moved away makes requests fail as unavailable instead of
    silently starting an empty database, and they work again once the file is back.

    Any failure to open a connection raises ``DatabaseUnavailable``, whatever the driver
    raised: asyncpg lets ``OSError`` (connection refused) and ``TimeoutError`` through
    unwrapped, and a server starting up or shutting down (``CannotConnectNowError``) comes
    as a bare ``DBAPIError``. Pooled connections are pinged before use, so once the server
    is back the next session connects afresh.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        connect_args: dict[str, Any] = {}
        engine_url = _engine_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine_url = _existing_sqlite_file(url)
            # Writers wait for each other instead of failing with "database is locked".
            connect_args["timeout"] = 30
        else:
            connect_args["timeout"] = _CONNECT_TIMEOUT_S
        self.engine: AsyncEngine = create_async_engine(
            engine_url, connect_args=connect_args, pool_pre_ping=True
        )
        event.listen(self.engine.sync_engine, "do_connect", self._connect)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a round trip to the database works."""
        database = make_url(self.url).database
        on_disk = self.dialect == "sqlite" and database and database != ":memory:"
        if on_disk and not Path(str(database)).is_file():
            raise DatabaseUnavailable(
                f"no database file at {database}: run `sleeve db upgrade` to create it "
                "(or put the moved file back)"
            )
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (OSError, OperationalError, DBAPIError, TimeoutError) as exc:
            raise DatabaseUnavailable(
                f"cannot reach the database at {self.safe_url}: {_first_line(exc)}"
            ) from None

    async def check_schema(self) -> None:
        """Raise DatabaseUnavailable unless the schema is at the latest migration."""
        head = _head_revision()
        try:
            async with self.engine.connect() as connection:
                current = (
                    await connection.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one_or_none()
        except (OperationalError, DBAPIError):
            current = None
        if current != head:
            raise DatabaseUnavailable(
                f"the database at {self.safe_url} is at schema {current or 'none'}, not {head}: "
                "run `sleeve db upgrade`"
            )

    def _connect(self, dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        """The driver's connect, its failures raised as ``DatabaseUnavailable``."""
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            raise DatabaseUnavailable(
                f"cannot reach the database at {self.safe_url}: {_first_line(exc)}"
            ) from exc

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    async def aclose(self) -> None:
        await self.engine.dispose()


def asyncpg_url(url: str) -> str:
    """The PostgreSQL URL as asyncpg takes it: libpq's ``sslmode`` becomes ``ssl``.

    asyncpg understands libpq's six modes (``disable`` … ``verify-full``) but only as its
    ``ssl`` argument, and SQLAlchemy hands every query parameter to it as a keyword, so
    ``?sslmode=require`` (the usual spelling) failed at the first connection with a
    ``TypeError``. A mode that is not one of the six, two that disagree, and libpq's TLS file
    parameters (asyncpg reads those from ``PGSSLROOTCERT`` and the like) raise ``ValueError``
    with a one-line reason that never repeats the URL (it may hold a password). Other URLs
    come back as they are.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    query = parsed.query
    for name, variable in _SSL_FILES.items():
        if name in query:
            raise ValueError(
                f"{name} in the URL is not supported: set the {variable} environment variable "
                "instead (asyncpg reads it)"
            )
    modes: dict[str, str] = {}
    for name in ("sslmode", "ssl"):
        value = query.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{name} is given {len(value)} times")
        if value not in _SSL_MODES:
            shown = value if len(value) <= 40 else f"{value[:37]}..."
            raise ValueError(f"{name} {shown!r} is not one of {', '.join(_SSL_MODES)}")
        modes[name] = value
    if len(set(modes.values())) > 1:
        raise ValueError(f"sslmode={modes['sslmode']} and ssl={modes['ssl']} disagree")
    if "sslmode" not in modes:
        return url
    translated = parsed.difference_update_query(["sslmode"]).update_query_dict(
        {"ssl": modes["sslmode"]}
    )
    return translated.render_as_string(hide_password=False)


def _engine_url(url: str) -> str:
    try:
        return asyncpg_url(url)
    except ValueError as exc:
        raise ConfigError(f"database URL: {exc}") from None


def _existing_sqlite_file(url: str) -> str:
    """The URL as a SQLite URI that opens the file read-write and never creates it."""
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    return f"{parsed.drivername}:///file:{quote(database)}?mode=rw&uri=true"


def _make_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["database_url"] = url
    return config


@functools.cache
def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("")).get_current_head()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (synchronous: call from a thread)."""
    from alembic import command

    if make_url(url).get_backend_name() == "sqlite":
        _make_sqlite_folder(url)
    try:
        command.upgrade(_alembic_config(_engine_url(url)), revision)
    except (OSError, OperationalError, DBAPIError, TimeoutError) as exc:
        raise DatabaseUnavailable(
            f"cannot migrate the database at {make_url(url).render_as_string(hide_password=True)}: "
            f"{_first_line(exc)}"
        ) from None
