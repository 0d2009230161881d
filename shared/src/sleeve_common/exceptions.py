"""Errors of the common package; HTTP codes are chosen only at the API edge.

SleeveError
 ├── ConfigError          a setting is missing or invalid
 ├── DatabaseUnavailable  the database cannot be reached
 ├── NotFound             a row that was asked for does not exist
 ├── Conflict             a name or key is already taken
 ├── NotImplementedYet    a command or option a later release fills in
 ├── JobError
 │    └── LeaseLost       another worker owns the job now
 └── StoreError
      ├── StoreUnavailable the object store cannot be reached
      ├── ObjectNotFound   no object under that key
      └── InvalidKey       a key that could escape the store or is malformed
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "DatabaseUnavailable",
    "InvalidKey",
    "JobError",
    "LeaseLost",
    "NotFound",
    "NotImplementedYet",
    "ObjectNotFound",
    "SleeveError",
    "StoreError",
    "StoreUnavailable",
]


class SleeveError(Exception):
    """Base of every error Sleeve raises on purpose."""


class ConfigError(SleeveError):
    """A setting is missing or invalid; the message names the variable."""


class DatabaseUnavailable(SleeveError):
    """The database cannot be reached."""


class NotFound(SleeveError):
    """A row that was asked for does not exist."""


class Conflict(SleeveError):
    """A name or key is already taken."""


class NotImplementedYet(SleeveError):
    """A command or option that a later release will fill in."""


class JobError(SleeveError):
    """A job-queue operation failed."""


class LeaseLost(JobError):
    """The worker's lease on a job expired and another worker may own it."""


class StoreError(SleeveError):
    """An object-store operation failed."""


class StoreUnavailable(StoreError):
    """The object store cannot be reached."""


class ObjectNotFound(StoreError):
    """No object under that key."""


class InvalidKey(StoreError):
    """A key that is empty, absolute, or climbs out of the store."""
