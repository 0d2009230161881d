"""The HTTP edge against a real loopback server: pacing, retries, Retry-After, pauses, caps.

Waits go through the client's injected ``sleep`` (recorded, instant) and ``clock``; only the
pacing tests use the real clock, at rates high enough to finish in well under a second.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from sleeve_scraper.exceptions import (
    MalformedReply,
    RateLimited,
    Refused,
    ServerError,
    TooLarge,
    Unreachable,
)
from sleeve_scraper.http import LONGEST_RETRY_AFTER_S, RATE_WINDOW_S, HttpClient, host_key

from .conftest import Sleeps
from .fakes import FakeEcho, FakeServer, empty, http_date, malformed, serve, slow, status

USER_AGENT = "Sleeve-test/1.0 (+mailto:covers@example.org)"


class FakeClock:
    """A monotonic clock that only the recorded sleeps move forward."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., HttpClient]]:
    """Build clients with test defaults; every one is closed after the test."""
    made: list[HttpClient] = []

    def make(
        sleep: Callable[[float], object],
        *,
        host_rates: dict[str, float] | None = None,
        attempts: int = 3,
        pause_after: int = 100,
        pause_s: float = 30.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> HttpClient:
        client = HttpClient(
            user_agent=USER_AGENT,
            host_rates=host_rates or {},
            default_rate=1000.0,
            timeout_s=timeout_s,
            attempts=attempts,
            pause_after=pause_after,
            pause_s=pause_s,
            sleep=sleep,  # type: ignore[arg-type]
            clock=clock,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def arrivals(server: FakeServer) -> list[float]:
    return sorted(hit.at for hit in server.hits)


async def test_requests_to_one_host_are_paced_across_concurrent_tasks(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    rate = 20.0
    client = make_client(sleeps, host_rates={host_key(echo.base_url): rate})

    async def worker(n: int) -> None:
        for i in range(3):
            await client.get_json(f"{echo.base_url}/w{n}/{i}")

    await asyncio.gather(*(worker(n) for n in range(4)))

    times = arrivals(echo)
    assert len(times) == 12
    # Evenly spaced, never a burst: each gap near 1/rate (jitter of a busy machine allowed),
    # and the whole run no faster than the rate allows.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.5 / rate, gaps
    assert times[-1] - times[0] >= (len(times) - 1) / rate - 0.02
    assert sleeps.calls == []  # pacing is the limiter's wait, not a retry sleep


async def test_each_host_keeps_its_own_pace(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    with serve(FakeEcho()) as other:
        rate = 10.0
        client = make_client(
            sleeps,
            host_rates={host_key(echo.base_url): rate, host_key(other.base_url): rate},
        )

        async def burst(base: str) -> None:
            for i in range(5):
                await client.get_json(f"{base}/{i}")

        started = time.monotonic()
        await asyncio.gather(burst(echo.base_url), burst(other.base_url))
        elapsed = time.monotonic() - started

    # One shared limiter would need 9 gaps of 0.1 s; two limiters need 4 each.
    assert 4 / rate - 0.02 <= elapsed < 8 / rate
    assert len(echo.hits) == len(other.hits) == 5


async def test_retry_after_seconds_replaces_the_backoff(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    echo.fail("/x", status(429, headers={"Retry-After": "7"}))

    assert await make_client(sleeps).get_json(f"{echo.base_url}/x") == {"path": "/x"}

    assert sleeps.calls == [7.0]
    assert len(echo.hits) == 2


async def test_retry_after_http_date_is_honoured(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    echo.fail("/x", status(503, headers={"Retry-After": http_date(30)}))

    await make_client(sleeps).get_json(f"{echo.base_url}/x")

    [wait] = sleeps.calls
    assert 28.5 <= wait <= 31.5  # whole seconds on both sides of the server's Date


async def test_a_retry_after_too_long_to_honour_fails_at_once(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    asked = LONGEST_RETRY_AFTER_S + 1
    echo.fail("/x", status(429, headers={"Retry-After": str(int(asked))}))

    with pytest.raises(RateLimited, match=f"asked to wait {asked:.0f} s") as caught:
        await make_client(sleeps).get_json(f"{echo.base_url}/x")

    assert caught.value.retry_after == int(asked)
    assert sleeps.calls == []
    assert len(echo.hits) == 1


async def test_server_errors_back_off_exponentially_with_jitter(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    echo.fail("/x", status(500), status(502), status(503))

    await make_client(sleeps, attempts=4).get_json(f"{echo.base_url}/x")

    assert len(sleeps.calls) == 3
    for n, wait in enumerate(sleeps.calls):
        assert 2**n <= wait <= 2**n + 1  # 1, 2, 4 s plus up to 1 s of jitter


async def test_attempts_are_bounded(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    echo.fail("/x", *[status(503)] * 5)

    with pytest.raises(ServerError, match=r"HTTP 503 \(http://127\.0\.0\.1:\d+/x\)"):
        await make_client(sleeps, attempts=3).get_json(f"{echo.base_url}/x")

    assert len(echo.hits) == 3
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 451])
async def test_other_client_errors_are_never_retried(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient], code: int
) -> None:
    echo.fail("/x", status(code, body=b'{"error": "no"}'))

    with pytest.raises(Refused) as caught:
        await make_client(sleeps).get_json(f"{echo.base_url}/x")

    assert (caught.value.status, caught.value.reason) == (code, f"HTTP {code}")
    assert len(echo.hits) == 1
    assert sleeps.calls == []


async def test_a_source_can_read_a_bare_403_as_throttling(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    def bare_403(status: int, body: bytes) -> bool:
        return status == 403 and not body

    echo.fail("/x", empty(403), empty(403))
    client = make_client(sleeps)

    assert await client.get_json(f"{echo.base_url}/x", throttled=bare_403) == {"path": "/x"}
    assert len(sleeps.calls) == 2

    echo.fail("/x", empty(403))
    with pytest.raises(Refused):
        await client.get_json(f"{echo.base_url}/x")


async def test_malformed_json_is_retried_then_reported(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client(sleeps, attempts=2)
    echo.fail("/x", malformed())
    assert await client.get_json(f"{echo.base_url}/x") == {"path": "/x"}

    echo.fail("/x", malformed(), malformed())
    with pytest.raises(MalformedReply, match="malformed JSON"):
        await client.get_json(f"{echo.base_url}/x")


async def test_a_slow_answer_times_out_and_is_retried(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    echo.fail("/x", slow(1.0))

    assert await make_client(sleeps, timeout_s=0.2).get_json(f"{echo.base_url}/x") == {"path": "/x"}
    assert len(sleeps.calls) == 1


async def test_an_unreachable_host_is_retried_then_reported(
    sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now: connections are refused.
    with pytest.raises(Unreachable, match="connection failed"):
        await make_client(sleeps, attempts=3).get_json(f"http://127.0.0.1:{port}/x")
    assert len(sleeps.calls) == 2


async def test_a_host_that_keeps_failing_is_paused_for_every_caller(
    echo: FakeEcho, make_client: Callable[..., HttpClient]
) -> None:
    clock = FakeClock()
    client = make_client(clock.sleep, clock=clock, attempts=2, pause_after=2, pause_s=30.0)
    echo.fail("/x", status(503), status(503))

    with pytest.raises(ServerError):
        await client.get_json(f"{echo.base_url}/x")
    backoff = clock.sleeps[0]
    failed_at = clock.now

    # A new call (another task, the same host) waits out the pause before asking again.
    assert await client.get_json(f"{echo.base_url}/y") == {"path": "/y"}
    assert clock.sleeps == [backoff, pytest.approx(30.0)]
    assert clock.now == pytest.approx(failed_at + 30.0)
    assert len(echo.hits) == 3


async def test_a_success_resets_the_failure_streak(
    echo: FakeEcho, make_client: Callable[..., HttpClient]
) -> None:
    clock = FakeClock()
    client = make_client(clock.sleep, clock=clock, attempts=2, pause_after=2, pause_s=30.0)

    for _ in range(3):  # fail, succeed: never two failures in a row
        echo.fail("/x", status(503))
        await client.get_json(f"{echo.base_url}/x")

    assert 30.0 not in clock.sleeps
    assert len(clock.sleeps) == 3


async def test_a_declared_length_over_the_cap_is_refused_before_reading(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client(sleeps)

    assert await client.get_bytes(f"{echo.base_url}/bytes/1000", max_bytes=1000) == b"x" * 1000
    with pytest.raises(TooLarge, match=r"file too large: 5000 bytes \(limit 1000\)"):
        await client.get_bytes(f"{echo.base_url}/bytes/5000", max_bytes=1000)
    assert sleeps.calls == []


async def test_an_undeclared_body_is_cut_at_the_cap(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client(sleeps)

    assert len(await client.get_bytes(f"{echo.base_url}/stream/3000", max_bytes=3000)) == 3000
    with pytest.raises(TooLarge, match=r"file too large: more than 3000 bytes"):
        await client.get_bytes(f"{echo.base_url}/stream/50000", max_bytes=3000)


async def test_redirects_are_followed_within_the_limit(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client(sleeps)

    assert await client.get_json(f"{echo.base_url}/hop/2") == {"landed": True}  # 302, 307
    with pytest.raises(Refused, match="more than 5 redirects"):
        await client.get_json(f"{echo.base_url}/hop/9")


async def test_every_request_carries_the_user_agent(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client(sleeps)
    echo.fail("/x", status(500))

    await client.get_json(f"{echo.base_url}/x", params={"q": "a b"})
    await client.get_bytes(f"{echo.base_url}/bytes/10", max_bytes=100)

    assert [hit.user_agent for hit in echo.hits] == [USER_AGENT] * 3
    assert echo.hits[0].query == {"q": "a b"}


def test_host_key_names_host_and_port() -> None:
    assert host_key("https://API.Deezer.com/chart/0") == "api.deezer.com:443"
    assert host_key("http://127.0.0.1:8123/x") == "127.0.0.1:8123"
    assert host_key("http://musicbrainz.org/ws/2") == "musicbrainz.org:80"


@pytest.mark.parametrize(
    ("url", "reason"),
    [("ftp://127.0.0.1/cover.jpg", "not an http(s) URL"), ("http://[::1/x", "invalid URL")],
)
async def test_urls_that_cannot_be_fetched_are_refused_at_once(
    sleeps: Sleeps, make_client: Callable[..., HttpClient], url: str, reason: str
) -> None:
    with pytest.raises(Refused, match=re.escape(reason)):
        await make_client(sleeps).get_bytes(url, max_bytes=1000)
    assert sleeps.calls == []


async def test_a_form_post_is_sent_with_its_headers_and_its_json_decoded(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client(sleeps)
    echo.fail("/echo", status(503))  # retried like a GET: a token grant is safe to repeat

    answer = await client.post_form(
        f"{echo.base_url}/echo",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic eDp5"},
    )

    assert answer == {
        "method": "POST",
        "form": {"grant_type": "client_credentials"},
        "content_type": "application/x-www-form-urlencoded",
        "authorization": "Basic eDp5",
        "user_agent": USER_AGENT,
    }
    assert len(sleeps.calls) == 1


async def test_a_request_may_replace_the_user_agent_and_add_headers(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client(sleeps)

    answer = await client.get_json(
        f"{echo.base_url}/echo",
        headers={"User-Agent": "Sleeve/0.1 ( me@example.org )", "Authorization": "Bearer t"},
    )
    plain = await client.get_json(f"{echo.base_url}/echo")

    assert (answer["user_agent"], answer["authorization"]) == (
        "Sleeve/0.1 ( me@example.org )",
        "Bearer t",
    )
    assert (plain["user_agent"], plain["authorization"]) == (USER_AGENT, None)


async def test_a_refusal_keeps_the_start_of_the_servers_answer_out_of_its_message(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    body = b'{"error": {"status": 403, "message": "Forbidden"}}'
    echo.fail("/x", status(403, body=body))

    with pytest.raises(Refused) as caught:
        await make_client(sleeps).get_json(f"{echo.base_url}/x")

    assert caught.value.body == body
    assert "Forbidden" not in str(caught.value)


async def test_stats_count_every_try_and_each_failure_by_kind(
    echo: FakeEcho, sleeps: Sleeps, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client(sleeps, attempts=3)
    echo.fail("/retried", status(503), status(429, headers={"Retry-After": "1"}))
    echo.fail("/gone", status(404))
    echo.fail("/garbled", malformed())
    echo.fail("/busy", empty(403))

    assert await client.get_json(f"{echo.base_url}/retried") == {"path": "/retried"}
    with pytest.raises(Refused):
        await client.get_json(f"{echo.base_url}/gone")
    await client.get_json(f"{echo.base_url}/garbled")
    await client.get_json(f"{echo.base_url}/busy", throttled=lambda code, body: code == 403)
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    with pytest.raises(Unreachable):
        await client.get_json(f"http://127.0.0.1:{port}/x")

    stats = client.stats
    assert stats.requests == len(echo.hits) + 3 == 11
    assert stats.errors == {
        "http_503": 1,
        "http_429": 1,
        "http_404": 1,
        "malformed_reply": 1,
        "rate_limited": 1,
        "unreachable": 3,
    }


async def test_the_request_rate_is_measured_over_the_last_seconds(
    echo: FakeEcho, make_client: Callable[..., HttpClient]
) -> None:
    clock = FakeClock()
    client = make_client(clock.sleep, clock=clock)
    assert client.stats.rate == 0.0

    for n in range(10):
        await client.get_json(f"{echo.base_url}/{n}")
    assert client.stats.rate == 10.0  # all within the first second: counted over 1 s
    clock.now += 2.0
    for n in range(10):
        await client.get_json(f"{echo.base_url}/{n}")
    assert client.stats.rate == 20 / 2.0  # over the 2 s since the first request
    clock.now += RATE_WINDOW_S + 1
    assert client.stats.rate == 0.0  # nothing sent in the window: the run is idle
    for n in range(5):
        await client.get_json(f"{echo.base_url}/{n}")
    assert client.stats.rate == 5 / RATE_WINDOW_S
    assert client.stats.requests == 25
