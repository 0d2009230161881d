"""Fetching covers: one bounded-concurrency step between every source and the ingester.

Up to ``concurrency`` covers download at once, yet items leave in the order the source
gave them. A consumer that saves each item's cursor after handling it therefore never
saves a cursor past an item still in flight: "everything before the cursor is done" holds
with concurrent downloads, and a crash loses at most the items in the window.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING

from sleeve_scraper.exceptions import FetchError, TooLarge
from sleeve_scraper.sources.base import Candidate, Found

if TYPE_CHECKING:
    from sleeve_scraper.http import HttpClient

__all__ = ["with_covers"]


async def with_covers(
    items: AsyncGenerator[Found, None],
    *,
    http: HttpClient,
    max_bytes: int,
    concurrency: int,
    recorded: Callable[[Candidate], Awaitable[bool]],
) -> AsyncGenerator[Found, None]:
    """``items`` in their order, each with its cover's bytes or the reason it has none.

    Items that already carry bytes or a failure pass through; so do candidates ``recorded``
    says are stored already (nothing is downloaded twice); the rest are fetched from their
    ``cover_url``. When the source fails, the items already in flight are still yielded
    before its error; when the consumer stops early, pending downloads are cancelled.
    """
    window: deque[asyncio.Task[Found]] = deque()
    try:
        try:
            async with aclosing(items):
                async for item in items:
                    window.append(asyncio.create_task(_fetch(item, http, max_bytes, recorded)))
                    if len(window) >= concurrency:
                        yield await _next(window)
        except Exception:
            # The source failed: what is already in flight is still handed over, so the
            # run's cursor gets as far as the source did before the error is raised.
            while window:
                yield await _next(window)
            raise
        while window:
            yield await _next(window)
    finally:
        for task in window:
            task.cancel()
        await asyncio.gather(*window, return_exceptions=True)


async def _next(window: deque[asyncio.Task[Found]]) -> Found:
    """The oldest item once done; it stays in the window (cancellable) until then."""
    done = await window[0]
    window.popleft()
    return done


async def _fetch(
    item: Found,
    http: HttpClient,
    max_bytes: int,
    recorded: Callable[[Candidate], Awaitable[bool]],
) -> Found:
    if item.data is not None or item.failure is not None or await recorded(item.candidate):
        return item
    url = item.candidate.cover_url
    if not url:
        return replace(item, failure="no cover URL")
    try:
        data = await http.get_bytes(url, max_bytes=max_bytes)
    except TooLarge as exc:
        return replace(item, failure=exc.reason)
    except FetchError as exc:
        return replace(item, failure=f"cover download failed: {exc.reason}")
    return replace(item, data=data)
