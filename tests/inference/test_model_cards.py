"""``GET /v1/models/{version}/card``: the model card stored beside a version's ONNX file, and the
link to it from the registry's answers. On SQLite and PostgreSQL.

The card a real training run writes is served in ``tests/trainer/test_promotion.py``.
"""

from __future__ import annotations

import httpx
from sqlalchemy import update

from sleeve_common.db import Database
from sleeve_common.model_card import CoverSource, DatasetCard, ModelCard
from sleeve_common.model_files import OnnxFile
from sleeve_common.models import ModelVersion, utcnow
from sleeve_common.store import ObjectStore

from .harness import INPUT_SPEC, LABELS, METRICS, Registered


def _card(registered: Registered) -> ModelCard:
    v = registered.version
    return ModelCard(
        version=v.version,
        training_run_id=1,
        created_at=utcnow(),
        labels=LABELS,
        input_spec=INPUT_SPEC,
        metrics=METRICS,
        dataset=DatasetCard(
            name="colours",
            created_at=utcnow(),
            params={"seed": 0, "val_fraction": 0.1, "test_fraction": 0.1},
            counts={"test": dict.fromkeys(LABELS, 2)},
            dropped={"dropped_ambiguous": 0},
            sources=[CoverSource(source="folder", scrape_run_id=1, covers=30)],
        ),
        training={"dataset": "colours", "epochs": 10, "base_weights": "imagenet"},
        onnx=OnnxFile(key=v.onnx_key, sha256=v.onnx_sha256, size_bytes=v.onnx_bytes),
        packages={"python": "3.11.9", "onnxruntime": "1.20.0"},
    )


async def _store_card(db: Database, store: ObjectStore, registered: Registered) -> ModelCard:
    """Store a card for the registered version and name it in its report keys."""
    card = _card(registered)
    key = f"{registered.version.onnx_key.rsplit('/', 1)[0]}/model_card.json"
    await store.put(key, card.model_dump_json().encode())
    async with db.session() as session:
        await session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == registered.version.id)
            .values(report_keys={**registered.version.report_keys, "model_card": key})
        )
    return card


async def test_a_stored_card_is_served_and_linked(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore], registered: Registered
) -> None:
    card = await _store_card(*registry, registered)

    [summary] = (await api.get("/v1/models")).json()
    detail = (await api.get("/v1/models/v1")).json()
    served = await api.get(summary["card_url"])

    assert summary["card_url"] == detail["card_url"] == "http://test/v1/models/v1/card"
    assert served.status_code == 200, served.text
    assert ModelCard.model_validate(served.json()) == card


async def test_a_version_without_a_card_has_no_link_and_its_card_is_404(
    api: httpx.AsyncClient,
) -> None:
    detail = (await api.get("/v1/models/v1")).json()
    missing = await api.get("/v1/models/v1/card")
    unknown = await api.get("/v1/models/v9/card")

    assert (detail["card_url"], detail["promotion"]) == (None, None)
    assert missing.status_code == 404
    assert missing.json()["error"] == {"code": "not_found", "message": "model v1 has no model card"}
    assert unknown.status_code == 404
    assert "v9" in unknown.json()["error"]["message"]


async def test_a_card_gone_from_the_store_is_404(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore], registered: Registered
) -> None:
    db, store = registry
    await _store_card(db, store, registered)
    await store.delete(f"{registered.version.onnx_key.rsplit('/', 1)[0]}/model_card.json")

    gone = await api.get("/v1/models/v1/card")

    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == "model v1's model card is missing from the store"


async def test_the_spec_declares_the_card_and_the_promotion(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()

    card = spec["paths"]["/v1/models/{version}/card"]["get"]["responses"]
    assert card["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ModelCard"
    }
    assert card["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    detail = spec["components"]["schemas"]["ModelDetail"]["properties"]
    assert {"promotion", "card_url"} <= set(detail)
    assert "PromotionDecision" in spec["components"]["schemas"]
