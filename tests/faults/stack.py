"""What the fault tests share: the API as a real ``sleeve serve`` process on loopback, and
client threads that keep sending requests while a test stops and starts what it depends on.

The clients run in threads, not on the test's event loop: stopping and starting a server is
blocking work (and must happen on the main thread, see ``servers``), and the load has to go
on meanwhile, so that requests in flight when a server goes away are tried too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from servers import LOOPBACK, S3Server, free_ports
from support import DISCOGS5

__all__ = [
    "CLIENT_TIMEOUT_S",
    "S3_PREFIX",
    "Answer",
    "ApiProcess",
    "Load",
    "Stoppable",
    "a_cover",
    "is_unavailable",
    "poll",
    "s3_env",
    "sleeve_serve",
]

# What a client waits for an answer; every request under a fault must be answered within it.
CLIENT_TIMEOUT_S = 10.0
# Generous bounds on what must happen by itself: a server starting, the API recovering.
READY_TIMEOUT_S = 90.0
RECOVERY_TIMEOUT_S = 60.0
_PACE_S = 0.02  # between two requests of one client: load, without starving 2 cores
_BROKEN = frozenset(range(500, 600)) - {503}

Send = Callable[[httpx.Client], httpx.Response]


class Stoppable(Protocol):
    """A server a fault test stops and starts again (same port, same data)."""

    def stop(self) -> None: ...

    def start(self) -> None: ...


# Where a fault test's S3 store keeps its objects in the bucket.
S3_PREFIX = "faults"


def a_cover() -> bytes:
    """A real album cover (JPEG) from the kit."""
    return sorted((DISCOGS5 / "Rock").glob("*.jpg"))[0].read_bytes()


def s3_env(s3: S3Server) -> dict[str, str]:
    """The settings of a ``sleeve`` process whose store is on ``s3``, under ``S3_PREFIX``."""
    return {
        "SLEEVE_STORE_URL": f"s3://{s3.bucket}/{S3_PREFIX}",
        "SLEEVE_S3_ENDPOINT": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }


def poll(check: Callable[[], bool], *, what: str, timeout: float = RECOVERY_TIMEOUT_S) -> None:
    """Poll ``check`` until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


@dataclass(frozen=True)
class ApiProcess:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


@contextlib.contextmanager
def sleeve_serve(env: Mapping[str, str], *, log: Path) -> Iterator[ApiProcess]:
    """``sleeve serve`` on a free loopback port with ``env`` (plus this environment without
    any ``SLEEVE_*`` or ``AWS_*`` variable), once ``/readyz`` answers 200."""
    port = free_ports(1)[0]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLEEVE_", "AWS_"))}
    child_env |= {"SLEEVE_LOG_LEVEL": "WARNING", **env}
    argv = ["serve", "--host", LOOPBACK, "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sleeve_common", *argv],
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = ApiProcess(base=f"http://{LOOPBACK}:{port}", process=process, log=log)
    try:

        def ready() -> bool:
            assert process.poll() is None, f"sleeve serve exited:\n{api.log_tail()}"
            try:
                return httpx.get(f"{api.base}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        poll(ready, what=f"ready API\n{api.log_tail()}", timeout=READY_TIMEOUT_S)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@dataclass(frozen=True)
class Answer:
    """One request: the phase the test was in while it ran, and what came back."""

    phase: str
    name: str
    status: int | None  # None: no answer (a timeout, a dropped connection)
    body: Any
    failure: str | None = None

    def __str__(self) -> str:
        got = self.failure if self.status is None else f"{self.status} {self.body!r}"
        return f"[{self.phase}] {self.name}: {got}"


class Load:
    """``clients`` threads, each sending every request of ``requests`` in turn until the
    block ends. Every answer is kept with the ``phase`` the test was in while its request
    ran, or ``"before/after"`` when the phase changed meanwhile."""

    def __init__(self, base: str, requests: Mapping[str, Send], *, clients: int = 3) -> None:
        self.base = base
        self.phase = "up"
        self._requests = dict(requests)
        self._clients = clients
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        for index in range(self._clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2 * CLIENT_TIMEOUT_S)
        assert not any(t.is_alive() for t in self._threads), "a client did not stop"

    def answers(self, phase: str | None = None, name: str | None = None) -> list[Answer]:
        with self._lock:
            return [
                a
                for a in self._answers
                if (phase is None or a.phase == phase) and (name is None or a.name == name)
            ]

    def count(self, phase: str, name: str, status: int) -> int:
        return sum(1 for a in self.answers(phase, name) if a.status == status)

    def broken(self) -> list[Answer]:
        """Answers that must never be: none within the client's timeout, or a 5xx but 503."""
        return [a for a in self.answers() if a.status is None or a.status in _BROKEN]

    def wait_for_each(self, phase: str, status: Mapping[str, int], *, at_least: int) -> None:
        """Wait until each request named in ``status`` got its status ``at_least`` times in
        ``phase``; fail at once on a broken answer."""

        def enough() -> bool:
            broken = self.broken()
            assert not broken, f"broken answers: {'; '.join(str(a) for a in broken[:5])}"
            return all(self.count(phase, name, s) >= at_least for name, s in status.items())

        def seen() -> str:
            return "; ".join(str(a) for a in self.answers(phase)[-8:])

        try:
            poll(enough, what=f"{dict(status)} {at_least} times in phase {phase!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answers: {seen()}") from None

    def stop_and_start(
        self,
        server: Stoppable,
        *,
        refused: Sequence[str],
        served: Sequence[str],
        back: Mapping[str, int],
        up: Mapping[str, int],
    ) -> None:
        """Stop ``server`` until the ``refused`` requests (and readiness) got 503s and the
        ``served`` ones 200s, start it again, wait until the ``back`` statuses show it
        recovered by itself, then for every request's ``up`` status."""
        self.phase = "stopping"
        server.stop()
        self.phase = "down"
        self.wait_for_each("down", dict.fromkeys((*refused, "readyz"), 503), at_least=3)
        self.wait_for_each("down", dict.fromkeys(served, 200), at_least=3)
        self.phase = "starting"
        server.start()
        self.phase = "restarted"
        self.wait_for_each("restarted", back, at_least=1)
        self.phase = "recovered"
        self.wait_for_each("recovered", up, at_least=3)

    def check_answers(self, *, up: Mapping[str, int], refused: Sequence[str]) -> None:
        """Before and after: every request got its ``up`` status. While down: every
        ``refused`` request got a 503 in the error schema. In between: each answer was the
        one of either state."""
        for phase in ("up", "recovered"):
            wrong = [str(a) for a in self.answers(phase) if a.status != up[a.name]]
            assert not wrong, wrong[:10]
        for name in refused:
            down = self.answers("down", name)
            assert down and all(is_unavailable(a) for a in down), [str(a) for a in down][:5]
        for a in self.answers():
            if a.phase not in ("up", "down", "recovered"):
                assert a.status == up[a.name] or (
                    a.status == 503 and (a.name == "readyz" or is_unavailable(a))
                ), str(a)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.base, timeout=CLIENT_TIMEOUT_S) as client:
            names = list(self._requests)
            turn = index  # the clients start on different requests
            while not self._stop.is_set():
                name = names[turn % len(names)]
                turn += 1
                sent = self.phase
                try:
                    response = self._requests[name](client)
                except httpx.HTTPError as exc:
                    failure: str | None = f"{type(exc).__name__}: {exc}"
                    status, body = None, None
                else:
                    failure, status, body = None, response.status_code, _body(response)
                # A request that spans a change of phase belongs to neither.
                phase = sent if self.phase == sent else f"{sent}/{self.phase}"
                answer = Answer(phase, name, status, body, failure)
                with self._lock:
                    self._answers.append(answer)
                self._stop.wait(_PACE_S)


def is_unavailable(answer: Answer) -> bool:
    """503 in the API's JSON error schema, code ``unavailable``."""
    body = answer.body
    return (
        answer.status == 503
        and isinstance(body, dict)
        and set(body) == {"error"}
        and body["error"]["code"] == "unavailable"
        and isinstance(body["error"]["message"], str)
    )


def _body(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            return response.json()
        except ValueError:
            return response.text[:200]
    return f"<{len(response.content)} bytes of {response.headers.get('content-type')}>"
