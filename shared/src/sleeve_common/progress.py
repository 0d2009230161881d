"""Progress of long work, sent to the terminal (CLI) or to the job row (API)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

__all__ = ["ProgressSink", "TerminalProgress", "ThrottledProgress", "silent_progress"]

ProgressSink = Callable[[float, str], Coroutine[Any, Any, None]]
"""Called with a fraction in 0..1 (or -1 when unknown) and a one-line message."""


async def silent_progress(fraction: float, message: str) -> None:
    """A sink that drops progress."""


class ThrottledProgress:
    """Pass at most one update per ``interval_s`` to ``sink``; the final 1.0 always passes."""

    def __init__(self, sink: ProgressSink, *, interval_s: float = 1.0) -> None:
        self._sink = sink
        self._interval = interval_s
        self._last = float("-inf")

    async def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - self._last >= self._interval:
            self._last = now
            await self._sink(fraction, message)


class TerminalProgress:
    """One line per update on stderr: ``[ 42%] message``."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream or sys.stderr

    async def __call__(self, fraction: float, message: str) -> None:
        percent = f"{fraction * 100:3.0f}%" if fraction >= 0 else " ..."
        self._stream.write(f"[{self._label} {percent}] {message}\n")
        self._stream.flush()
