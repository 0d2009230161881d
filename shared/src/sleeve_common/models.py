"""Database tables shared by the three services (SQLAlchemy 2, typed ``Mapped`` columns).

The schema changes only through Alembic migrations (``sleeve_common/migrations``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "MAX_ROW_ID",
    "Album",
    "AlbumLabel",
    "Base",
    "Dataset",
    "DatasetMember",
    "Job",
    "ModelVersion",
    "Prediction",
    "ScoringJob",
    "ScrapeRun",
    "ScrapeRunStatus",
    "TrainingRun",
    "TrainingRunStatus",
    "utcnow",
]


# Ids are INTEGER columns: 32-bit on PostgreSQL. Every id an API or CLI accepts is bounded by it.
MAX_ROW_ID = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


# At most one queued or running job holds a given ``unique_key`` (a partial unique index, on
# SQLite and PostgreSQL alike); a finished job lets go of its key.
_ACTIVE_JOB = text("status IN ('queued', 'running')")


class Job(Base):
    """A unit of work in the database queue; see ``sleeve_common.jobs``."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claimable", "kind", "status", "lease_expires_at"),
        Index(
            "uq_jobs_active_unique_key",
            "unique_key",
            unique=True,
            sqlite_where=_ACTIVE_JOB,
            postgresql_where=_ACTIVE_JOB,
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(Text)
    # The step a multi-step job is in ("scrape", "train", …), as its handler last reported it.
    stage: Mapped[str | None] = mapped_column(String(64))
    # See ``_ACTIVE_JOB``: e.g. "bootstrap", so that two first-run bootstraps never coexist.
    unique_key: Mapped[str | None] = mapped_column(String(128))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ScrapeRunStatus(StrEnum):
    """Where a scrape run stands.

    - ``running``: a process is scraping it, and its heartbeat is fresh;
    - ``interrupted``: it stopped before its source was exhausted, without an error of its
      own: stopped on purpose (Ctrl-C, a worker handing its job back), or its process died
      (SIGKILL, a lost machine), which shows as a ``running`` row whose heartbeat went stale;
    - ``failed``: an error stopped it (``error`` says which);
    - ``succeeded``: its source is exhausted.

    Every state but ``succeeded`` can be continued: ``sleeve scrape --resume RUN``, or the
    next attempt of the job that started it.
    """

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


# Beats a running run may miss before it reads as interrupted: one late write (a busy
# database) is no death.
_MISSED_HEARTBEATS = 3


class ScrapeRun(Base):
    """One scrape of one source; its cursor lets ``--resume`` carry on where it stopped.

    The cursor and the item counters (``seen`` … ``seen_by_genre``) are written in the same
    transaction as each item's rows, so they always agree with the albums the run stored.
    The HTTP figures (``requests``, ``errors_by_kind``, ``request_rate``) are sampled with the
    heartbeat. ``attempt`` counts the openings of the run; every write carries it, so a
    process that was replaced (its job re-leased, the run resumed elsewhere) can write no more.
    """

    __tablename__ = "scrape_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ScrapeRunStatus.RUNNING)
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seen: Mapped[int] = mapped_column(default=0)
    # Items whose cover bytes the run got (downloaded, or read from a file).
    fetched: Mapped[int] = mapped_column(default=0, server_default="0")
    added: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    # Rejections by the stable head of their reason ("corrupt image", "cover download failed:
    # HTTP 404"), and items seen by the genre they were listed under.
    rejected_by_reason: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    seen_by_genre: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # Requests sent (retries included), failed tries by kind ("http_404", "unreachable"), and
    # requests per second over the last seconds when last sampled.
    requests: Mapped[int] = mapped_column(default=0, server_default="0")
    errors_by_kind: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    request_rate: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    attempt: Mapped[int] = mapped_column(default=1, server_default="1")
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    def reported_status(
        self, *, heartbeat_s: float, now: datetime | None = None
    ) -> ScrapeRunStatus:
        """The stored status, except that a ``running`` run whose process stopped beating
        (``SLEEVE_SCRAPE_HEARTBEAT_S``) reads ``interrupted``: nothing else marks a run whose
        process was killed."""
        status = ScrapeRunStatus(self.status)
        if status is not ScrapeRunStatus.RUNNING:
            return status
        silent_for = (now or utcnow()) - (self.heartbeat_at or self.started_at)
        if silent_for > timedelta(seconds=heartbeat_s * _MISSED_HEARTBEATS):
            return ScrapeRunStatus.INTERRUPTED
        return status


class Album(Base):
    """One cover image (deduplicated by content hash) and where it was first seen."""

    __tablename__ = "albums"
    __table_args__ = (UniqueConstraint("source", "source_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(512))
    artist: Mapped[str | None] = mapped_column(String(512))
    title: Mapped[str | None] = mapped_column(String(512))
    cover_url: Mapped[str | None] = mapped_column(Text)
    cover_key: Mapped[str | None] = mapped_column(String(256))
    content_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    perceptual_hash: Mapped[str | None] = mapped_column(String(16), index=True)
    width: Mapped[int | None]
    height: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16), default="accepted")
    reject_reason: Mapped[str | None] = mapped_column(Text)
    scrape_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("scrape_runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    labels: Mapped[list[AlbumLabel]] = relationship(
        back_populates="album", cascade="all, delete-orphan", lazy="selectin"
    )


class AlbumLabel(Base):
    """A genre label and its provenance: which source said so, and where."""

    __tablename__ = "album_labels"
    __table_args__ = (UniqueConstraint("album_id", "genre", "provenance"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    album_id: Mapped[int] = mapped_column(ForeignKey("albums.id", ondelete="CASCADE"), index=True)
    genre: Mapped[str] = mapped_column(String(64), index=True)
    raw_genre: Mapped[str] = mapped_column(String(256))
    provenance: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    album: Mapped[Album] = relationship(back_populates="labels")


class Dataset(Base):
    """A named, reproducible train/val/test split over deduplicated covers."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    genres: Mapped[list[Any]] = mapped_column(default=list)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetMember(Base):
    __tablename__ = "dataset_members"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    album_id: Mapped[int] = mapped_column(
        ForeignKey("albums.id", ondelete="CASCADE"), primary_key=True
    )
    split: Mapped[str] = mapped_column(String(8))
    genre: Mapped[str] = mapped_column(String(64))


class TrainingRunStatus(StrEnum):
    """Where a training run stands.

    - ``running``: a process is training it, and its heartbeat is fresh;
    - ``interrupted``: it stopped without an error of its own: its worker was stopped (the job
      went back to the queue) or its process died (SIGKILL, a lost machine), which shows as a
      ``running`` row whose heartbeat went stale until the job's next attempt marks it;
    - ``failed``: an error stopped it (``error`` says which);
    - ``succeeded``: it registered a model version.

    A run is never continued: the job's next attempt starts a new run, which reads the trunk
    activations the interrupted one cached instead of computing them again.
    """

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


class TrainingRun(Base):
    """One attempt at training a model on a dataset; ``progress`` is where it stands
    (``sleeve_common.training_progress.TrainingProgress``), written about once a second."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=TrainingRunStatus.RUNNING)
    history: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    heartbeat_at: Mapped[datetime | None]

    def reported_status(
        self, *, heartbeat_s: float, now: datetime | None = None
    ) -> TrainingRunStatus:
        """The stored status, except that a ``running`` run whose process stopped beating
        (``SLEEVE_TRAIN_HEARTBEAT_S``) reads ``interrupted``: nothing else marks a run whose
        process was killed until its job runs again."""
        status = TrainingRunStatus(self.status)
        if status is not TrainingRunStatus.RUNNING:
            return status
        silent_for = (now or utcnow()) - (self.heartbeat_at or self.started_at)
        if silent_for > timedelta(seconds=heartbeat_s * _MISSED_HEARTBEATS):
            return TrainingRunStatus.INTERRUPTED
        return status


class ModelVersion(Base):
    """A registered ONNX model: labels, input spec and metrics travel with it."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))
    stage: Mapped[str] = mapped_column(String(16), default="candidate")
    labels: Mapped[list[Any]] = mapped_column(default=list)
    input_spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    onnx_key: Mapped[str] = mapped_column(String(256))
    onnx_sha256: Mapped[str] = mapped_column(String(64))
    onnx_bytes: Mapped[int] = mapped_column(BigInteger)
    report_keys: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]
    # The automatic promotion's decision on this version when it was registered, with both
    # models' figures (``sleeve_common.registry.PromotionDecision``); None when none was made.
    promotion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The fp32 file and its fp16 / int8 variants by name, each a ``ModelVariant`` (file,
    # test-split scores, speed); empty when the run exported none (``sleeve_common.model_files``).
    variants: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


class ScoringJob(Base):
    """Bulk scoring of a catalog; its results are the ``predictions`` rows."""

    __tablename__ = "scoring_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    engine: Mapped[str] = mapped_column(String(16), default="local")
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Prediction(Base):
    """One scored catalog item: its genres, or why it has none. Once per item and job."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("scoring_job_id", "item"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scoring_job_id: Mapped[int] = mapped_column(
        ForeignKey("scoring_jobs.id", ondelete="CASCADE"), index=True
    )
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    item: Mapped[str] = mapped_column(String(1024))
    source: Mapped[str] = mapped_column(Text)
    album_id: Mapped[int | None] = mapped_column(ForeignKey("albums.id", ondelete="SET NULL"))
    top_genre: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    stored_genre: Mapped[str | None] = mapped_column(String(64))
    disagrees: Mapped[bool | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
