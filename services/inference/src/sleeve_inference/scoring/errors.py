"""Errors of bulk scoring: bad requests (raised before any item is scored), unreadable items
and cancellation.

SleeveError
 └── ScoringInputError     the request cannot be scored as given
      ├── CatalogError      the input is empty, unreadable or has no images
      ├── ManifestError     a manifest's columns or ids are wrong
      ├── OutputError       the output path cannot be written or has no known format
      └── EngineUnavailable the engine asked for is not installed (Ray without its extra)
 └── ItemUnreadable        one item's bytes cannot be had (recorded on its row; the job goes on)
 └── ScoringCancelled      the job was cancelled; its run stops after the chunk in hand
"""

from __future__ import annotations

from sleeve_common.exceptions import SleeveError

__all__ = [
    "CatalogError",
    "EngineUnavailable",
    "ItemUnreadable",
    "ManifestError",
    "OutputError",
    "ScoringCancelled",
    "ScoringInputError",
]


class ScoringInputError(SleeveError):
    """A scoring request that cannot be run as given; the message says why."""


class CatalogError(ScoringInputError):
    """The catalog is empty, unreadable or holds no images."""


class ManifestError(CatalogError):
    """A manifest without an ``id`` column, without exactly one locator column, or bad ids."""


class OutputError(ScoringInputError):
    """The output path cannot be written, or its extension names no known format."""


class EngineUnavailable(ScoringInputError):
    """The engine asked for cannot run here: ``ray`` without ``sleeve-inference[ray]``."""


class ItemUnreadable(SleeveError):
    """One item's bytes cannot be had: a missing object or file, a dead or private URL."""


class ScoringCancelled(SleeveError):
    """The scoring job was cancelled (``POST /v1/scoring-jobs/{id}/cancel``)."""
