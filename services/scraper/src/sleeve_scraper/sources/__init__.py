"""Where covers come from. Each source yields ``Found`` items from a resumable position."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from sleeve_scraper.ingest import Candidate

__all__ = ["Found", "Source"]


@dataclass(frozen=True)
class Found:
    """A candidate with its bytes (or why they could not be had) and the cursor after it."""

    candidate: Candidate
    data: bytes | None
    failure: str | None
    cursor: dict[str, Any]


class Source(Protocol):
    name: str

    async def total(self) -> int | None:
        """How many items this source will yield, if known."""

    def found(self, cursor: dict[str, Any]) -> AsyncIterator[Found]:
        """Items after ``cursor`` (``{}`` = from the start)."""
