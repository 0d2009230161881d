"""Errors of the scraper.

ScrapeError (a SleeveError)
 ├── SourceError      a source's input (folder, file, API answer) cannot be used
 └── RunStateError    a run cannot be resumed (unknown, finished, other source)
"""

from __future__ import annotations

from sleeve_common.exceptions import SleeveError

__all__ = ["RunStateError", "ScrapeError", "SourceError"]


class ScrapeError(SleeveError):
    """Base of the scraper's errors."""


class SourceError(ScrapeError):
    """A source's input cannot be used; the message says which and why."""


class RunStateError(ScrapeError):
    """A run cannot be resumed."""
