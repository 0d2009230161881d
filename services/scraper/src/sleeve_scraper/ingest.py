"""Turn fetched bytes into a stored cover and an album row, deduplicated by content hash.

The same bytes seen again (another folder, another source, a second import) add nothing
but a new genre label with its provenance, so cross-genre duplicates stay visible to the
dataset builder instead of becoming two albums. The same source item seen again (a re-run,
or an album listed under two genres) likewise adds only its new labels, without its bytes.

Each item's verdict is booked on its run (``Ledger``) in the transaction that writes its rows,
so the run's counters and cursor never disagree with what is stored, whenever the process dies.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError

from sleeve_common.db import Database
from sleeve_common.images import InvalidImage, open_image, perceptual_hash
from sleeve_common.models import Album, AlbumLabel
from sleeve_common.store import ObjectStore, cover_key
from sleeve_scraper.sources.base import Candidate, Found

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["Ingester", "Ledger", "Outcome", "Verdict"]

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


class Outcome(enum.Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


# An HTTP status names the kind of a failure ("cover download failed: HTTP 404"); any other
# detail after the first ": " varies from cover to cover (sizes, ids, library messages).
_STATUS_DETAIL = re.compile(r"HTTP \d{3}\b")


@dataclass(frozen=True)
class Verdict:
    """What became of one item; a rejection carries the reason stored with it."""

    outcome: Outcome
    reason: str | None = None

    @property
    def reason_key(self) -> str:
        """The stable head of the reason, to count rejections by: ``"corrupt image"`` for
        ``"corrupt image: image file is truncated (3 bytes not processed)"``; an HTTP status
        stays (``"cover download failed: HTTP 404"``)."""
        head, _, detail = (self.reason or "").partition(": ")
        status = _STATUS_DETAIL.match(detail)
        return f"{head}: {status.group()}" if status else head


_DUPLICATE = Verdict(Outcome.DUPLICATE)


class Ledger(Protocol):
    """Where the run books each item (``sleeve_scraper.runs.RunLedger``)."""

    async def book(self, session: AsyncSession, item: Found, verdict: Verdict) -> None:
        """Write the run's counters and cursor after ``item`` in the transaction of its rows."""

    def booked(self, item: Found, verdict: Verdict) -> None:
        """``item``'s transaction committed."""


@dataclass(frozen=True)
class _Decoded:
    perceptual_hash: str
    width: int
    height: int
    extension: str


class Ingester:
    """Checks, stores and records covers for one scrape run."""

    def __init__(
        self,
        *,
        db: Database,
        store: ObjectStore,
        run_id: int,
        ledger: Ledger,
        max_bytes: int,
        max_pixels: int,
    ) -> None:
        self._db = db
        self._store = store
        self._run_id = run_id
        self._ledger = ledger
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

    async def ingest(self, item: Found) -> Verdict:
        """Record ``item`` (its bytes, or why there are none) and book it on the run.

        A source item recorded before only gains its new labels; its bytes are not looked at.
        """
        verdict = await self._record(item)
        self._ledger.booked(item, verdict)
        return verdict

    async def _record(self, item: Found) -> Verdict:
        data = item.data
        if await self._label_recorded(item):
            return _DUPLICATE
        if data is None:
            return await self._reject(item, None, item.failure or "could not be fetched")
        if len(data) > self._max_bytes:
            return await self._reject(
                item, None, f"file too large: {len(data)} bytes (limit {self._max_bytes})"
            )
        sha = hashlib.sha256(data).hexdigest()
        if await self._label_existing(item, sha):
            return _DUPLICATE
        try:
            decoded = await asyncio.to_thread(self._decode, data)
        except InvalidImage as exc:
            return await self._reject(item, sha, str(exc))
        key = cover_key(sha, decoded.extension)
        await self._store.put(key, data)
        album = self._album(
            item.candidate,
            cover_key=key,
            content_sha256=sha,
            perceptual_hash=decoded.perceptual_hash,
            width=decoded.width,
            height=decoded.height,
            status="accepted",
        )
        return await self._insert(album, item, Verdict(Outcome.ADDED))

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

    async def _reject(self, item: Found, sha: str | None, reason: str) -> Verdict:
        # No lookup of the bytes here: ``_record`` did it just before, and a concurrent insert
        # of the same bytes is caught by ``_insert``.
        reason = reason[:2000]
        album = self._album(
            item.candidate, content_sha256=sha, status="rejected", reject_reason=reason
        )
        return await self._insert(album, item, Verdict(Outcome.REJECTED, reason))

    async def _insert(self, album: Album, item: Found, verdict: Verdict) -> Verdict:
        try:
            async with self._db.session() as session:
                album.labels.extend(_labels(item.candidate))
                session.add(album)
                await self._ledger.book(session, item, verdict)
        except IntegrityError:
            # Another worker recorded this item or these bytes since the checks in ``_record``;
            # the unique constraints, not the checks, are what keep rows single.
            if await self._label_recorded(item) or (
                album.content_sha256 and await self._label_existing(item, album.content_sha256)
            ):
                return _DUPLICATE
            raise
        return verdict

    async def _label_recorded(self, item: Found) -> bool:
        """If this source item has an album, add the item's new labels and return True."""
        candidate = item.candidate
        return await self._add_labels(
            item, (Album.source == candidate.source) & (Album.source_id == candidate.source_id)
        )

    async def _label_existing(self, item: Found, sha: str) -> bool:
        """If an album has these bytes, add the item's new labels and return True."""
        return await self._add_labels(item, Album.content_sha256 == sha)

    async def _add_labels(self, item: Found, which: ColumnElement[bool]) -> bool:
        async with self._db.session() as session:
            album = (await session.execute(select(Album).where(which))).scalar_one_or_none()
            if album is None:
                return False
            have = {(label.genre, label.provenance) for label in album.labels}
            album.labels.extend(
                label
                for label in _labels(item.candidate)
                if (label.genre, label.provenance) not in have
            )
            await self._ledger.book(session, item, _DUPLICATE)
            return True


def _labels(candidate: Candidate) -> list[AlbumLabel]:
    return [
        AlbumLabel(
            genre=label.genre, raw_genre=label.raw_genre[:256], provenance=candidate.provenance
        )
        for label in candidate.labels
    ]
