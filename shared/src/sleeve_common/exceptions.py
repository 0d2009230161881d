"""Errors of the common package; HTTP codes are chosen only at the API edge.

SleeveError
 ├── ConfigError          a setting is missing or invalid
 ├── DatabaseUnavailable  the database cannot be reached
 ├── NotFound             a row that was asked for does not exist
 ├── Conflict             a name or key is already taken
 ├── ModelUnusable        a model version whose stored file is missing or altered
 ├── BootstrapFailed      the first-run bootstrap could not train a first model
 ├── InvalidRequest       a work request that cannot be carried out as given (a missing file)
 ├── JobError
 │    └── LeaseLost       another worker owns the job now
 └── StoreError
      ├── StoreUnavailable the object store cannot be reached
      ├── StoreRefused     it answers but refuses: wrong keys, no permission, no such bucket
      ├── ObjectNotFound   no object under that key
      └── InvalidKey       a key that could escape the store or is malformed
"""

from __future__ import annotations

__all__ = [
    "BootstrapFailed",
    "ConfigError",
    "Conflict",
    "DatabaseUnavailable",
    "InvalidKey",
    "InvalidRequest",
    "JobError",
    "LeaseLost",
    "ModelUnusable",
    "NotFound",
    "ObjectNotFound",
    "SleeveError",
    "StoreError",
    "StoreRefused",
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


class ModelUnusable(SleeveError):
    """A model version that cannot be served: its ONNX file is missing or altered."""


class InvalidRequest(SleeveError):
    """A work request that is well-formed but cannot be carried out (a file that is missing)."""


class BootstrapFailed(SleeveError):
    """A step of the first-run bootstrap failed; the message says which and why."""


class JobError(SleeveError):
    """A job-queue operation failed."""


class LeaseLost(JobError):
    """The worker's lease on a job expired and another worker may own it."""


class StoreError(SleeveError):
    """An object-store operation failed."""


class StoreUnavailable(StoreError):
    """The object store cannot be reached."""


class StoreRefused(StoreError):
    """The object store answers but refuses every request: wrong or revoked credentials, no
    permission on the bucket, or a bucket that does not exist. Unlike ``StoreUnavailable`` it
    does not pass by itself: someone must fix the keys or the bucket."""


class ObjectNotFound(StoreError):
    """No object under that key."""


class InvalidKey(StoreError):
    """A key that is empty, absolute, or climbs out of the store."""
