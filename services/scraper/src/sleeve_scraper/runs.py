"""Scrape-run bookkeeping: opening or reopening a run, each item's counters and cursor, the
heartbeat, and the outcome.

Why the counters and the cursor are written with each item, in its own transaction: a run
may be killed at any instant and resumed from its cursor. Saved every N items, they would lag
the rows: the items stored since the last save would be seen again on resume and counted as
duplicates of themselves. Recounting from the rows at resume cannot mend that, because a
duplicate leaves no row of its own (at most a label on an album of another run), nor can it
tell an item's own row from a second listing of the same album. Written in the transaction
that stores the item's rows, they describe exactly the items whose rows exist, whatever the
moment of the kill; a resumed run starts from them and never meets its own items again. The
cost is one UPDATE of the run row per item, inside a transaction the item opens anyway.

A run is opened (started or resumed) by one process at a time: each opening increments its
``attempt``, and every write of this module is conditional on it, so a process that was
replaced (its job's lease ran out and another worker reopened the run) can write nothing
more: its next item fails with ``RunStateError`` and rolls back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from sleeve_common.db import Database
from sleeve_common.models import ScrapeRun, ScrapeRunStatus, utcnow
from sleeve_scraper.exceptions import RunStateError
from sleeve_scraper.ingest import Outcome, Verdict

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from sleeve_scraper.http import HttpStats
    from sleeve_scraper.sources.base import Found

__all__ = ["RunCounters", "RunLedger", "job_run", "open_run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunCounters:
    """What a run's items came to, and the cursor after the last of them."""

    seen: int = 0
    fetched: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    seen_by_genre: Mapping[str, int] = field(default_factory=dict)
    cursor: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, run: ScrapeRun) -> RunCounters:
        """The counters as the run's row holds them (a resumed run starts from these)."""
        return cls(
            seen=run.seen,
            fetched=run.fetched,
            added=run.added,
            duplicates=run.duplicates,
            rejected=run.rejected,
            rejected_by_reason=dict(run.rejected_by_reason),
            seen_by_genre=dict(run.seen_by_genre),
            cursor=dict(run.cursor),
        )

    def after(self, item: Found, verdict: Verdict) -> RunCounters:
        """These counters with ``item`` counted and its cursor taken."""
        outcome = verdict.outcome
        reasons = Counter(self.rejected_by_reason)
        if outcome is Outcome.REJECTED:
            reasons[verdict.reason_key] += 1
        genres = Counter(self.seen_by_genre)
        if item.genre:
            genres[item.genre] += 1
        return replace(
            self,
            seen=self.seen + 1,
            fetched=self.fetched + (item.data is not None),
            added=self.added + (outcome is Outcome.ADDED),
            duplicates=self.duplicates + (outcome is Outcome.DUPLICATE),
            rejected=self.rejected + (outcome is Outcome.REJECTED),
            rejected_by_reason=dict(reasons),
            seen_by_genre=dict(genres),
            cursor=dict(item.cursor),
        )

    def columns(self) -> dict[str, Any]:
        """The run row's columns these counters fill."""
        return {
            "seen": self.seen,
            "fetched": self.fetched,
            "added": self.added,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "seen_by_genre": dict(self.seen_by_genre),
            "cursor": dict(self.cursor),
        }

    def summary(self) -> str:
        return (
            f"{self.seen} seen: {self.added} added, {self.duplicates} duplicates, "
            f"{self.rejected} rejected"
        )


class RunLedger:
    """One opening of a scrape run: books each item (the ingester's ``Ledger``), keeps the
    heartbeat, and ends the run. ``counters`` are the committed ones."""

    def __init__(self, *, db: Database, run: ScrapeRun) -> None:
        self._db = db
        self.run_id = run.id
        self._attempt = run.attempt
        self.counters = RunCounters.of(run)
        # What earlier openings sent and got wrong; this opening's client counts from zero.
        self._requests_before = run.requests
        self._errors_before = Counter(run.errors_by_kind)

    async def book(self, session: AsyncSession, item: Found, verdict: Verdict) -> None:
        """Write the counters and cursor after ``item`` in the transaction of its rows."""
        after = self.counters.after(item, verdict)
        await self._write(session, heartbeat_at=utcnow(), **after.columns())

    def booked(self, item: Found, verdict: Verdict) -> None:
        """``item``'s transaction committed: take the counters it wrote."""
        self.counters = self.counters.after(item, verdict)

    async def keep_beating(self, stats: Callable[[], HttpStats], every_s: float) -> None:
        """Touch the heartbeat with the HTTP figures every ``every_s`` until cancelled.

        It beats between items too (a long Retry-After, a paused host, a slow listing), so
        a quiet run is not taken for a dead one. A beat that fails is logged and the next one
        tried; once the run was taken over there is nothing left to beat for.
        """
        while True:
            await asyncio.sleep(every_s)
            try:
                async with self._db.session() as session:
                    await self._write(session, heartbeat_at=utcnow(), **self._http(stats()))
            except RunStateError as exc:
                logger.warning("%s", exc)
                return
            except Exception:
                logger.exception("scrape run %s: could not write its heartbeat", self.run_id)

    async def finish(self, *, status: ScrapeRunStatus, error: str | None, stats: HttpStats) -> None:
        """Record the outcome; a run taken over by another process is left to that one."""
        now = utcnow()
        try:
            async with self._db.session() as session:
                await self._write(
                    session,
                    status=status,
                    error=error,
                    finished_at=now,
                    heartbeat_at=now,
                    **self._http(stats),
                )
        except RunStateError as exc:
            logger.warning("%s; its outcome here (%s) is not recorded", exc, status)

    def _http(self, stats: HttpStats) -> dict[str, Any]:
        return {
            "requests": self._requests_before + stats.requests,
            "errors_by_kind": dict(self._errors_before + Counter(stats.errors)),
            "request_rate": stats.rate,
        }

    async def _write(self, session: AsyncSession, **values: Any) -> None:
        result = await session.execute(
            update(ScrapeRun)
            .where(ScrapeRun.id == self.run_id, ScrapeRun.attempt == self._attempt)
            .values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise RunStateError(
                f"scrape run {self.run_id} was reopened by another process (this one's "
                f"attempt {self._attempt} is no longer its latest), or deleted"
            )


async def open_run(
    *,
    db: Database,
    source: str,
    params: dict[str, Any],
    resume: int | None,
    job_id: int | None,
    heartbeat_s: float,
) -> RunLedger:
    """Start a new run, or reopen run ``resume`` of the same source where it stopped.

    A run still beating is refused, unless it belongs to job ``job_id``: then the job's lease
    has run out, so its former worker is gone, and the job's next attempt takes it over.
    """
    async with db.session() as session:
        if resume is None:
            run = ScrapeRun(
                source=source,
                params=params,
                status=ScrapeRunStatus.RUNNING,
                job_id=job_id,
                heartbeat_at=utcnow(),
            )
            session.add(run)
            await session.flush()
            return RunLedger(db=db, run=run)
        found = await session.get(ScrapeRun, resume)
        if found is None:
            raise RunStateError(f"scrape run {resume} does not exist")
        if found.source != source:
            raise RunStateError(
                f"scrape run {resume} scraped {found.source!r}, not {source!r}; resume it with "
                f"--source {found.source}"
            )
        status = found.reported_status(heartbeat_s=heartbeat_s)
        if status is ScrapeRunStatus.SUCCEEDED:
            raise RunStateError(f"scrape run {resume} already finished; start a new one")
        if status is ScrapeRunStatus.RUNNING and (job_id is None or found.job_id != job_id):
            raise RunStateError(
                f"scrape run {resume} is still running (another process is scraping it); "
                "resume it once it has stopped"
            )
        found.status = ScrapeRunStatus.RUNNING
        found.error = None
        found.finished_at = None
        found.heartbeat_at = utcnow()
        # Incremented by the database, so two processes reopening at once get two attempts.
        found.attempt = ScrapeRun.attempt + 1
        if job_id is not None:
            found.job_id = job_id
        await session.flush()
        await session.refresh(found)
        return RunLedger(db=db, run=found)


async def job_run(*, db: Database, job_id: int) -> ScrapeRun | None:
    """The run job ``job_id`` opened on an earlier attempt, if any."""
    async with db.session() as session:
        return (
            await session.execute(
                select(ScrapeRun)
                .where(ScrapeRun.job_id == job_id)
                .order_by(ScrapeRun.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
