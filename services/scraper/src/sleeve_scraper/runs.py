"""Scrape-run bookkeeping: counters, the resume cursor, and the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sleeve_common.db import Database
from sleeve_common.models import ScrapeRun, utcnow
from sleeve_scraper.exceptions import RunStateError
from sleeve_scraper.ingest import Outcome

__all__ = ["RunCounters", "finish_run", "open_run", "save_progress"]


@dataclass
class RunCounters:
    seen: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    cursor: dict[str, Any] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> None:
        self.seen += 1
        if outcome is Outcome.ADDED:
            self.added += 1
        elif outcome is Outcome.DUPLICATE:
            self.duplicates += 1
        else:
            self.rejected += 1

    def summary(self) -> str:
        return (
            f"{self.seen} seen: {self.added} added, {self.duplicates} duplicates, "
            f"{self.rejected} rejected"
        )


async def open_run(
    *,
    db: Database,
    source: str,
    params: dict[str, Any],
    resume: int | None,
    job_id: int | None,
) -> tuple[int, RunCounters]:
    """Start a new run, or reopen run ``resume`` of the same source with its counters and cursor."""
    async with db.session() as session:
        if resume is None:
            run = ScrapeRun(source=source, params=params, status="running", job_id=job_id)
            session.add(run)
            await session.flush()
            return run.id, RunCounters()
        found = await session.get(ScrapeRun, resume)
        if found is None:
            raise RunStateError(f"scrape run {resume} does not exist")
        if found.source != source:
            raise RunStateError(
                f"scrape run {resume} scraped {found.source!r}, not {source!r}; resume it with "
                f"--source {found.source}"
            )
        if found.status == "succeeded":
            raise RunStateError(f"scrape run {resume} already finished; start a new one")
        found.status = "running"
        found.error = None
        found.finished_at = None
        if job_id is not None:
            found.job_id = job_id
        counters = RunCounters(
            seen=found.seen,
            added=found.added,
            duplicates=found.duplicates,
            rejected=found.rejected,
            cursor=dict(found.cursor),
        )
        return found.id, counters


async def save_progress(*, db: Database, run_id: int, counters: RunCounters) -> None:
    async with db.session() as session:
        run = await session.get(ScrapeRun, run_id)
        if run is None:
            raise RunStateError(f"scrape run {run_id} disappeared")
        run.seen, run.added = counters.seen, counters.added
        run.duplicates, run.rejected = counters.duplicates, counters.rejected
        run.cursor = dict(counters.cursor)


async def finish_run(
    *, db: Database, run_id: int, counters: RunCounters, error: str | None
) -> None:
    await save_progress(db=db, run_id=run_id, counters=counters)
    async with db.session() as session:
        run = await session.get(ScrapeRun, run_id)
        if run is None:
            raise RunStateError(f"scrape run {run_id} disappeared")
        run.status = "failed" if error else "succeeded"
        run.error = error
        run.finished_at = utcnow()
