"""The scraper's one HTTP edge: every request of a run goes through one ``HttpClient``.

What it does for every source, so that no source does it again:

- **pacing** per host (``host:port``) with an ``aiolimiter.AsyncLimiter`` of capacity 1, so
  requests are spaced evenly at the host's rate across all tasks of the run (MusicBrainz
  averages over a window: a burst passes and a steady excess fails later). API hosts take
  their ``SLEEVE_*_RATE``; any other host (image servers) takes ``SLEEVE_DOWNLOAD_RATE``;
- **retries** with ``tenacity`` (exponential backoff with jitter) for transport errors,
  timeouts, 429, 5xx and malformed JSON only, never another 4xx; a ``Retry-After`` header
  (seconds or HTTP-date) replaces the backoff for that wait;
- a **pause** for a host that keeps failing: after ``pause_after`` failures in a row, every
  task waits ``pause_s`` before trying that host again;
- a **byte cap** on every body: refused early on ``Content-Length``, else cut while streaming;
- one injectable ``sleep`` (backoff, Retry-After and pauses all go through it, tenacity too)
  and ``clock``, so tests never wait out a real backoff;
- the User-Agent of ``SLEEVE_USER_AGENT`` on every request;
- the run's request figures (``stats``): requests sent, failed tries by kind, and the
  current rate. It owns the requests, so it is the one place that can count them.

Redirects are followed within one try (the Cover Art Archive answers 307, then archive.org
302), paced as the first host. Requests are GETs of JSON or bytes, and form POSTs of JSON
(an OAuth token grant); each is one public method that builds an ``httpx.Request`` and hands
it to ``_fetch``. Header values (tokens) are never logged: only reasons and URLs are.

httpx errors never leave this module: they become ``sleeve_scraper.exceptions.FetchError``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from sleeve_common.settings import Settings
from sleeve_scraper.exceptions import (
    FetchError,
    MalformedReply,
    RateLimited,
    Refused,
    ServerError,
    TooLarge,
    TransientError,
    Unreachable,
)

__all__ = [
    "LONGEST_RETRY_AFTER_S",
    "RATE_WINDOW_S",
    "Clock",
    "HttpClient",
    "HttpStats",
    "Sleep",
    "Throttled",
    "host_key",
]

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Throttled = Callable[[int, bytes], bool]
"""Tells from a status and body that the server asks to slow down although it did not say 429."""
T = TypeVar("T")

_MAX_JSON_BYTES = 16 * 1024 * 1024
_ERROR_BODY_BYTES = 64 * 1024
_MAX_REDIRECTS = 5
_LONGEST_BACKOFF_S = 60.0
# A server asking for a longer wait than this fails the request at once: a run that sleeps
# for hours looks hung; failing leaves a run that ``--resume`` continues later.
LONGEST_RETRY_AFTER_S = 600.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
RATE_WINDOW_S = 5.0
"""Seconds over which ``HttpStats.rate`` counts requests: short enough to show a host that
slowed down, long enough to smooth the pacing of a slow source."""


def host_key(url: str) -> str:
    """``https://Api.Example.com/x`` → ``api.example.com:443``: what rates and pauses apply to."""
    parts = urlsplit(url)
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    return f"{(parts.hostname or '').lower()}:{port}"


@dataclass(frozen=True)
class HttpStats:
    """A run's requests so far: sent (each try, retries included), failed tries by
    ``FetchError.kind``, and requests per second over the last ``RATE_WINDOW_S`` seconds."""

    requests: int
    errors: dict[str, int]
    rate: float


class _Counts:
    """Requests and failures of one client, and the send times of the last window."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self._first: float | None = None
        self._recent: deque[float] = deque()

    def sent(self, now: float) -> None:
        self.requests += 1
        self._first = now if self._first is None else self._first
        self._recent.append(now)
        self._forget_before(now - RATE_WINDOW_S)

    def failed(self, kind: str) -> None:
        self.errors[kind] += 1

    def rate(self, now: float) -> float:
        """Requests per second over the window, or over the time since the first request
        while that is shorter (at least 1 s, so that one request is no burst)."""
        self._forget_before(now - RATE_WINDOW_S)
        if self._first is None:
            return 0.0
        span = min(RATE_WINDOW_S, max(now - self._first, 1.0))
        return len(self._recent) / span

    def _forget_before(self, start: float) -> None:
        while self._recent and self._recent[0] < start:
            self._recent.popleft()


@dataclass
class _Host:
    """One host's pacing and failure streak, shared by every task of the run."""

    limiter: AsyncLimiter
    failures: int = 0
    paused_until: float = float("-inf")


class HttpClient:
    """One run's HTTP client: paced, retried, capped, paused per host. Use ``async with``."""

    def __init__(
        self,
        *,
        user_agent: str,
        host_rates: Mapping[str, float],
        default_rate: float,
        timeout_s: float,
        attempts: int,
        pause_after: int,
        pause_s: float,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = httpx.AsyncClient(
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=True,
            max_redirects=_MAX_REDIRECTS,
        )
        self._rates = dict(host_rates)
        self._default_rate = default_rate
        self._attempts = attempts
        self._pause_after = pause_after
        self._pause_s = pause_s
        self._sleep = sleep
        self._clock = clock
        self._hosts: dict[str, _Host] = {}
        self._backoff = wait_exponential_jitter(max=_LONGEST_BACKOFF_S)
        self._counts = _Counts()

    @classmethod
    def from_settings(cls, settings: Settings, *, sleep: Sleep = asyncio.sleep) -> HttpClient:
        """A client with the API rates of every source's base URL and the download rate."""
        rates: dict[str, float] = {}
        for url, rate in (
            (settings.itunes_base_url, settings.itunes_rate),
            (settings.deezer_base_url, settings.deezer_rate),
            (settings.musicbrainz_base_url, settings.musicbrainz_rate),
            (settings.coverartarchive_base_url, settings.coverartarchive_rate),
            (settings.spotify_api_base_url, settings.spotify_rate),
            (settings.spotify_auth_url, settings.spotify_rate),
        ):
            key = host_key(url)
            rates[key] = min(rate, rates.get(key, rate))  # two sources on one mirror: the slower
        return cls(
            user_agent=settings.user_agent,
            host_rates=rates,
            default_rate=settings.download_rate,
            timeout_s=settings.scrape_timeout_s,
            attempts=settings.scrape_retry_attempts,
            pause_after=settings.scrape_host_pause_after,
            pause_s=settings.scrape_host_pause_s,
            sleep=sleep,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def stats(self) -> HttpStats:
        """The requests of this client so far, and their current rate."""
        counts = self._counts
        return HttpStats(
            requests=counts.requests, errors=dict(counts.errors), rate=counts.rate(self._clock())
        )

    async def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        throttled: Throttled | None = None,
    ) -> Any:
        """GET ``url`` and decode its JSON; ``throttled`` spots a source's own throttle answers.

        ``headers`` add to or replace the client's own (a source's User-Agent, a bearer token).
        """
        request = self._build("GET", url, params=params, headers=headers)
        return await self._fetch(request, _MAX_JSON_BYTES, throttled, _json)

    async def post_form(
        self,
        url: str,
        *,
        data: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST ``data`` form-encoded to ``url`` and decode the JSON answer (an OAuth token).

        Retried like a GET: the requests this is for (a token grant) are safe to repeat.
        """
        request = self._build("POST", url, data=data, headers=headers)
        return await self._fetch(request, _MAX_JSON_BYTES, None, _json)

    async def get_bytes(self, url: str, *, max_bytes: int) -> bytes:
        """GET ``url`` and return its body, refusing one over ``max_bytes`` (``TooLarge``)."""
        return await self._fetch(self._build("GET", url), max_bytes, None, _raw)

    def _build(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        try:
            return self._client.build_request(
                method, url, params=params, data=data, headers=headers
            )
        except httpx.InvalidURL as exc:
            raise Refused(f"invalid URL ({exc})", url=url) from None

    async def _fetch(
        self,
        request: httpx.Request,
        cap: int,
        throttled: Throttled | None,
        decode: Callable[[bytes, str], T],
    ) -> T:
        """Send ``request`` (again, after a wait, while it fails transiently) and decode it."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )
        result: T = await retrying(self._attempt, request, cap, throttled, decode)
        return result

    async def _attempt(
        self,
        request: httpx.Request,
        cap: int,
        throttled: Throttled | None,
        decode: Callable[[bytes, str], T],
    ) -> T:
        """One try: wait out a pause, take the host's next slot, send, judge the answer."""
        key = host_key(str(request.url))
        host = self._host(key)
        delay = host.paused_until - self._clock()
        if delay > 0:
            await self._sleep(delay)
        await host.limiter.acquire()
        self._counts.sent(self._clock())
        try:
            result = decode(await self._send(request, cap, throttled), str(request.url))
        except FetchError as exc:
            self._counts.failed(exc.kind)
            if isinstance(exc, TransientError):
                self._failed_again(key, host)
            raise
        host.failures = 0
        return result

    def _failed_again(self, key: str, host: _Host) -> None:
        """One more transient failure of ``host`` in a row; pause it after ``pause_after``."""
        host.failures += 1
        if host.failures >= self._pause_after:
            host.failures = 0
            host.paused_until = self._clock() + self._pause_s
            logger.warning(
                "%s failed %d times in a row; pausing it for %.0f s",
                key,
                self._pause_after,
                self._pause_s,
            )

    async def _send(self, request: httpx.Request, cap: int, throttled: Throttled | None) -> bytes:
        """The body of one answer (redirects followed), or the error it amounts to."""
        where = str(request.url)
        try:
            response = await self._client.send(request, stream=True)
            try:
                if response.is_success:
                    body = await _read_capped(response, cap, where)
                else:
                    body = await _read_head(response, _ERROR_BODY_BYTES)
            finally:
                await response.aclose()
        except httpx.TooManyRedirects:
            raise Refused(f"more than {_MAX_REDIRECTS} redirects", url=where) from None
        except httpx.UnsupportedProtocol:
            raise Refused("not an http(s) URL", url=where) from None
        except httpx.DecodingError:
            raise MalformedReply("undecodable body", url=where) from None
        except httpx.TimeoutException as exc:
            raise Unreachable(f"timed out ({type(exc).__name__})", url=where) from exc
        except httpx.TransportError as exc:
            raise Unreachable(f"connection failed ({type(exc).__name__})", url=where) from exc
        status = response.status_code
        retry_after = _retry_after(response.headers)
        if throttled is not None and throttled(status, body):
            reason = _with_wait("throttled", retry_after)
            raise RateLimited(reason, url=where, retry_after=retry_after)
        if status == 429:
            reason = _with_wait("HTTP 429", retry_after)
            raise RateLimited(reason, url=where, retry_after=retry_after, status=status)
        if status >= 500:
            reason = _with_wait(f"HTTP {status}", retry_after)
            raise ServerError(reason, url=where, retry_after=retry_after, status=status)
        if not response.is_success:
            raise Refused(f"HTTP {status}", url=where, status=status, body=body)
        return body

    def _host(self, key: str) -> _Host:
        host = self._hosts.get(key)
        if host is None:
            rate = self._rates.get(key, self._default_rate)
            # Capacity 1: one request per 1/rate seconds, never a burst.
            host = self._hosts[key] = _Host(AsyncLimiter(1, 1 / rate))
        return host

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After when it sent one, else exponential backoff with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))


def _retryable(exc: BaseException) -> bool:
    if not isinstance(exc, TransientError):
        return False
    return exc.retry_after is None or exc.retry_after <= LONGEST_RETRY_AFTER_S


def _with_wait(reason: str, retry_after: float | None) -> str:
    """Name the wait in the reason only where it is too long to honour (the request fails)."""
    if retry_after is not None and retry_after > LONGEST_RETRY_AFTER_S:
        return f"{reason}, asked to wait {retry_after:.0f} s"
    return reason


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.warning("%s; attempt %d failed, next in %.1f s", exc, state.attempt_number, wait)


def _json(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        logger.warning("%s is not JSON: %s", url, exc)
        raise MalformedReply("malformed JSON", url=url) from None


def _raw(body: bytes, _url: str) -> bytes:
    return body


async def _read_capped(response: httpx.Response, cap: int, url: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"file too large: {int(declared)} bytes (limit {cap})", url=url)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise TooLarge(f"file too large: more than {cap} bytes (limit {cap})", url=url)
    return bytes(body)


async def _read_head(response: httpx.Response, limit: int) -> bytes:
    """Up to ``limit`` bytes of an error answer: enough to judge it, never all of a huge one."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``Retry-After`` (delay-seconds or HTTP-date), or None."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    # Measured against the server's own Date when it sent one: no clock skew between us.
    now = _http_date(headers.get("date", "")) or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _http_date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
