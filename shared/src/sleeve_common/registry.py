"""The model registry: versions, stages and the model to serve."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, update

from sleeve_common.db import Database
from sleeve_common.exceptions import ModelUnusable, NotFound, ObjectNotFound
from sleeve_common.model_files import ModelVariant
from sleeve_common.models import ModelVersion, utcnow

if TYPE_CHECKING:
    from sleeve_common.store import ObjectStore

__all__ = [
    "NO_MODEL_HINT",
    "REPORT_IMAGES",
    "STAGES",
    "PromotionDecision",
    "PromotionFigures",
    "StoreReport",
    "get_model_version",
    "list_model_versions",
    "production_version",
    "promote",
    "record_promotion",
    "register_model_version",
    "resolve_serving_version",
    "verified_onnx",
]

STAGES = ("candidate", "production", "archived")

# The PNG figures of a version's evaluation report, by their name in ``report_keys``: each
# carries the version in its title, so it is drawn once the version has its name.
REPORT_IMAGES = ("confusion_matrix", "training_curves", "reliability_diagram", "cover_grid")

StoreReport = Callable[[str], Awaitable[dict[str, str]]]
"""Given a version's name, store the report objects that carry it; their keys by name."""


class PromotionFigures(BaseModel):
    """One model's scores on the covers a promotion decision compared."""

    model_config = ConfigDict(frozen=True)

    macro_f1: float
    accuracy: float


class PromotionDecision(BaseModel):
    """What the automatic promotion (``SLEEVE_AUTO_PROMOTE``) decided for a new version, and
    on what evidence: both models scored on the test covers of production's dataset."""

    model_config = ConfigDict(frozen=True)

    decision: Literal["promoted", "kept"]
    reason: str
    compared_with: str | None = None
    dataset: str | None = None
    split: str = "test"
    covers: int = 0
    skipped_covers: int = 0
    candidate: PromotionFigures | None = None
    production: PromotionFigures | None = None
    decided_at: datetime


NO_MODEL_HINT = (
    "no model is registered yet: import covers (`sleeve scrape --source folder --path DIR`, "
    "one sub-folder per genre), build a dataset (`sleeve dataset build --name NAME`), then "
    "train (`sleeve train --dataset NAME`); `sleeve run` does all three by itself on a first "
    "start (SLEEVE_BOOTSTRAP)"
)


async def register_model_version(
    *,
    db: Database,
    training_run_id: int | None,
    labels: list[str],
    input_spec: dict[str, Any],
    metrics: dict[str, Any],
    onnx_key: str,
    onnx_sha256: str,
    onnx_bytes: int,
    report_keys: dict[str, str] | None = None,
    store_report: StoreReport | None = None,
    variants: dict[str, ModelVariant] | None = None,
) -> ModelVersion:
    """Add a candidate version named ``v<N>``; the first version ever is promoted to production.

    ``variants`` are the ONNX files the run exported beside ``onnx_key`` (already stored),
    by name (``sleeve_common.model_files``).

    ``store_report`` is awaited with that name inside the registration's transaction, before
    the row is written; the keys it returns join ``report_keys``. Should it fail (or the
    process die meanwhile), no version is registered, so no row names a missing object.
    """
    async with db.session() as session:
        count = (await session.execute(select(func.count(ModelVersion.id)))).scalar_one()
        name = f"v{count + 1}"
        keys = dict(report_keys or {})
        if store_report is not None:
            keys.update(await store_report(name))
        has_production = (
            await session.execute(
                select(func.count(ModelVersion.id)).where(ModelVersion.stage == "production")
            )
        ).scalar_one()
        now = utcnow()
        version = ModelVersion(
            version=name,
            training_run_id=training_run_id,
            stage="candidate" if has_production else "production",
            promoted_at=None if has_production else now,
            labels=labels,
            input_spec=input_spec,
            metrics=metrics,
            onnx_key=onnx_key,
            onnx_sha256=onnx_sha256,
            onnx_bytes=onnx_bytes,
            report_keys=keys,
            variants={
                name: variant.model_dump(mode="json") for name, variant in (variants or {}).items()
            },
            created_at=now,
        )
        session.add(version)
        await session.flush()
        return version


async def list_model_versions(*, db: Database) -> list[ModelVersion]:
    async with db.session() as session:
        rows = await session.execute(select(ModelVersion).order_by(ModelVersion.id.desc()))
        return list(rows.scalars())


async def get_model_version(*, db: Database, version: str) -> ModelVersion:
    async with db.session() as session:
        row = await session.execute(select(ModelVersion).where(ModelVersion.version == version))
        found = row.scalar_one_or_none()
        if found is None:
            raise NotFound(f"model version {version!r} does not exist")
        return found


async def verified_onnx(*, store: ObjectStore, row: ModelVersion) -> bytes:
    """The version's ONNX file, or ``ModelUnusable`` if it is missing from the store or does
    not match the sha256 recorded when it was registered."""
    try:
        data = await store.get(row.onnx_key)
    except ObjectNotFound:
        raise ModelUnusable(f"its ONNX file {row.onnx_key} is missing from the store") from None
    if hashlib.sha256(data).hexdigest() != row.onnx_sha256:
        raise ModelUnusable(
            "its stored ONNX file does not match the sha256 recorded when it was registered"
        )
    return data


async def promote(
    *,
    db: Database,
    store: ObjectStore,
    version: str,
    decision: PromotionDecision | None = None,
) -> ModelVersion:
    """Make ``version`` the production model; the previous one is archived. Its ONNX file is
    checked first (``verified_onnx``): a version that could not be served raises
    ``ModelUnusable`` and nothing changes. The automatic promotion's ``decision`` is recorded
    in the same transaction."""
    row = await get_model_version(db=db, version=version)
    try:
        await verified_onnx(store=store, row=row)
    except ModelUnusable as exc:
        raise ModelUnusable(f"model {version} cannot be promoted: {exc}") from None
    async with db.session() as session:
        target = (
            await session.execute(select(ModelVersion).where(ModelVersion.version == version))
        ).scalar_one_or_none()
        if target is None:
            raise NotFound(f"model version {version!r} does not exist")
        await session.execute(
            update(ModelVersion)
            .where(ModelVersion.stage == "production", ModelVersion.id != target.id)
            .values(stage="archived")
        )
        target.stage = "production"
        target.promoted_at = utcnow()
        if decision is not None:
            target.promotion = decision.model_dump(mode="json")
        return target


async def record_promotion(
    *, db: Database, version: str, decision: PromotionDecision
) -> ModelVersion:
    """Store the automatic promotion's ``decision`` with ``version``, its stage unchanged."""
    async with db.session() as session:
        target = (
            await session.execute(select(ModelVersion).where(ModelVersion.version == version))
        ).scalar_one_or_none()
        if target is None:
            raise NotFound(f"model version {version!r} does not exist")
        target.promotion = decision.model_dump(mode="json")
        return target


async def production_version(*, db: Database) -> ModelVersion | None:
    """The production version, if there is one."""
    async with db.session() as session:
        return (
            await session.execute(
                select(ModelVersion)
                .where(ModelVersion.stage == "production")
                .order_by(ModelVersion.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()


async def resolve_serving_version(*, db: Database, version: str | None) -> ModelVersion:
    """The pinned version if given, else the production one, else the newest."""
    if version is not None:
        return await get_model_version(db=db, version=version)
    production = await production_version(db=db)
    if production is not None:
        return production
    async with db.session() as session:
        newest = (
            await session.execute(select(ModelVersion).order_by(ModelVersion.id.desc()).limit(1))
        ).scalar_one_or_none()
    if newest is None:
        raise NotFound(NO_MODEL_HINT)
    return newest
