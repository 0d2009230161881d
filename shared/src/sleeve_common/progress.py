"""Progress of long work, sent to the terminal (CLI) or to the job row (API).

Work reports a fraction, a one-line message and, optionally, ``parts``: its sub-tasks (a
scrape's genres) with how far each got. Each sink shows what it can: the terminal a live
bar per part, a job row one line with the parts' counts at its end, a plain log the line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, TextIO

from rich.console import Console, RenderableType
from rich.file_proxy import FileProxy
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = [
    "Part",
    "ProgressSink",
    "TerminalProgress",
    "ThrottledProgress",
    "line_with_parts",
    "silent_progress",
]


@dataclass(frozen=True)
class Part:
    """One sub-task of long work (a genre of a scrape): ``done`` of ``total`` (None: unknown)."""

    name: str
    done: int
    total: int | None = None

    @property
    def count(self) -> str:
        """``12/100``, or ``12/?`` when the total is not known."""
        return f"{self.done}/{'?' if self.total is None else self.total}"

    def __str__(self) -> str:
        return f"{self.name} {self.count}"


class ProgressSink(Protocol):
    """Called with a fraction in 0..1 (or -1 when unknown), a one-line message and the parts."""

    async def __call__(
        self, fraction: float, message: str, *, parts: Sequence[Part] = ()
    ) -> None: ...


async def silent_progress(fraction: float, message: str, *, parts: Sequence[Part] = ()) -> None:
    """A sink that drops progress."""


def line_with_parts(message: str, parts: Sequence[Part]) -> str:
    """``message`` with the parts' counts at its end, for sinks that keep one line (a job row)."""
    if not parts:
        return message
    return f"{message} [{', '.join(str(part) for part in parts)}]"


class ThrottledProgress:
    """Pass at most one update per ``interval_s`` to ``sink``; the final 1.0 always passes."""

    def __init__(self, sink: ProgressSink, *, interval_s: float = 1.0) -> None:
        self._sink = sink
        self._interval = interval_s
        self._last = float("-inf")

    async def __call__(self, fraction: float, message: str, *, parts: Sequence[Part] = ()) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - self._last >= self._interval:
            self._last = now
            await self._sink(fraction, message, parts=parts)


class TerminalProgress:
    """Progress on stderr: inside ``with`` on a terminal, a live bar with elapsed time and ETA
    (rich), one more bar per part; otherwise one plain line per update, ``[label  42%] message``,
    which logs, pipes and tests read as they are.

    ``live`` forces the choice (tests); by default the bar shows only where the stream is a
    terminal that can redraw. The bar lives between ``__enter__`` and ``__exit__``, so a crash
    never leaves the terminal with a hidden cursor.
    """

    def __init__(self, label: str, stream: TextIO | None = None, *, live: bool | None = None):
        self._label = label
        self._stream = stream or sys.stderr
        self._console = Console(file=self._stream, force_terminal=live)
        self._live = (
            live
            if live is not None
            else self._console.is_terminal and not self._console.is_dumb_terminal
        )
        self._bar: _BarsAndNote | None = None
        self._whole: TaskID | None = None
        self._parts: dict[str, TaskID] = {}
        self._moved_logs: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []

    def __enter__(self) -> Self:
        if self._live:
            self._bar = _BarsAndNote(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=30),
                TextColumn("{task.fields[count]}", justify="right"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
            )
            self._bar.start()
            self._whole = self._bar.add_task(self._label, total=None, count="")
            self._move_logs_above_the_bar()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        for handler, stream in self._moved_logs:
            handler.setStream(stream)
        self._moved_logs.clear()

    async def __call__(self, fraction: float, message: str, *, parts: Sequence[Part] = ()) -> None:
        if self._bar is None or self._whole is None:
            percent = f"{fraction * 100:3.0f}%" if fraction >= 0 else " ..."
            self._stream.write(f"[{self._label} {percent}] {message}\n")
            self._stream.flush()
            return
        known = fraction >= 0
        self._bar.update(
            self._whole,
            total=1.0 if known else None,
            completed=min(fraction, 1.0) if known else 0,
            count=f"{fraction * 100:3.0f}%" if known else "",
        )
        self._bar.note = message
        for part in parts:
            task = self._parts.get(part.name)
            if task is None:
                task = self._parts[part.name] = self._bar.add_task(
                    f"  {part.name}", total=part.total, count=""
                )
            shown = "?" if part.total is None else part.total
            self._bar.update(
                task, total=part.total, completed=part.done, count=f"{part.done}/{shown}"
            )

    def _move_logs_above_the_bar(self) -> None:
        """Log lines written straight to the terminal would tear the live bar. While it shows,
        ``sys.stderr`` is rich's stand-in that prints above the bar; handlers that hold the
        real stderr (they took it when logging was configured) write through it too."""
        proxy = sys.stderr
        if not isinstance(proxy, FileProxy):
            return
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                real = handler.stream
                if real is proxy.rich_proxied_file:
                    handler.setStream(proxy)
                    self._moved_logs.append((handler, real))


class _BarsAndNote(Progress):
    """The bars, then the latest message on a line of its own (cut at the terminal's width)."""

    note = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.note:
            yield Text(self.note, no_wrap=True, overflow="ellipsis")
