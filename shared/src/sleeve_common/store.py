"""Object store: one async interface over a local directory and S3-compatible stores.

Keys are relative ``/``-separated paths such as ``covers/ab/ab12….jpg``. Every key is
checked before any I/O (see ``_validate_key``): empty keys, absolute keys, empty, ``.``
or ``..`` segments, backslashes, control characters and keys over 1024 UTF-8 bytes raise
``InvalidKey``, so no key can reach outside the store's root.

Both backends are ``obstore`` stores wrapped by ``ObstoreStore``:

- ``file://`` → ``obstore.store.LocalStore``. ``put`` is atomic: obstore writes to a
  staging file ``<key>#<n>`` beside the target and renames it over the target, so a
  reader sees the old object or the new one, never half of one. Staging files are hidden
  from listings; key segments ending in ``#<digits>`` are refused for that reason. A
  directory cannot also be a file, so on this backend a key cannot be both an object and
  a prefix of other keys (``a`` and ``a/b``).
- ``s3://bucket/prefix`` → ``obstore.store.S3Store`` (AWS S3, SeaweedFS, MinIO, …). An S3
  PUT, and the completion of a multipart upload, is atomic by the protocol.

Every obstore or OS error is translated into the common package's errors:
``ObjectNotFound``, ``StoreUnavailable`` (connection refused, timeouts, DNS, 5xx after
obstore's bounded retries), ``StoreRefused`` (the server answers but refuses: an unknown
access key id, a wrong secret key, access denied, a bucket that does not exist; the S3 error
code says which), ``InvalidKey``, otherwise ``StoreError``. A missing bucket is never
``ObjectNotFound``: S3 answers 404 for it too, and "the model file is missing" would send an
operator looking for the wrong thing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import obstore
from obstore.exceptions import (
    BaseError,
    InvalidPathError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import LocalStore, S3Store

from sleeve_common.exceptions import (
    ConfigError,
    InvalidKey,
    ObjectNotFound,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

    from sleeve_common.settings import Settings

__all__ = ["ObjectStore", "ObstoreStore", "cover_key", "open_store"]

MAX_KEY_BYTES = 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXTENSION = re.compile(r"[a-z0-9]{1,16}")
# obstore's LocalStore stages writes in "<key>#<n>"; such names would collide with them.
_STAGING_SUFFIX = re.compile(r"#\d+\Z")
# Phrases in obstore's error summaries that mean the server could not be reached or failed.
_UNREACHABLE_MARKERS = (
    "error sending request",
    "connection refused",
    "connection reset",
    "connection closed",
    "broken pipe",
    "timed out",
    "dns error",
    "request or response body error",
    "non-2xx status code: 5",
)
# S3 error codes of a server that answers but refuses, and what each means for an operator.
_REFUSALS = {
    "NoSuchBucket": "the bucket does not exist",
    "InvalidAccessKeyId": "the server does not know the access key id (SLEEVE_S3_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": "the secret access key is wrong (SLEEVE_S3_SECRET_ACCESS_KEY)",
    "InvalidToken": "the session token is invalid",
    "ExpiredToken": "the session token has expired",
    "AccessDenied": "access denied: these credentials may not use this bucket",
    "AllAccessDisabled": "access to the bucket is disabled",
    "AccountProblem": "the account cannot be used",
}
_S3_CODE = re.compile(r"<Code>([A-Za-z]{1,64})</Code>")
_STATUS = re.compile(r"non-2xx status code: (\d{3})\b")


@runtime_checkable
class ObjectStore(Protocol):
    """Where covers, datasets and models live; keys are relative ``/``-separated paths."""

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically, replacing any previous object."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the object under ``key``; raise ``ObjectNotFound`` if there is none."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object under ``key``; deleting a missing key is not an error."""
        ...

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """Sorted keys that start with ``prefix`` (a plain string prefix, as in S3)."""
        ...

    def iter_keys(
        self, prefix: str = "", *, page_size: int = 1000
    ) -> AsyncIterator[builtins.list[str]]:
        """Keys that start with ``prefix``, a page of at most ``page_size`` at a time.

        Unlike ``list`` it holds one page, not the whole listing, and keeps the backend's
        order (S3: lexicographic; a local directory: unsorted).
        """
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` if the store cannot be reached."""
        ...

    def describe(self) -> str:
        """A human-readable location, e.g. ``s3://bucket/prefix at http://host:9000``."""
        ...


class ObstoreStore:
    """``ObjectStore`` over an obstore ``LocalStore`` or ``S3Store``, with an optional prefix."""

    def __init__(
        self,
        backend: LocalStore | S3Store,
        *,
        prefix: str = "",
        location: str | None = None,
    ) -> None:
        self._backend = backend
        self._prefix = _validate_key(prefix.strip("/")) if prefix.strip("/") else ""
        self._location = location or _default_location(backend, self._prefix)

    @classmethod
    def local(cls, root: str | os.PathLike[str], *, prefix: str = "") -> ObstoreStore:
        """A store in the directory ``root`` (created if missing; relative to the cwd)."""
        path = Path(root).expanduser().absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create store directory {path}: {exc}") from exc
        with _translate("open", str(path)):
            backend = LocalStore(path)
        return cls(backend, prefix=prefix, location=_join_location(f"file://{path}", prefix))

    @classmethod
    def s3(
        cls,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout: timedelta = timedelta(seconds=3),
        max_retries: int = 3,
    ) -> ObstoreStore:
        """A store in an S3 bucket; ``endpoint`` selects a non-AWS server (path-style).

        Without keys, obstore falls back to the standard AWS environment and credential chain.
        """
        if not bucket or "/" in bucket:
            raise ConfigError(f"invalid S3 bucket name {bucket!r}")
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigError("S3 access key id and secret access key must be set together")
        client: ClientConfig = {"connect_timeout": connect_timeout, "timeout": timedelta(minutes=2)}
        # Bounded retries with exponential backoff and jitter (obstore's); connection
        # errors are retried too, so a dead endpoint fails within about a second.
        retry: RetryConfig = {
            "max_retries": max_retries,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
            "retry_timeout": timedelta(seconds=60),
        }
        config: S3Config = {"region": region}
        if access_key_id is not None and secret_access_key is not None:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        if endpoint is not None:
            endpoint = endpoint.rstrip("/")
            scheme = urlsplit(endpoint).scheme
            if scheme not in ("http", "https"):
                raise ConfigError(f"S3 endpoint must be an http(s) URL, got {endpoint!r}")
            # AWS_ENDPOINT_URL_S3 in the environment would win over "endpoint"; pin both.
            config["endpoint"] = config["aws_endpoint_url_s3"] = endpoint
            config["virtual_hosted_style_request"] = False
            client["allow_http"] = scheme == "http"
        location = f"s3://{bucket}"
        with _translate("open", location):
            backend = S3Store(bucket, config=config, client_options=client, retry_config=retry)
        location = _join_location(location, prefix)
        if endpoint is not None:
            location += f" at {endpoint}"
        return cls(backend, prefix=prefix, location=location)

    def describe(self) -> str:
        return self._location

    def __repr__(self) -> str:
        return f"ObstoreStore({self._location!r})"

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with _translate("put", key, self._location):
            await obstore.put_async(self._backend, path, data)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        with _translate("get", key, self._location):
            result = await obstore.get_async(self._backend, path)
            return bytes(await result.bytes_async())

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            with _translate("head", key, self._location):
                await obstore.head_async(self._backend, path)
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with _translate("delete", key, self._location):
                await obstore.delete_async(self._backend, path)
        except ObjectNotFound:
            return
        except (StoreUnavailable, StoreRefused):
            raise
        except StoreError:
            # A local directory under this name is a prefix, not an object: like S3,
            # deleting a key that holds no object is a no-op.
            if await self.exists(key):
                raise

    async def list(self, prefix: str = "") -> builtins.list[str]:
        keys: builtins.list[str] = []
        async for page in self.iter_keys(prefix):
            keys.extend(page)
        return sorted(keys)

    async def iter_keys(
        self, prefix: str = "", *, page_size: int = 1000
    ) -> AsyncIterator[builtins.list[str]]:
        _validate_prefix(prefix)
        # obstore matches prefixes segment by segment; list the enclosing "directory"
        # and filter, so "covers/a" finds "covers/ab/…" as an S3 prefix would.
        directory = prefix.rpartition("/")[0]
        listing = "/".join(part for part in (self._prefix, directory) if part)
        strip = f"{self._prefix}/" if self._prefix else ""
        with _translate("list", prefix, self._location):
            async for chunk in obstore.list(self._backend, listing or None, chunk_size=page_size):
                keys = [
                    key
                    for key in (meta["path"].removeprefix(strip) for meta in chunk)
                    if key.startswith(prefix)
                ]
                if keys:
                    yield keys

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` if unreachable, ``StoreRefused`` if it refuses the
        credentials or has no such bucket, another ``StoreError`` if unusable otherwise."""
        if isinstance(self._backend, LocalStore):
            root = self._backend.prefix
            if root is not None:
                await asyncio.to_thread(_check_directory, root)
            return
        # One ListObjects request: proves the endpoint, the credentials and the bucket.
        with _translate("ping", self._location), contextlib.suppress(StopAsyncIteration):
            stream = obstore.list(self._backend, self._prefix or None, chunk_size=1)
            await stream.__anext__()

    def _path(self, key: str) -> str:
        _validate_key(key)
        path = f"{self._prefix}/{key}" if self._prefix else key
        if len(path.encode()) > MAX_KEY_BYTES:
            raise InvalidKey(f"key {_show(key)} is too long with the store prefix")
        return path


def open_store(settings: Settings) -> ObjectStore:
    """Open the store named by ``settings.store_url`` (``file://…`` or ``s3://bucket/prefix``)."""
    url = settings.store_url
    if url.startswith("file://"):
        # "file://./var/store" is relative to the working directory, "file:///srv/x" absolute.
        return ObstoreStore.local(unquote(url.removeprefix("file://")) or ".")
    if url.startswith("s3://"):
        parts = urlsplit(url)
        key_id = settings.aws_access_key_id
        secret = settings.aws_secret_access_key
        return ObstoreStore.s3(
            parts.netloc,
            prefix=unquote(parts.path).strip("/"),
            endpoint=settings.s3_endpoint or None,
            region=settings.s3_region,
            access_key_id=key_id.get_secret_value() if key_id is not None else None,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    raise ConfigError("SLEEVE_STORE_URL: must be a file:// or s3://bucket/prefix URL")


def cover_key(sha256: str, extension: str = "jpg") -> str:
    """Content-addressed key of a cover image: ``covers/<sha[:2]>/<sha>.<ext>``."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InvalidKey(f"not a lowercase hex SHA-256 digest: {_show(sha256)}")
    if not isinstance(extension, str) or not _EXTENSION.fullmatch(extension):
        raise InvalidKey(f"not a file extension (lowercase letters and digits): {_show(extension)}")
    return f"covers/{sha256[:2]}/{sha256}.{extension}"


def _validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``InvalidKey``."""
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey("empty key")
    _check_characters(key)
    for segment in key.split("/"):
        _check_segment(key, segment)
    return key


def _validate_prefix(prefix: str) -> None:
    """A list prefix: a key whose last segment may be partial or empty (``covers/``)."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a string, not {type(prefix).__name__}")
    if not prefix:
        return
    _check_characters(prefix)
    for segment in prefix.split("/")[:-1]:
        _check_segment(prefix, segment)


def _check_characters(key: str) -> None:
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"key {_show(key)} is not valid Unicode") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"key {_show(key)} is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey(f"key {_show(key)} is absolute")
    if "\\" in key:
        raise InvalidKey(f"key {_show(key)} contains a backslash")
    if any(unicodedata.category(char) == "Cc" for char in key):
        raise InvalidKey(f"key {_show(key)} contains a control character")


def _check_segment(key: str, segment: str) -> None:
    if segment in ("", ".", ".."):
        raise InvalidKey(f"key {_show(key)} has an empty, '.' or '..' segment")
    if _STAGING_SUFFIX.search(segment):
        raise InvalidKey(f"key {_show(key)} has a segment ending in '#<digits>' (reserved)")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _check_directory(root: Path) -> None:
    if not root.is_dir():
        raise StoreUnavailable(f"store directory {root} does not exist")
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise StoreUnavailable(f"store directory {root} is not readable and writable")


def _join_location(base: str, prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{base.rstrip('/')}/{prefix}" if prefix else base


def _default_location(backend: LocalStore | S3Store, prefix: str) -> str:
    if isinstance(backend, LocalStore):
        return _join_location(f"file://{backend.prefix or '/'}", prefix)
    bucket = backend.config.get("bucket", "?")
    return _join_location(f"s3://{bucket}", prefix)


def _summary(exc: BaseException) -> str:
    """The first line of an obstore message; the rest is a Rust debug dump."""
    return str(exc).split("\n", 1)[0].strip() or type(exc).__name__


def _refusal(exc: BaseException) -> str | None:
    """``(<status> <S3 code>): <what it means>`` if the server refused ``exc``, else None."""
    text = str(exc)
    status = _STATUS.search(text)
    code = _S3_CODE.search(text)
    if code is not None and code.group(1) in _REFUSALS:
        where = f"{status.group(1)} {code.group(1)}" if status else code.group(1)
        return f"({where}): {_REFUSALS[code.group(1)]}"
    if status is not None and status.group(1) in ("401", "403"):
        return f"({status.group(1)}): access denied"  # a HEAD answer has no body to say more
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):  # a local file, say
        return f"(access denied): {_summary(exc)}"
    return None


@contextlib.contextmanager
def _translate(action: str, subject: str, store: str | None = None) -> Iterator[None]:
    """Re-raise obstore and OS errors as the common package's store errors."""
    try:
        yield
    except (StoreError, ConfigError):
        raise
    except (BaseError, OSError, ValueError) as exc:
        where = f"{action} {_show(subject)}" + (f" in {store}" if store else "")
        # Before FileNotFoundError: a missing bucket is a 404 too.
        refusal = _refusal(exc) if isinstance(exc, BaseError | FileNotFoundError) else None
        if refusal is not None:
            raise StoreRefused(f"{where}: the store refuses {refusal}") from exc
        if isinstance(exc, FileNotFoundError):  # obstore raises the builtin for a missing object
            raise ObjectNotFound(f"no object under {_show(subject)}") from exc
        if isinstance(exc, InvalidPathError):
            raise InvalidKey(f"{action} {_show(subject)}: {_summary(exc)}") from exc
        summary = _summary(exc)
        text = str(exc)
        if (
            any(marker in summary.lower() for marker in _UNREACHABLE_MARKERS)
            or "kind: Connect," in text
            or "kind: Timeout," in text
        ):
            raise StoreUnavailable(f"{action} {_show(subject)}: {summary}") from exc
        raise StoreError(f"{action} {_show(subject)}: {summary}") from exc
