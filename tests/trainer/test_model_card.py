"""The model card a training run stores beside its ONNX file, on SQLite and PostgreSQL.

A trained model's card, as the API serves it, is checked in ``test_promotion.py``'s slow test.
"""

from __future__ import annotations

import hashlib
import platform

from sqlalchemy import select
from support import BASE_WEIGHTS

from sleeve_common.model_card import ModelCard
from sleeve_common.model_signature import input_spec
from sleeve_common.models import ScrapeRun
from sleeve_common.payloads import TrainRequest
from sleeve_common.runtime import Runtime
from sleeve_trainer.model_card import store_model_card

from .colours import GENRE_COLOURS, PER_GENRE, add_colour_covers, colour_dataset

METRICS = {
    "accuracy": 0.9,
    "macro_f1": 0.88,
    "baselines": {"linear_probe": {"accuracy": 0.5, "macro_f1": 0.45}},
}
PACKAGES = {
    "python",
    "sleeve",
    "tensorflow",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "onnxconverter_common",
    "numpy",
}


async def test_the_card_records_what_the_model_is_and_where_its_covers_came_from(
    runtime: Runtime,
) -> None:
    await add_colour_covers(runtime)
    dataset = await colour_dataset(runtime)
    async with runtime.db.session() as session:
        rows = await session.execute(select(ScrapeRun.source, ScrapeRun.id))
        runs: dict[str, int] = dict(rows.all())
    options = TrainRequest(dataset="colours", epochs=3, augment=False)
    onnx = b"the exported model"

    keys = await store_model_card(
        runtime,
        version="v3",
        prefix="models/run-7",
        training_run_id=7,
        dataset=dataset,
        options=options,
        metrics=METRICS,
        onnx_key="models/run-7/model.onnx",
        onnx=onnx,
        variants={},
    )

    assert keys == {"model_card": "models/run-7/model_card.json"}
    card = ModelCard.model_validate_json(await runtime.store.get(keys["model_card"]))
    assert (card.version, card.training_run_id) == ("v3", 7)
    assert card.labels == ["country", "pop", "rock"]
    assert card.input_spec == input_spec()
    assert card.metrics == METRICS  # baselines included
    assert card.dataset.name == "colours"
    assert card.dataset.params["seed"] == 0
    assert (card.dataset.params["val_fraction"], card.dataset.params["test_fraction"]) == (0.2, 0.2)
    assert card.dataset.counts == {
        "train": dict.fromkeys(GENRE_COLOURS, 6),
        "val": dict.fromkeys(GENRE_COLOURS, 2),
        "test": dict.fromkeys(GENRE_COLOURS, 2),
    }
    assert card.dataset.dropped["dropped_ambiguous"] == 0
    assert [(s.source, s.scrape_run_id, s.covers) for s in card.dataset.sources] == [
        ("deezer", runs["deezer"], PER_GENRE),
        ("folder", runs["folder"], 2 * PER_GENRE),
    ]
    assert card.training == {**options.model_dump(mode="json"), "base_weights": str(BASE_WEIGHTS)}
    assert card.onnx.key == "models/run-7/model.onnx"
    assert (card.onnx.sha256, card.onnx.size_bytes) == (hashlib.sha256(onnx).hexdigest(), len(onnx))
    assert card.variants == {}  # none asked for; tests/trainer/test_variants.py has some
    assert set(card.packages) == PACKAGES
    assert all(card.packages.values()), card.packages
    assert card.packages["python"] == platform.python_version()
