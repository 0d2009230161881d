"""Turn fetched bytes into a stored cover and an album row, deduplicated by content hash.

The same bytes seen again (another folder, another source, a second import) add nothing
but a new genre label with its provenance, so cross-genre duplicates stay visible to the
dataset builder instead of becoming two albums. The same source item seen again (a re-run,
or an album listed under two genres) likewise adds only its new labels, without its bytes.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError

from sleeve_common.db import Database
from sleeve_common.images import InvalidImage, open_image, perceptual_hash
from sleeve_common.models import Album, AlbumLabel
from sleeve_common.store import ObjectStore, cover_key
from sleeve_scraper.sources.base import Candidate

__all__ = ["Ingester", "Outcome"]

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


class Outcome(enum.Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


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

    async def recorded(self, candidate: Candidate) -> bool:
        """Whether this source item has an album row already (so its bytes are not needed)."""
        async with self._db.session() as session:
            found = await session.execute(
                select(Album.id).where(
                    Album.source == candidate.source, Album.source_id == candidate.source_id
                )
            )
            return found.first() is not None

    async def ingest(
        self, candidate: Candidate, data: bytes | None, failure: str | None
    ) -> Outcome:
        """Record ``candidate``; ``data`` is None when fetching failed for ``failure``.

        A source item recorded before only gains its new labels; its bytes are not looked at.
        """
        if await self._label_recorded(candidate):
            return Outcome.DUPLICATE
        if data is None:
            return await self._reject(candidate, None, failure or "could not be fetched")
        if len(data) > self._max_bytes:
            return await self._reject(
                candidate, None, f"file too large: {len(data)} bytes (limit {self._max_bytes})"
            )
        sha = hashlib.sha256(data).hexdigest()
        if await self._label_existing(candidate, sha):
            return Outcome.DUPLICATE
        try:
            decoded = await asyncio.to_thread(self._decode, data)
        except InvalidImage as exc:
            return await self._reject(candidate, sha, str(exc))
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
        return await self._insert(album, candidate, Outcome.ADDED)

    def _album(self, candidate: Candidate, **fields: object) -> Album:
        return Album(
            source=candidate.source,
            source_id=candidate.source_id,
            artist=candidate.artist[:512] if candidate.artist else None,
            title=candidate.title[:512] if candidate.title else None,
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

    async def _reject(self, candidate: Candidate, sha: str | None, reason: str) -> Outcome:
        # No lookup of the bytes here: ``ingest`` did it just before, and a concurrent insert
        # of the same bytes is caught by ``_insert``.
        album = self._album(
            candidate, content_sha256=sha, status="rejected", reject_reason=reason[:2000]
        )
        return await self._insert(album, candidate, Outcome.REJECTED)

    async def _insert(self, album: Album, candidate: Candidate, outcome: Outcome) -> Outcome:
        try:
            async with self._db.session() as session:
                album.labels.extend(_labels(candidate))
                session.add(album)
        except IntegrityError:
            # Another worker recorded this item or these bytes since the checks in ``ingest``;
            # the unique constraints, not the checks, are what keep rows single.
            if await self._label_recorded(candidate) or (
                album.content_sha256 and await self._label_existing(candidate, album.content_sha256)
            ):
                return Outcome.DUPLICATE
            raise
        return outcome

    async def _label_recorded(self, candidate: Candidate) -> bool:
        """If this source item has an album, add the candidate's new labels and return True."""
        return await self._add_labels(
            candidate,
            (Album.source == candidate.source) & (Album.source_id == candidate.source_id),
        )

    async def _label_existing(self, candidate: Candidate, sha: str) -> bool:
        """If an album has these bytes, add the candidate's new labels and return True."""
        return await self._add_labels(candidate, Album.content_sha256 == sha)

    async def _add_labels(self, candidate: Candidate, which: ColumnElement[bool]) -> bool:
        async with self._db.session() as session:
            album = (await session.execute(select(Album).where(which))).scalar_one_or_none()
            if album is None:
                return False
            have = {(label.genre, label.provenance) for label in album.labels}
            album.labels.extend(
                label for label in _labels(candidate) if (label.genre, label.provenance) not in have
            )
            return True


def _labels(candidate: Candidate) -> list[AlbumLabel]:
    return [
        AlbumLabel(
            genre=label.genre, raw_genre=label.raw_genre[:256], provenance=candidate.provenance
        )
        for label in candidate.labels
    ]
