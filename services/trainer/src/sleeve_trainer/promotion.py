"""Automatic promotion (``SLEEVE_AUTO_PROMOTE``): a new version replaces production only on
evidence.

The evidence is production's own test split: the test covers of the dataset production was
trained on, decoded by the common decode path and run through both ONNX files on the CPU. Each
version's stored metrics were measured on its own split, so they are not compared. The
candidate is promoted if its macro F1 on those covers is higher than production's; a tie keeps
production. The decision, both figures and the covers they rest on are stored with the
candidate (``model_versions.promotion``, shown by ``GET /v1/models/{version}``).

Production is kept, and the reason recorded, when the two cannot be compared fairly: their
labels differ; production has no dataset or none of its test covers can be read; the candidate
trained on some of those covers (they are in its train or validation split); either ONNX file
is missing, altered or does not run. A first version has nothing to beat: it is promoted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from sleeve_common.db import Database
from sleeve_common.exceptions import ModelUnusable, ObjectNotFound
from sleeve_common.images import InvalidImage, decode_model_input
from sleeve_common.models import Dataset, DatasetMember, ModelVersion, TrainingRun, utcnow
from sleeve_common.registry import (
    PromotionDecision,
    PromotionFigures,
    production_version,
    promote,
    record_promotion,
    verified_onnx,
)
from sleeve_common.runtime import Runtime
from sleeve_common.store import ObjectStore
from sleeve_trainer.datasets import DatasetMemberRow, dataset_members

__all__ = ["promote_if_better"]

logger = logging.getLogger(__name__)

_FETCH_CONCURRENCY = 16


class _NotComparable(Exception):
    """The two versions cannot be compared fairly; the message says why."""


@dataclass(frozen=True)
class _Scores:
    candidate: PromotionFigures
    production: PromotionFigures
    covers: int
    skipped: int


async def promote_if_better(runtime: Runtime, candidate: ModelVersion) -> ModelVersion:
    """Compare the newly registered ``candidate`` with production, promote it if it scores
    better, and record the decision with it; the candidate's row as it is now."""
    db, store = runtime.db, runtime.store
    production = await production_version(db=db)
    if production is None or production.version == candidate.version:
        decision = PromotionDecision(
            decision="promoted",
            reason="no production model to compare with",
            decided_at=utcnow(),
        )
    else:
        decision = await _compare(db=db, store=store, candidate=candidate, production=production)
    logger.info("model %s %s: %s", candidate.version, decision.decision, decision.reason)
    if decision.decision == "promoted":
        try:
            return await promote(db=db, store=store, version=candidate.version, decision=decision)
        except ModelUnusable as exc:
            decision = decision.model_copy(update={"decision": "kept", "reason": str(exc)})
    return await record_promotion(db=db, version=candidate.version, decision=decision)


async def _compare(
    *, db: Database, store: ObjectStore, candidate: ModelVersion, production: ModelVersion
) -> PromotionDecision:
    dataset: str | None = None
    try:
        if set(candidate.labels) != set(production.labels):
            raise _NotComparable(
                f"the labels differ (candidate: {', '.join(sorted(candidate.labels))}; "
                f"production: {', '.join(sorted(production.labels))})"
            )
        trained_on = await _trained_on(db, production)
        if trained_on is None:
            raise _NotComparable(
                f"production {production.version} has no training run or dataset to test on"
            )
        dataset = trained_on.name
        test = await _test_members(db=db, dataset=trained_on)
        await _check_unseen(db=db, candidate=candidate, test_of=trained_on)
        onnx = {}
        for role, row in (("candidate", candidate), ("production", production)):
            try:
                onnx[role] = await verified_onnx(store=store, row=row)
            except ModelUnusable as exc:
                raise _NotComparable(f"{role} {row.version}: {exc}") from None
        covers = await _fetch_covers(store, test)
        scores = await asyncio.to_thread(
            _score,
            covers,
            candidate=(onnx["candidate"], [str(x) for x in candidate.labels]),
            production=(onnx["production"], [str(x) for x in production.labels]),
            missing=len(test) - len(covers),
        )
    except _NotComparable as exc:
        return PromotionDecision(
            decision="kept",
            reason=f"not comparable: {exc}",
            compared_with=production.version,
            dataset=dataset,
            decided_at=utcnow(),
        )
    better = scores.candidate.macro_f1 > scores.production.macro_f1
    evidence = (
        f"macro F1 {scores.candidate.macro_f1:.4f} against production {production.version}'s "
        f"{scores.production.macro_f1:.4f} on {scores.covers} test covers of {dataset!r}"
    )
    return PromotionDecision(
        decision="promoted" if better else "kept",
        reason=evidence if better else f"{evidence}: not higher (a tie keeps production)",
        compared_with=production.version,
        dataset=dataset,
        covers=scores.covers,
        skipped_covers=scores.skipped,
        candidate=scores.candidate,
        production=scores.production,
        decided_at=utcnow(),
    )


async def _trained_on(db: Database, row: ModelVersion) -> Dataset | None:
    """The dataset ``row`` was trained on, if its training run and dataset are still there."""
    if row.training_run_id is None:
        return None
    async with db.session() as session:
        return (
            await session.execute(
                select(Dataset)
                .join(TrainingRun, TrainingRun.dataset_id == Dataset.id)
                .where(TrainingRun.id == row.training_run_id)
            )
        ).scalar_one_or_none()


async def _test_members(*, db: Database, dataset: Dataset) -> list[DatasetMemberRow]:
    _, members = await dataset_members(db=db, name=dataset.name)
    test = [m for m in members if m.split == "test"]
    if not test:
        raise _NotComparable(f"production's dataset {dataset.name!r} has no test covers left")
    return test


async def _check_unseen(*, db: Database, candidate: ModelVersion, test_of: Dataset) -> None:
    """Refuse a candidate that trained (or validated) on any test cover of ``test_of``."""
    candidate_data = await _trained_on(db, candidate)
    if candidate_data is None:
        raise _NotComparable(f"the covers candidate {candidate.version} trained on are unknown")
    test_albums = select(DatasetMember.album_id).where(
        DatasetMember.dataset_id == test_of.id, DatasetMember.split == "test"
    )
    async with db.session() as session:
        seen = (
            await session.execute(
                select(func.count())
                .select_from(DatasetMember)
                .where(
                    DatasetMember.dataset_id == candidate_data.id,
                    DatasetMember.split != "test",
                    DatasetMember.album_id.in_(test_albums.scalar_subquery()),
                )
            )
        ).scalar_one()
    if seen:
        raise _NotComparable(
            f"candidate {candidate.version} trained on {seen} of production's test covers "
            f"(its dataset {candidate_data.name!r} puts them in its train or validation split)"
        )


async def _fetch_covers(
    store: ObjectStore, members: list[DatasetMemberRow]
) -> list[tuple[DatasetMemberRow, bytes]]:
    """The members' cover bytes, in order; a cover gone from the store is left out."""
    limit = asyncio.Semaphore(_FETCH_CONCURRENCY)

    async def fetch(member: DatasetMemberRow) -> tuple[DatasetMemberRow, bytes] | None:
        async with limit:
            try:
                return member, await store.get(member.cover_key)
            except ObjectNotFound:
                return None

    found = await asyncio.gather(*(fetch(m) for m in members))
    return [pair for pair in found if pair is not None]


def _score(
    covers: list[tuple[DatasetMemberRow, bytes]],
    *,
    candidate: tuple[bytes, list[str]],
    production: tuple[bytes, list[str]],
    missing: int,
) -> _Scores:
    """Both models' figures on the covers that decode, in production's label order
    (blocking: decoding and ONNX Runtime; runs in a thread)."""
    from sleeve_trainer.onnx_session import ORT_ERRORS, open_cpu_session, predict_probabilities
    from sleeve_trainer.report import evaluate

    labels = production[1]
    pixels, truth = [], []
    for member, data in covers:
        try:
            pixels.append(decode_model_input(data))
        except InvalidImage:
            continue
        truth.append(labels.index(member.genre))
    skipped = missing + len(covers) - len(pixels)
    if not pixels:
        raise _NotComparable(f"none of production's {skipped} test covers could be read")
    images = np.stack(pixels)
    figures = {}
    for role, (onnx, order) in (("candidate", candidate), ("production", production)):
        try:
            probabilities = predict_probabilities(open_cpu_session(onnx), images)
        except ORT_ERRORS as exc:
            raise _NotComparable(f"the {role} model does not run: {exc}") from None
        if probabilities.shape != (len(images), len(order)):
            raise _NotComparable(
                f"the {role} model gives {probabilities.shape[1:]} outputs for {len(order)} labels"
            )
        # Columns in production's label order, whatever order the model was trained with.
        probabilities = probabilities[:, [order.index(label) for label in labels]]
        metrics = evaluate(np.array(truth), probabilities, labels)
        figures[role] = PromotionFigures(macro_f1=metrics["macro_f1"], accuracy=metrics["accuracy"])
    return _Scores(
        candidate=figures["candidate"],
        production=figures["production"],
        covers=len(pixels),
        skipped=skipped,
    )
