"""The shared download step: concurrent downloads, items handed over in source order."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import pytest

from sleeve_scraper.downloads import with_covers
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.http import HttpClient
from sleeve_scraper.sources.base import Candidate, Found, Label

from .conftest import Sleeps
from .fakes import FakeCdn, slow, unique_covers


@pytest.fixture
async def http(sleeps: Sleeps) -> AsyncIterator[HttpClient]:
    async with HttpClient(
        user_agent="Sleeve-test/1.0",
        host_rates={},
        default_rate=1000.0,
        timeout_s=5.0,
        attempts=2,
        pause_after=100,
        pause_s=30.0,
        sleep=sleeps,
    ) as client:
        yield client


def found(cdn: FakeCdn, n: int) -> Found:
    token = f"c{n}"
    cdn.add(token, unique_covers()[n])
    candidate = Candidate(
        source="test",
        source_id=str(n),
        labels=(Label("jazz", "Jazz"),),
        provenance="test:list",
        cover_url=cdn.deezer_url(token),
    )
    return Found(candidate=candidate, cursor={"done": n + 1})


async def listing(items: list[Found], *, fail_after: int | None = None) -> AsyncGenerator[Found]:
    for index, item in enumerate(items):
        if index == fail_after:
            raise SourceError("the listing broke")
        yield item


async def never_recorded(candidate: Candidate) -> bool:
    return False


async def test_items_leave_in_source_order_though_later_downloads_finish_first(
    cdn: FakeCdn, http: HttpClient
) -> None:
    items = [found(cdn, n) for n in range(6)]
    cdn.fail("/images/cover/c0/", slow(0.3))  # the first cover is the last to arrive

    out = [
        item
        async for item in with_covers(
            listing(items), http=http, max_bytes=10**6, concurrency=4, recorded=never_recorded
        )
    ]

    assert [item.cursor for item in out] == [{"done": n + 1} for n in range(6)]
    assert [item.data for item in out] == [p.read_bytes() for p in unique_covers()[:6]]


async def test_a_failing_source_still_hands_over_what_is_in_flight(
    cdn: FakeCdn, http: HttpClient
) -> None:
    items = [found(cdn, n) for n in range(5)]
    out: list[Found] = []

    with pytest.raises(SourceError, match="the listing broke"):
        async for item in with_covers(
            listing(items, fail_after=3),
            http=http,
            max_bytes=10**6,
            concurrency=8,
            recorded=never_recorded,
        ):
            out.append(item)

    assert [item.cursor for item in out] == [{"done": 1}, {"done": 2}, {"done": 3}]
    assert all(item.data for item in out)


async def test_recorded_candidates_and_failures_are_not_downloaded(
    cdn: FakeCdn, http: HttpClient
) -> None:
    items = [found(cdn, n) for n in range(3)]
    items[2] = Found(candidate=items[2].candidate, cursor={"done": 3}, failure="dropped")

    async def first_is_recorded(candidate: Candidate) -> bool:
        return candidate.source_id == "0"

    out = [
        item
        async for item in with_covers(
            listing(items), http=http, max_bytes=10**6, concurrency=2, recorded=first_is_recorded
        )
    ]

    assert [(item.data is not None, item.failure) for item in out] == [
        (False, None),
        (True, None),
        (False, "dropped"),
    ]
    assert cdn.paths() == ["/images/cover/c1/1000x1000-000000-80-0-0.jpg"]


async def test_stopping_early_cancels_the_downloads_in_flight(
    cdn: FakeCdn, http: HttpClient
) -> None:
    items = [found(cdn, n) for n in range(4)]
    for n in range(1, 4):
        cdn.fail(f"/images/cover/c{n}/", slow(2.0))

    started = time.monotonic()
    async with aclosing(
        with_covers(
            listing(items), http=http, max_bytes=10**6, concurrency=4, recorded=never_recorded
        )
    ) as stream:
        first = await anext(stream)

    assert first.cursor == {"done": 1}
    # Closing did not wait out the slow answers: their downloads were cancelled.
    assert time.monotonic() - started < 1.0
