"""The model registry: versions, stages and the model to serve."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from sleeve_common.db import Database
from sleeve_common.exceptions import ModelUnusable, NotFound, ObjectNotFound
from sleeve_common.models import ModelVersion, utcnow

if TYPE_CHECKING:
    from sleeve_common.store import ObjectStore

__all__ = [
    "NO_MODEL_HINT",
    "STAGES",
    "get_model_version",
    "list_model_versions",
    "promote",
    "register_model_version",
    "resolve_serving_version",
]

STAGES = ("candidate", "production", "archived")

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
    report_keys: dict[str, str],
) -> ModelVersion:
    """Add a candidate version named ``v<N>``; the first version ever is promoted to production."""
    async with db.session() as session:
        count = (await session.execute(select(func.count(ModelVersion.id)))).scalar_one()
        has_production = (
            await session.execute(
                select(func.count(ModelVersion.id)).where(ModelVersion.stage == "production")
            )
        ).scalar_one()
        now = utcnow()
        version = ModelVersion(
            version=f"v{count + 1}",
            training_run_id=training_run_id,
            stage="candidate" if has_production else "production",
            promoted_at=None if has_production else now,
            labels=labels,
            input_spec=input_spec,
            metrics=metrics,
            onnx_key=onnx_key,
            onnx_sha256=onnx_sha256,
            onnx_bytes=onnx_bytes,
            report_keys=report_keys,
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


async def promote(*, db: Database, store: ObjectStore, version: str) -> ModelVersion:
    """Make ``version`` the production model; the previous one is archived. Its ONNX file is
    checked first (there, and matching the sha256 recorded at registration): a version that
    could not be served raises ``ModelUnusable`` and nothing changes."""
    row = await get_model_version(db=db, version=version)
    try:
        data = await store.get(row.onnx_key)
    except ObjectNotFound:
        raise ModelUnusable(
            f"model {version} cannot be promoted: its ONNX file {row.onnx_key} is missing "
            "from the store"
        ) from None
    if hashlib.sha256(data).hexdigest() != row.onnx_sha256:
        raise ModelUnusable(
            f"model {version} cannot be promoted: its stored ONNX file does not match the "
            "sha256 recorded when it was registered"
        )
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
        return target


async def resolve_serving_version(*, db: Database, version: str | None) -> ModelVersion:
    """The pinned version if given, else the production one, else the newest."""
    if version is not None:
        return await get_model_version(db=db, version=version)
    async with db.session() as session:
        production = (
            await session.execute(
                select(ModelVersion)
                .where(ModelVersion.stage == "production")
                .order_by(ModelVersion.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if production is not None:
            return production
        newest = (
            await session.execute(select(ModelVersion).order_by(ModelVersion.id.desc()).limit(1))
        ).scalar_one_or_none()
    if newest is None:
        raise NotFound(NO_MODEL_HINT)
    return newest
