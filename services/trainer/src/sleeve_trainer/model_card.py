"""Writes a training run's model card (``sleeve_common.model_card.ModelCard``) beside its ONNX
file: labels, input spec, metrics and baselines, the dataset with the sources of its covers,
the training options, the file's sha256, its fp16/int8 variants and the versions of the
packages that made it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from typing import Any

from sqlalchemy import func, select

from sleeve_common.db import Database
from sleeve_common.model_card import CoverSource, DatasetCard, ModelCard
from sleeve_common.model_files import ModelVariant, OnnxFile
from sleeve_common.model_signature import input_spec
from sleeve_common.models import Album, Dataset, DatasetMember, utcnow
from sleeve_common.payloads import TrainRequest
from sleeve_common.runtime import Runtime

__all__ = ["store_model_card"]

# Import names; each is looked up under the distribution that installed it (onnxruntime comes
# as onnxruntime-gpu on Linux x86-64).
_PACKAGES = (
    "tensorflow",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "onnxconverter_common",
    "numpy",
)
_SLEEVE_DISTRIBUTION = "sleeve-trainer"


async def store_model_card(
    runtime: Runtime,
    *,
    version: str,
    prefix: str,
    training_run_id: int,
    dataset: Dataset,
    options: TrainRequest,
    metrics: dict[str, Any],
    onnx_key: str,
    onnx: bytes,
    variants: dict[str, ModelVariant],
) -> dict[str, str]:
    """Store the card of ``version`` at ``{prefix}/model_card.json``; its key by report name."""
    card = ModelCard(
        version=version,
        training_run_id=training_run_id,
        created_at=utcnow(),
        labels=list(dataset.genres),
        input_spec=input_spec(),
        metrics=metrics,
        dataset=DatasetCard(
            name=dataset.name,
            created_at=dataset.created_at,
            params=dataset.params,
            counts=dataset.counts["splits"],
            dropped={k: v for k, v in dataset.counts.items() if k != "splits"},
            sources=await _cover_sources(db=runtime.db, dataset_id=dataset.id),
        ),
        training={
            **options.model_dump(mode="json"),
            "base_weights": runtime.settings.base_weights,
        },
        onnx=OnnxFile(key=onnx_key, sha256=hashlib.sha256(onnx).hexdigest(), size_bytes=len(onnx)),
        variants=variants,
        packages=_package_versions(),
    )
    key = f"{prefix}/model_card.json"
    await runtime.store.put(key, card.model_dump_json(indent=2).encode())
    return {"model_card": key}


async def _cover_sources(*, db: Database, dataset_id: int) -> list[CoverSource]:
    """The dataset's covers counted by the source and scrape run that stored them."""
    async with db.session() as session:
        rows = await session.execute(
            select(Album.source, Album.scrape_run_id, func.count())
            .join(DatasetMember, DatasetMember.album_id == Album.id)
            .where(DatasetMember.dataset_id == dataset_id)
            .group_by(Album.source, Album.scrape_run_id)
        )
        found = [CoverSource(source=s, scrape_run_id=r, covers=n) for s, r, n in rows]
    return sorted(found, key=lambda c: (c.source, c.scrape_run_id or 0))


def _package_versions() -> dict[str, str | None]:
    """Python's, Sleeve's and the ML libraries' versions; None for one not installed."""
    distributions = importlib.metadata.packages_distributions()
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "sleeve": importlib.metadata.version(_SLEEVE_DISTRIBUTION),
    }
    for name in _PACKAGES:
        installed = distributions.get(name)
        versions[name] = importlib.metadata.version(installed[0]) if installed else None
    return versions
