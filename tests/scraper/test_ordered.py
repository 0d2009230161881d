"""``ordered_map``'s contract, clause by clause: order kept, concurrency bounded, failures of
the source and of the work, early stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest

from sleeve_scraper.ordered import ordered_map


class Tracker:
    """Work whose items finish in the order the test releases them; counts what overlaps."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.finished: list[int] = []
        self.release: dict[int, asyncio.Event] = {}

    async def work(self, item: int) -> int:
        self.started.append(item)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.setdefault(item, asyncio.Event()).wait()
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        finally:
            self.running -= 1
        self.finished.append(item)
        if item < 0:
            raise ValueError(f"bad item {item}")
        return item * 10

    def finish(self, *items: int) -> None:
        for item in items:
            self.release.setdefault(item, asyncio.Event()).set()


async def numbers(*values: int, fail_after: bool = False) -> AsyncGenerator[int, None]:
    for value in values:
        yield value
    if fail_after:
        raise RuntimeError("the listing broke")


async def test_results_come_in_order_though_later_items_finish_first() -> None:
    tracker = Tracker()
    tracker.finish(4, 3, 2)  # the last three are ready before the first two

    async def release_first_two_late() -> None:
        await asyncio.sleep(0.01)
        tracker.finish(1, 0)

    releaser = asyncio.create_task(release_first_two_late())
    results = [r async for r in ordered_map(numbers(0, 1, 2, 3, 4), tracker.work, concurrency=5)]
    await releaser
    assert results == [0, 10, 20, 30, 40]
    assert tracker.finished == [2, 3, 4, 1, 0]


async def test_at_most_concurrency_items_are_in_flight() -> None:
    tracker = Tracker()
    tracker.finish(*range(20))
    results = [r async for r in ordered_map(numbers(*range(20)), tracker.work, concurrency=3)]
    assert results == [n * 10 for n in range(20)]
    assert tracker.most <= 3


async def test_a_failing_source_still_hands_over_what_is_in_flight_then_raises() -> None:
    tracker = Tracker()
    tracker.finish(0, 1)
    results: list[int] = []
    with pytest.raises(RuntimeError, match="the listing broke"):
        async for result in ordered_map(
            numbers(0, 1, fail_after=True), tracker.work, concurrency=4
        ):
            results.append(result)
    assert results == [0, 10]


async def test_failing_work_raises_at_its_turn_and_cancels_the_rest() -> None:
    tracker = Tracker()
    tracker.finish(0, -1)  # 2 and 3 never finish: they must be cancelled
    results: list[int] = []
    with pytest.raises(ValueError, match="bad item -1"):
        async for result in ordered_map(numbers(0, -1, 2, 3), tracker.work, concurrency=4):
            results.append(result)
    assert results == [0]
    assert sorted(tracker.cancelled) == [2, 3]


async def test_stopping_early_cancels_the_pending_work() -> None:
    tracker = Tracker()
    tracker.finish(0)
    async with aclosing(ordered_map(numbers(0, 1, 2), tracker.work, concurrency=3)) as results:
        async for result in results:
            assert result == 0
            break
    assert sorted(tracker.cancelled) == [1, 2]
    assert tracker.running == 0
