"""Turn fetched bytes into a stored cover and an album row, deduplicated by content hash.

The same bytes seen again (another folder, another source, a second import) add nothing
but a new genre label with its provenance, so cross-genre duplicates stay visible to the
dataset builder instead of becoming two albums.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sleeve_common.db import Database
from sleeve_common.genres import normalize_genre
from sleeve_common.images import InvalidImage, open_image, perceptual_hash
from sleeve_common.models import Album, AlbumLabel
from sleeve_common.store import ObjectStore, cover_key

__all__ = ["Candidate", "Ingester", "Outcome"]

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


class Outcome(enum.Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Candidate:
    """One cover a source found, before its bytes are checked."""

    source: str
    source_id: str
    raw_genre: str
    provenance: str
    artist: str | None = None
    title: str | None = None
    cover_url: str | None = None


@dataclass(frozen=True)
class _Decoded:
    perceptual_hash: str
    width: int
    height: int
    extension: str


class Ingester:
    """Checks, stores and records covers for one scrape run."""

    def __init__(
        self, *, db: Database, store: ObjectStore, run_id: int, max_bytes: int, max_pixels: int
    ) -> None:
        self._db = db
        self._store = store
        self._run_id = run_id
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels

    async def ingest(
        self, candidate: Candidate, data: bytes | None, failure: str | None
    ) -> Outcome:
        """Record ``candidate``; ``data`` is None when fetching failed for ``failure``."""
        genre = normalize_genre(candidate.raw_genre)
        if data is None:
            return await self._reject(candidate, genre, None, failure or "could not be fetched")
        if len(data) > self._max_bytes:
            return await self._reject(
                candidate,
                genre,
                None,
                f"file too large: {len(data)} bytes (limit {self._max_bytes})",
            )
        sha = hashlib.sha256(data).hexdigest()
        if await self._label_existing(candidate, genre, sha):
            return Outcome.DUPLICATE
        try:
            decoded = await asyncio.to_thread(self._decode, data)
        except InvalidImage as exc:
            return await self._reject(candidate, genre, sha, str(exc))
        key = cover_key(sha, decoded.extension)
        await self._store.put(key, data)
        album = self._album(
            candidate,
            cover_key=key,
            content_sha256=sha,
            perceptual_hash=decoded.perceptual_hash,
            width=decoded.width,
            height=decoded.height,
            status="accepted",
        )
        return await self._insert(album, candidate, genre, Outcome.ADDED)

    def _album(self, candidate: Candidate, **fields: object) -> Album:
        return Album(
            source=candidate.source,
            source_id=candidate.source_id,
            artist=candidate.artist,
            title=candidate.title,
            cover_url=candidate.cover_url,
            scrape_run_id=self._run_id,
            **fields,
        )

    def _decode(self, data: bytes) -> _Decoded:
        image = open_image(data, max_pixels=self._max_pixels)
        return _Decoded(
            perceptual_hash=perceptual_hash(image),
            width=image.width,
            height=image.height,
            extension=_EXTENSIONS.get(image.format or "", "img"),
        )

    async def _reject(
        self, candidate: Candidate, genre: str, sha: str | None, reason: str
    ) -> Outcome:
        # No lookup of the bytes here: ``ingest`` did it just before, and a concurrent insert
        # of the same bytes is caught by ``_insert``.
        album = self._album(
            candidate, content_sha256=sha, status="rejected", reject_reason=reason[:2000]
        )
        return await self._insert(album, candidate, genre, Outcome.REJECTED)

    async def _insert(
        self, album: Album, candidate: Candidate, genre: str, outcome: Outcome
    ) -> Outcome:
        try:
            async with self._db.session() as session:
                existing = await session.execute(
                    select(Album.id).where(
                        Album.source == candidate.source, Album.source_id == candidate.source_id
                    )
                )
                if existing.first() is not None:
                    # Same item seen before (e.g. a failed fetch retried): keep the first record.
                    return Outcome.DUPLICATE
                album.labels.append(_label(candidate, genre))
                session.add(album)
        except IntegrityError:
            # Another worker stored the same bytes a moment ago.
            if album.content_sha256 and await self._label_existing(
                candidate, genre, album.content_sha256
            ):
                return Outcome.DUPLICATE
            raise
        return outcome

    async def _label_existing(self, candidate: Candidate, genre: str, sha: str) -> bool:
        """If an album has these bytes, add this label to it (once) and return True."""
        async with self._db.session() as session:
            album = (
                await session.execute(select(Album).where(Album.content_sha256 == sha))
            ).scalar_one_or_none()
            if album is None:
                return False
            if not any(
                label.genre == genre and label.provenance == candidate.provenance
                for label in album.labels
            ):
                album.labels.append(_label(candidate, genre))
            return True


def _label(candidate: Candidate, genre: str) -> AlbumLabel:
    return AlbumLabel(
        genre=genre, raw_genre=candidate.raw_genre[:256], provenance=candidate.provenance
    )
