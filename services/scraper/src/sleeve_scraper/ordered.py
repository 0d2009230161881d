"""Bounded concurrency that keeps order: the scraper's one way to run requests ahead.

A run's cursor means "every item before it is done", so items must reach the ingester in
the source's order even when their requests overlap. ``ordered_map`` starts the work of up
to ``concurrency`` items at once and yields the results oldest first. The genre walk uses it
for the per-album API requests (one at a time cannot reach a host's rate once a round trip
is as long as the rate's spacing), and the download step for the covers; the HTTP edge's
per-host limiter still paces every request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


async def ordered_map(
    items: AsyncGenerator[T, None], work: Callable[[T], Awaitable[R]], *, concurrency: int
) -> AsyncGenerator[R, None]:
    """``work(item)`` for each of ``items``, up to ``concurrency`` at once, yielded in order.

    When ``items`` fails, the results already in flight are still yielded before its error
    (the cursor gets as far as the source did); a failing ``work`` raises at its turn; when
    the consumer stops early or an error leaves, the work still pending is cancelled.
    """
    window: deque[asyncio.Task[R]] = deque()
    try:
        try:
            async with aclosing(items):
                async for item in items:
                    window.append(asyncio.ensure_future(work(item)))
                    if len(window) >= concurrency:
                        yield await _oldest(window)
        except Exception:
            while window:
                yield await _oldest(window)
            raise
        while window:
            yield await _oldest(window)
    finally:
        for task in window:
            task.cancel()
        await asyncio.gather(*window, return_exceptions=True)


async def _oldest(window: deque[asyncio.Task[R]]) -> R:
    """The oldest result once done; its task stays in the window (cancellable) until then."""
    result = await window[0]
    window.popleft()
    return result
