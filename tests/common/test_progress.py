"""Progress sinks: plain lines where the output is a log, a live bar per part on a terminal,
one line with the parts' counts on a job row."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Sequence

from sleeve_common.progress import Part, TerminalProgress, ThrottledProgress, line_with_parts

GENRES = [Part("jazz", 3, 10), Part("metal", 0, 10), Part("rock", 7)]


async def test_plain_lines_where_the_stream_is_no_terminal() -> None:
    stream = io.StringIO()

    with TerminalProgress("scrape", stream) as progress:
        await progress(0.17, "run 1: itunes jazz 1/3", parts=GENRES)
        await progress(-1.0, "listing", parts=GENRES)
        await progress(1.0, "run 1 done")

    assert stream.getvalue().splitlines() == [
        "[scrape  17%] run 1: itunes jazz 1/3",
        "[scrape  ...] listing",
        "[scrape 100%] run 1 done",
    ]


async def test_a_live_bar_per_part_on_a_terminal() -> None:
    stream = io.StringIO()

    with TerminalProgress("scrape", stream, live=True) as progress:
        await progress(0.25, "run 1: itunes jazz 3/10", parts=GENRES)
        await progress(0.5, "run 1: itunes rock 7", parts=GENRES)

    shown = stream.getvalue()
    assert "[scrape" not in shown  # no plain lines
    for text in ("scrape", "50%", "ETA", "run 1: itunes rock 7", "jazz", "3/10", "0/10", "7/?"):
        assert text in shown, text


async def test_log_lines_print_above_the_live_bar() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(sys.stderr)  # as logging.basicConfig makes it
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with TerminalProgress("train", stream, live=True) as progress:
            await progress(0.1, "epoch 1/10")
            logging.getLogger("sleeve.test").warning("a warning while the bar shows")
        assert handler.stream is sys.stderr  # given back
    finally:
        root.removeHandler(handler)

    assert "a warning while the bar shows" in stream.getvalue()


async def test_a_job_row_gets_the_parts_counted_at_the_end_of_its_line() -> None:
    assert line_with_parts("run 1: itunes jazz 3/10", GENRES) == (
        "run 1: itunes jazz 3/10 [jazz 3/10, metal 0/10, rock 7/?]"
    )
    assert line_with_parts("run 1 done", []) == "run 1 done"


async def test_throttling_passes_the_parts_on() -> None:
    seen: list[tuple[float, str, Sequence[Part]]] = []

    async def sink(fraction: float, message: str, *, parts: Sequence[Part] = ()) -> None:
        seen.append((fraction, message, parts))

    throttled = ThrottledProgress(sink, interval_s=3600)
    await throttled(0.1, "first", parts=GENRES)
    await throttled(0.2, "dropped", parts=GENRES)
    await throttled(1.0, "last", parts=GENRES[:1])

    assert seen == [(0.1, "first", GENRES), (1.0, "last", GENRES[:1])]
