"""Errors of bulk scoring; each is raised before any item is scored.

SleeveError
 └── ScoringInputError     the request cannot be scored as given
      ├── CatalogError      the input is empty, unreadable or has no images
      ├── ManifestError     a manifest's columns or ids are wrong
      └── OutputError       the output path cannot be written or has no known format
 └── ItemUnreadable        one item's bytes cannot be had (recorded on its row; the job goes on)
"""

from __future__ import annotations

from sleeve_common.exceptions import SleeveError

__all__ = [
    "CatalogError",
    "ItemUnreadable",
    "ManifestError",
    "OutputError",
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


class ItemUnreadable(SleeveError):
    """One item's bytes cannot be had: a missing object or file, a dead or private URL."""
