"""Fetching covers: one bounded-concurrency step between every source and the ingester.

Up to ``concurrency`` covers download at once, yet items leave in the order the source
gave them (``sleeve_scraper.ordered``). A consumer that saves each item's cursor after
handling it therefore never saves a cursor past an item still in flight: "everything before
the cursor is done" holds with concurrent downloads, and a crash loses at most the items in
the window.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from sleeve_scraper.exceptions import FetchError, TooLarge
from sleeve_scraper.ordered import ordered_map
from sleeve_scraper.sources.base import Candidate, Found

if TYPE_CHECKING:
    from sleeve_scraper.http import HttpClient

__all__ = ["with_covers"]


def with_covers(
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
    return ordered_map(
        items,
        partial(_fetch, http=http, max_bytes=max_bytes, recorded=recorded),
        concurrency=concurrency,
    )


async def _fetch(
    item: Found,
    *,
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
