"""The first model: on a machine whose registry is empty, ``sleeve run`` trains one by itself.

``queue_bootstrap`` queues one ``bootstrap`` job under the queue's unique key "bootstrap": the
database refuses a second one while it is queued or running, so two starts never make two
bootstraps, and a start after Ctrl-C or a crash continues the one that is there. Its handler
(run by ``sleeve run`` itself) only coordinates: each step is an ordinary job for the ordinary
workers, queued under a key made from the bootstrap's id, so a coordinator that runs again
finds the steps it queued instead of queuing new ones::

    1 collecting covers      a ``scrape`` job (scraper worker) from SLEEVE_BOOTSTRAP_SOURCE
    2 building the dataset   ┐ one ``train`` job (trainer worker) with ``build_dataset``: the
    3 training the model     ┘ split is built if missing, then trained, exported, registered
    4 promoting it           the registered version becomes the production model

The model is registered in one transaction at the end of step 3 (the files first, the row
last), so an interrupted bootstrap never leaves half a model, and a train job that runs again
after registering returns the version it made instead of training another.

``first_model_status`` says where it stands (step, percent, ETA; or why it failed and how to
fix it) for the API's readiness check, its 503 answers and the upload page. The common package
knows the job kinds and payloads only; the scraper and trainer do the work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from sleeve_common.exceptions import BootstrapFailed, Conflict, LeaseLost, SleeveError
from sleeve_common.genres import normalize_genre
from sleeve_common.jobs import JobQueue, JobStatus
from sleeve_common.models import Job, ModelVersion, utcnow
from sleeve_common.payloads import SOURCES, DatasetBuild, ScrapeRequest, Source, TrainRequest
from sleeve_common.registry import NO_MODEL_HINT, promote

if TYPE_CHECKING:
    from sleeve_common.db import Database
    from sleeve_common.runtime import Runtime
    from sleeve_common.settings import Settings
    from sleeve_common.worker import Handler, JobContext

__all__ = [
    "DEFAULT_API_GENRES",
    "KIND",
    "BootstrapPlan",
    "FirstModelStatus",
    "Queued",
    "bootstrap_handler",
    "first_model_status",
    "plan_from_settings",
    "queue_bootstrap",
]

logger = logging.getLogger(__name__)

KIND = "bootstrap"
"""The job kind, and the unique key the one active bootstrap holds."""

DEFAULT_API_GENRES = ("country", "electronic", "hiphop", "jazz", "metal")
"""Genres whose covers look unlike each other, listed by every genre API source."""

# Sources that read a path; any other value of SLEEVE_BOOTSTRAP_SOURCE names an API source.
_PATH_SOURCES = frozenset({"folder", "bandcamp-tsv", "mumu-csv"})
_API_SOURCES = tuple(s for s in SOURCES if s not in _PATH_SOURCES)
_SOURCE_NAMES = {"itunes": "iTunes", "deezer": "Deezer", "musicbrainz": "MusicBrainz"}
_MAX_ATTEMPTS = 5  # crashes only: a stopped `sleeve run` hands the job back without spending one

Step = Literal["scrape", "dataset", "train", "promote"]
_STEPS: tuple[Step, ...] = ("scrape", "dataset", "train", "promote")
_LABELS: dict[Step, str] = {
    "scrape": "collecting covers",
    "dataset": "building the dataset",
    "train": "training the model",
    "promote": "promoting it to production",
}
# Share of the wall time each step takes, measured on 2 CPU cores (docs/performance.md): an
# API source spends most of it downloading at the polite rate, a folder in training.
_WEIGHTS: dict[str, dict[Step, float]] = {
    "api": {"scrape": 0.55, "dataset": 0.02, "train": 0.41, "promote": 0.02},
    "folder": {"scrape": 0.15, "dataset": 0.02, "train": 0.81, "promote": 0.02},
}
_ETA_MIN_FRACTION = 0.03
_ETA_MIN_ELAPSED_S = 5.0


class BootstrapPlan(BaseModel):
    """What the bootstrap collects and how it trains: the job's payload, fixed when queued."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Source
    path: str | None = None
    genres: tuple[str, ...] | None = None
    per_genre: int = Field(ge=3)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)

    @property
    def from_api(self) -> bool:
        return self.source not in _PATH_SOURCES

    def describe(self) -> str:
        """``iTunes (country, jazz; up to 300 covers each)`` / ``/data/covers (…)``."""
        where = _SOURCE_NAMES.get(self.source, self.source) if self.from_api else self.path
        genres = ", ".join(self.genres) + "; " if self.genres else ""
        return f"{where} ({genres}up to {self.per_genre} covers per genre)"

    def scrape_request(self) -> ScrapeRequest:
        return ScrapeRequest(
            source=self.source, path=self.path, genres=self.genres, per_genre=self.per_genre
        )

    def train_request(self, dataset: str) -> TrainRequest:
        # Every genre with enough covers (a short one is left out, not fatal), capped so the
        # first model stays quick; the dedupe and leak rules are the dataset builder's own.
        build = DatasetBuild(min_per_genre=min(10, self.per_genre), max_per_genre=self.per_genre)
        # The head alone, on the served view: a first answer in minutes. `sleeve train` with
        # its defaults (crops, mirrors, fine-tuning) makes the better model afterwards.
        return TrainRequest(
            dataset=dataset,
            epochs=self.epochs,
            fine_tune_epochs=0,
            augment=False,
            batch_size=self.batch_size,
            build_dataset=build,
        )


def plan_from_settings(settings: Settings) -> BootstrapPlan:
    """The plan SLEEVE_BOOTSTRAP_* describe; a path is made absolute against this directory."""
    value = settings.bootstrap_source.strip()
    genres = (
        tuple(dict.fromkeys(normalize_genre(g) for g in settings.bootstrap_genres.split(",")))
        if settings.bootstrap_genres
        else None
    )
    common: dict[str, Any] = {
        "per_genre": settings.bootstrap_per_genre,
        "epochs": settings.bootstrap_epochs,
        "batch_size": settings.train_batch_size,
    }
    if value in _API_SOURCES:
        return BootstrapPlan.model_validate(
            {"source": value, "genres": genres or DEFAULT_API_GENRES, **common}
        )
    path = Path(value).expanduser().absolute()
    return BootstrapPlan(source="folder", path=str(path), genres=genres, **common)


@dataclass(frozen=True)
class Queued:
    """The bootstrap job ``sleeve run`` queued (``created``) or found queued or running."""

    job_id: int
    created: bool
    plan: BootstrapPlan


async def queue_bootstrap(*, db: Database, settings: Settings) -> Queued | None:
    """Queue the bootstrap unless a model is registered (None) or one is already under way."""
    if await _model_count(db) > 0:
        return None
    queue = JobQueue(db, lease_seconds=settings.job_lease_seconds)
    plan = plan_from_settings(settings)
    for _ in range(3):
        try:
            job_id = await queue.enqueue(
                kind=KIND,
                payload=plan.model_dump(mode="json"),
                max_attempts=_MAX_ATTEMPTS,
                unique_key=KIND,
            )
            return Queued(job_id=job_id, created=True, plan=plan)
        except Conflict:
            active = await queue.latest(unique_key=KIND)
            if active is not None and active.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                return Queued(
                    job_id=active.id,
                    created=False,
                    plan=BootstrapPlan.model_validate(active.payload),
                )
            # It finished between the two statements: try again.
    raise SleeveError("could not queue the first-model bootstrap: the queue kept changing")


def bootstrap_handler(
    runtime: Runtime, *, announce: Callable[[str], None] | None = None
) -> Handler:
    """The coordinator; ``announce`` gets one line per step (the console of ``sleeve run``)."""
    say = announce or (lambda line: logger.info("%s", line))

    async def handle(ctx: JobContext) -> dict[str, Any]:
        plan = BootstrapPlan.model_validate(ctx.payload)
        started = await ctx.queue.latest(unique_key=f"{KIND}-{ctx.job.id}:scrape")
        if started is None and await _model_count(runtime.db) > 0:
            # Someone trained a model between `sleeve run` queuing this and starting it.
            say("first model: a model is registered already; nothing to train")
            return {"skipped": "a model was registered meanwhile"}
        run = _Run(ctx, plan, say, poll_s=runtime.settings.worker_poll_seconds)
        max_attempts = runtime.settings.job_max_attempts
        try:
            scrape_id = await _step_job(
                ctx.queue,
                kind="scrape",
                key=f"{KIND}-{ctx.job.id}:scrape",
                payload=plan.scrape_request().model_dump(mode="json"),
                max_attempts=max_attempts,
            )
            await run.follow(scrape_id, "scrape")
            train_id = await _step_job(
                ctx.queue,
                kind="train",
                key=f"{KIND}-{ctx.job.id}:train",
                payload=plan.train_request(f"first-model-{ctx.job.id}").model_dump(mode="json"),
                max_attempts=max_attempts,
            )
            trained = await run.follow(train_id, "dataset")
            version = str(trained.get("model_version") or "")
            if not version:
                raise BootstrapFailed("the training job finished without a model version")
            await run.enter("promote", f"promoting {version}")
            promoted = await promote(db=runtime.db, store=runtime.store, version=version)
        except LeaseLost:
            raise  # another coordinator has it now: nothing failed
        except SleeveError as exc:
            say(f"the first model could not be trained: {exc}")
            say(f"to fix it: {_fix_for(run.step, plan, str(exc))}")
            raise
        accuracy = promoted.metrics.get("accuracy")
        scored = f", test accuracy {accuracy:.2f}" if isinstance(accuracy, float) else ""
        say(
            f"first model {version} is ready after {_duration(run.elapsed_s())}{scored}: "
            "the API serves it within seconds"
        )
        return {"model_version": version, "scrape_job": scrape_id, "train_job": train_id}

    return handle


async def _step_job(
    queue: JobQueue, *, kind: str, key: str, payload: dict[str, Any], max_attempts: int
) -> int:
    """The step's job: the one queued under ``key`` before (any status), else a new one."""
    for _ in range(3):
        existing = await queue.latest(unique_key=key)
        if existing is not None:
            return existing.id
        try:
            return await queue.enqueue(
                kind=kind, payload=payload, max_attempts=max_attempts, unique_key=key
            )
        except Conflict:
            continue
    raise BootstrapFailed(f"could not queue the {kind} step")


class _Run:
    """The coordinator's progress: the overall fraction, stage lines, follow a step's job."""

    def __init__(
        self, ctx: JobContext, plan: BootstrapPlan, say: Callable[[str], None], *, poll_s: float
    ) -> None:
        self._ctx = ctx
        self._say = say
        self._poll_s = poll_s
        self._weights = _WEIGHTS["api" if plan.from_api else "folder"]
        self._plan = plan
        self._started = asyncio.get_running_loop().time()
        self.step: Step = "scrape"
        self._announced: Step | None = None

    def elapsed_s(self) -> float:
        return asyncio.get_running_loop().time() - self._started

    async def enter(self, step: Step, detail: str, fraction: float = 0.0) -> None:
        """Report ``fraction`` of ``step`` done; the first report of a step prints its line."""
        self.step = step
        overall = _overall(self._weights, step, fraction)
        await self._ctx.progress(overall, detail, stage=step)
        if self._announced != step:
            self._announced = step
            number = _STEPS.index(step) + 1
            where = f" from {self._plan.describe()}" if step == "scrape" else ""
            self._say(
                f"first model, step {number}/{len(_STEPS)}: {_LABELS[step]}{where} "
                f"({overall * 100:.0f}% done overall)"
            )

    async def follow(self, job_id: int, first: Step) -> dict[str, Any]:
        """Mirror a step job's progress until it ends; its result, or ``BootstrapFailed``."""
        while True:
            job = await self._ctx.queue.get(job_id)
            step: Step = "train" if first == "dataset" and job.stage == "train" else first
            if job.status == JobStatus.SUCCEEDED:
                return dict(job.result or {})
            if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                raise BootstrapFailed(f"{_LABELS[step]} failed: {job.error or job.status}")
            if job.status == JobStatus.QUEUED:
                await self.enter(step, f"waiting for a {job.kind} worker (job {job.id})")
            else:
                await self.enter(step, job.progress_message or "started", job.progress)
            await asyncio.sleep(self._poll_s)


def _overall(weights: dict[Step, float], step: Step, fraction: float) -> float:
    before = sum(weights[s] for s in _STEPS[: _STEPS.index(step)])
    return min(before + weights[step] * min(max(fraction, 0.0), 1.0), 0.999)


def _fix_for(step: str | None, plan: BootstrapPlan, error: str) -> str:
    """How to get past a failed bootstrap, for the step it failed in."""
    restart = (
        "then start `sleeve run` again (or set SLEEVE_BOOTSTRAP=false and train a model "
        "yourself: README, 'From covers to a prediction')"
    )
    if step == "scrape" and plan.from_api:
        name = _SOURCE_NAMES.get(plan.source, plan.source)
        return (
            f"check that this machine reaches the {name} API (its base URL is "
            f"SLEEVE_{plan.source.upper()}_BASE_URL), or set SLEEVE_BOOTSTRAP_SOURCE to a folder "
            f"of covers, one sub-folder per genre (DIR/<genre>/<file>); {restart}"
        )
    if step == "scrape":
        return (
            "set SLEEVE_BOOTSTRAP_SOURCE to an existing folder of covers with one sub-folder "
            f"per genre (DIR/<genre>/<file>), or to an API source such as itunes; {restart}"
        )
    if step == "dataset":
        return (
            "the covers found were too few or too mixed: raise SLEEVE_BOOTSTRAP_PER_GENRE or "
            f"point SLEEVE_BOOTSTRAP_SOURCE at more covers per genre; {restart}"
        )
    if "weights" in error.lower() or "imagenet" in error.lower():
        return (
            "set SLEEVE_BASE_WEIGHTS to a local MobileNetV2 ImageNet file "
            f"(mobilenet_v2_1.0_224_imagenet_no_top.h5), or connect to the internet; {restart}"
        )
    return f"see the trainer's lines above in the console for the cause; {restart}"


@dataclass(frozen=True)
class FirstModelStatus:
    """Where the first model stands, for people: ``message`` is one line, the rest its parts.

    ``state``: ``none`` (no bootstrap ever), ``queued``, ``running``, ``interrupted`` (running,
    but its ``sleeve run`` is gone), ``failed`` or ``done``.
    """

    state: Literal["none", "queued", "running", "interrupted", "failed", "done"]
    message: str
    job_id: int | None = None
    step: int | None = None
    steps: int = len(_STEPS)
    stage: str | None = None
    percent: int | None = None
    eta_seconds: int | None = None
    detail: str | None = None
    error: str | None = None
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def first_model_status(
    *, db: Database, now: Callable[[], datetime] = utcnow
) -> FirstModelStatus:
    """The latest bootstrap job, read for the API (no model is served yet)."""
    async with db.session() as session:
        job = (
            await session.execute(
                select(Job).where(Job.kind == KIND).order_by(Job.id.desc()).limit(1)
            )
        ).scalar_one_or_none()
    if job is None:
        return FirstModelStatus(state="none", message=NO_MODEL_HINT)
    step: Step = next((s for s in _STEPS if s == job.stage), "scrape")
    parts: dict[str, Any] = {
        "job_id": job.id,
        "step": _STEPS.index(step) + 1,
        "stage": _LABELS[step],
        "percent": int(job.progress * 100),
        "detail": job.progress_message,
    }
    where = f"step {parts['step']} of {len(_STEPS)}, {parts['stage']}, {parts['percent']}% done"
    if job.status == JobStatus.SUCCEEDED:
        return FirstModelStatus(
            state="done",
            message="the first model is trained; the server loads it within seconds",
            **{**parts, "percent": 100},
        )
    if job.status == JobStatus.QUEUED:
        return FirstModelStatus(
            state="queued",
            message=f"training the first model: queued at {where}; `sleeve run` starts it",
            **parts,
        )
    if job.status == JobStatus.RUNNING:
        current = now()
        if job.lease_expires_at is not None and job.lease_expires_at < current:
            return FirstModelStatus(
                state="interrupted",
                message=f"training the first model: interrupted at {where}; it goes on "
                "at the next `sleeve run` (once the interrupted run's job lease has ended)",
                **parts,
            )
        eta = await _eta_s(db, job, step, current)
        left = f", about {_duration(eta)} left" if eta is not None else ", estimating time left"
        return FirstModelStatus(
            state="running",
            message=f"training the first model: {where}{left}",
            eta_seconds=None if eta is None else round(eta),
            **parts,
        )
    error = (job.error or job.status).removeprefix(f"{BootstrapFailed.__name__}: ")
    plan = BootstrapPlan.model_validate(job.payload)
    fix = _fix_for(job.stage, plan, error)
    return FirstModelStatus(
        state="failed",
        message=f"the first model could not be trained: {error}. To fix it: {fix}",
        error=error,
        fix=fix,
        **parts,
    )


async def _eta_s(db: Database, job: Job, step: Step, now: datetime) -> float | None:
    """Time left: the current step's job extrapolated from its own pace, and the steps after
    it from the share of the time they took when measured (``_WEIGHTS``). The step's job, not
    the bootstrap, sets the pace, so a bootstrap continued after a crash is not misjudged."""
    kind: Step = "scrape" if step == "scrape" else "train"
    async with db.session() as session:
        child = (
            await session.execute(
                select(Job)
                .where(Job.unique_key == f"{KIND}-{job.id}:{kind}")
                .order_by(Job.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
    if child is None or child.started_at is None or child.progress < _ETA_MIN_FRACTION:
        return None
    elapsed = (now - child.started_at).total_seconds()
    if elapsed < _ETA_MIN_ELAPSED_S:
        return None
    whole_step = elapsed / child.progress
    weights = _WEIGHTS["api" if BootstrapPlan.model_validate(job.payload).from_api else "folder"]
    later = _STEPS[_STEPS.index(kind) + 1 :]
    share = sum((weights[s] for s in later), 0.0) / weights[kind]
    return whole_step * (1 - child.progress) + whole_step * share


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    return f"{round(seconds / 60)} min"


async def _model_count(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(select(func.count(ModelVersion.id)))).scalar_one())
