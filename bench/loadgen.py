"""Load generator for the serving benchmark, run as its own process; prints one JSON object.

Closed loop (``--concurrency N``): N keep-alive connections, each sending its next request as
soon as the answer to the last one arrives. Open loop (``--rate R``): a request starts every
1/R seconds whatever the server does, on an idle connection or a new one (at most
``--max-connections`` at once, beyond which a request is counted ``not_sent``), and its
latency counts from when it was due, so a server that falls behind cannot hide its queue.

It is made to cost the server's cores as little as possible: every request is serialised once
before the clock starts, and an answer is read only as far as HTTP/1.1 framing needs (status
line, headers, a Content-Length or chunked body), on raw asyncio streams (uvloop when
installed). ``loadgen_cpu`` and ``loadgen_cpu_us_per_request`` in the output say what it cost.

Counted: closed loop, the answers that arrive inside the measured window (after
``--warmup``); open loop, the requests due inside it, each followed to its end (for at most
``--drain`` seconds after the window, else ``unfinished``). ``loadgen_cpu`` is the share of
one core this process used while it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from benchkit import COVERS, read_covers, request_body, say

__all__ = ["main"]

_ERROR_PAUSE_S = 0.01  # after a failed connection, so a dead server is not hammered
_TRANSPORT_ERRORS = (OSError, EOFError, ValueError, asyncio.LimitOverrunError)


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    path: str


@dataclass
class _Tally:
    """Outcomes whose instant falls in the measured window [start, end)."""

    start: float
    end: float
    latencies: dict[int, list[float]] = field(default_factory=dict)
    errors: int = 0
    not_sent: int = 0
    unfinished: int = 0
    exchanges: int = 0  # every answer read, in the window or not: the loadgen's own cost

    def counts(self, at: float) -> bool:
        return self.start <= at < self.end

    def answer(self, status: int, latency: float, at: float) -> None:
        self.exchanges += 1
        if self.counts(at):
            self.latencies.setdefault(status, []).append(latency)


class _Connection:
    """A keep-alive HTTP/1.1 connection, opened on first use and again after it was closed."""

    def __init__(self, target: _Target) -> None:
        self._target = target
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> int:
        """Send one pre-serialised request; the answer's status (its body is read and dropped).

        A kept-alive connection may have been closed by the server while idle: its request is
        sent once more on a new connection before the failure counts.
        """
        if self._streams is None:
            return await self._exchange(request)
        try:
            return await self._exchange(request)
        except _TRANSPORT_ERRORS:
            pass
        return await self._exchange(request)

    async def _exchange(self, request: bytes) -> int:
        try:
            if self._streams is None:
                self._streams = await asyncio.open_connection(self._target.host, self._target.port)
            reader, writer = self._streams
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            if b"\r\ntransfer-encoding: chunked" in lower:
                await _skip_chunked(reader)
            elif (at := lower.find(b"\r\ncontent-length:")) >= 0:
                await reader.readexactly(int(lower[at + 17 : lower.index(b"\r\n", at + 2)]))
            elif status >= 200 and status not in (204, 304):
                await reader.read()  # no framing: the body runs to the end of the connection
                self.close()
        except BaseException:
            self.close()  # never reuse a connection left in the middle of an answer
            raise
        if b"\r\nconnection: close" in lower:
            self.close()
        return status

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


async def _closed_loop(
    target: _Target, requests: list[bytes], tally: _Tally, concurrency: int, drain_s: float
) -> None:
    async def user(first: int) -> None:
        connection, index = _Connection(target), first
        try:
            async with asyncio.timeout(tally.end - time.perf_counter() + drain_s):
                while time.perf_counter() < tally.end:
                    started = time.perf_counter()
                    try:
                        status = await connection.exchange(requests[index % len(requests)])
                    except _TRANSPORT_ERRORS:
                        tally.errors += tally.counts(time.perf_counter())
                        await asyncio.sleep(_ERROR_PAUSE_S)
                        continue
                    ended = time.perf_counter()
                    tally.answer(status, ended - started, ended)
                    index += concurrency
        except TimeoutError:
            tally.unfinished += 1  # only an answer still awaited can outlast the drain
        finally:
            connection.close()

    await asyncio.gather(*(user(i) for i in range(concurrency)))


async def _open_loop(
    target: _Target,
    requests: list[bytes],
    tally: _Tally,
    rate: float,
    max_connections: int,
    drain_s: float,
) -> None:
    idle: list[_Connection] = []
    in_flight: dict[asyncio.Task[None], float] = {}

    async def one(request: bytes, due: float) -> None:
        connection = idle.pop() if idle else _Connection(target)
        try:
            status = await connection.exchange(request)
        except _TRANSPORT_ERRORS:
            tally.errors += tally.counts(due)
            return
        tally.answer(status, time.perf_counter() - due, due)
        idle.append(connection)

    begin, interval = time.perf_counter(), 1.0 / rate
    for index in range(int((tally.end - begin) * rate) + 1):
        due = begin + index * interval
        if due >= tally.end:
            break
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_connections:
            tally.not_sent += tally.counts(due)
            continue
        task = asyncio.create_task(one(requests[index % len(requests)], due))
        in_flight[task] = due
        task.add_done_callback(in_flight.pop)
    if in_flight:
        _, pending = await asyncio.wait(list(in_flight), timeout=drain_s)
        tally.unfinished += sum(tally.counts(in_flight[task]) for task in pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for connection in idle:
        connection.close()


def _percentiles(seconds: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99 and the maximum, in milliseconds."""
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 2)

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": rank(1.0)}


def _summary(
    tally: _Tally, args: argparse.Namespace, cpu_s: float, wall_s: float
) -> dict[str, Any]:
    seconds = tally.end - tally.start
    ok = len(tally.latencies.get(200, []))
    answered = sum(len(v) for v in tally.latencies.values())
    return {
        "mode": "open" if args.rate else "closed",
        "concurrency": args.concurrency,
        "rate": args.rate,
        "seconds": seconds,
        "body": args.body,
        "images_per_request": args.images,
        "images_per_s": round(ok * args.images / seconds, 2),
        "requests_per_s": round(answered / seconds, 2),
        "status": {str(code): len(v) for code, v in sorted(tally.latencies.items())},
        "errors": tally.errors,
        "not_sent": tally.not_sent,
        "unfinished": tally.unfinished,
        "latency_ms": {str(c): _percentiles(v) for c, v in sorted(tally.latencies.items())},
        "loadgen_cpu": round(cpu_s / wall_s, 3),
        "loadgen_cpu_us_per_request": round(cpu_s / max(1, tally.exchanges) * 1e6, 1),
    }


def _requests(args: argparse.Namespace, target: _Target) -> list[bytes]:
    """Every request, serialised once: a cycle over the covers, ``--images`` per request."""
    covers = read_covers(args.covers, args.count)
    requests = []
    for first in range(0, len(covers), args.images):
        images = [covers[(first + i) % len(covers)] for i in range(args.images)]
        body, content_type = request_body(images, args.body)
        head = (
            f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    url = urllib.parse.urlsplit(args.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    target = _Target(url.hostname or "127.0.0.1", url.port or 80, path or "/")
    requests = _requests(args, target)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    start = wall_start + args.warmup
    tally = _Tally(start=start, end=start + args.seconds)
    if args.rate:
        await _open_loop(target, requests, tally, args.rate, args.max_connections, args.drain)
    else:
        await _closed_loop(target, requests, tally, args.concurrency, args.drain)
    cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
    return _summary(tally, args, cpu_s, wall_s)


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]]:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run
    return asyncio.run


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000/v1/predict")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    load.add_argument("--rate", type=float, help="open loop: requests started per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=1.0, help="load before the window")
    parser.add_argument("--drain", type=float, default=10.0, help="wait after the window")
    parser.add_argument("--body", choices=("raw", "multipart"), default="raw")
    parser.add_argument("--images", type=int, default=1, help="per request (multipart)")
    parser.add_argument("--covers", default=COVERS, help="glob of cover files")
    parser.add_argument("--count", type=int, default=256, help="covers to cycle through")
    parser.add_argument("--max-connections", type=int, default=512, help="open loop")
    args = parser.parse_args(argv)
    if args.body == "raw" and args.images != 1:
        parser.error("--body raw carries one image per request; use --body multipart")
    if (args.concurrency or 1) < 1 or (args.rate is not None and args.rate <= 0):
        parser.error("--concurrency and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    say(json.dumps(_event_loop_runner()(_run(args))))


if __name__ == "__main__":
    main()
