"""Automatic promotion: a candidate replaces production only if it scores better on
production's own test covers, both ONNX files run again on them; every decision is recorded.

The fast tests compare the tiny colour models of the API tests, whose figures are exact; the
slow one trains a real model, lets the training run decide, and reads the decisions through
the API. All on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from inference.harness import LABELS, build_onnx_model, serve
from support import make_settings

from sleeve_common.models import Dataset, ModelVersion
from sleeve_common.payloads import TrainRequest
from sleeve_common.progress import silent_progress
from sleeve_common.registry import get_model_version
from sleeve_common.runtime import Runtime, open_runtime
from sleeve_trainer.datasets import dataset_members
from sleeve_trainer.promotion import promote_if_better

from .colours import TEST_COVERS, add_colour_covers, colour_dataset, register

RIGHT = build_onnx_model()  # every colour cover right: macro F1 1
ALL_POP = build_onnx_model(bias=np.array([0.0, 0.0, 50.0]))  # "pop" to every cover
# "pop" to all of 2 covers per genre: pop's F1 is 2 * (1/3 * 1) / (1/3 + 1) = 1/2, the others' 0.
ALL_POP_MACRO_F1 = 0.5 / 3
OTHER_LABELS = ["country", "rock", "jazz"]


async def stages(runtime: Runtime, *versions: ModelVersion) -> list[str]:
    return [(await get_model_version(db=runtime.db, version=v.version)).stage for v in versions]


@pytest.fixture
async def colours(runtime: Runtime) -> Dataset:
    """The colour covers stored, and the ``colours`` dataset over them."""
    await add_colour_covers(runtime)
    return await colour_dataset(runtime)


async def test_a_first_version_is_promoted_with_nothing_to_compare(
    runtime: Runtime, colours: Dataset
) -> None:
    first = await register(runtime, RIGHT, labels=LABELS, trained_on=colours)

    decided = await promote_if_better(runtime, first)

    assert decided.stage == "production"
    assert decided.promotion is not None
    assert decided.promotion["decision"] == "promoted"
    assert decided.promotion["reason"] == "no production model to compare with"
    assert decided.promotion["compared_with"] is None


async def test_a_better_candidate_is_promoted_on_productions_test_covers(
    runtime: Runtime, colours: Dataset
) -> None:
    production = await register(runtime, ALL_POP, labels=LABELS, trained_on=colours)
    candidate = await register(runtime, RIGHT, labels=LABELS, trained_on=colours)

    decided = await promote_if_better(runtime, candidate)

    assert await stages(runtime, production, candidate) == ["archived", "production"]
    assert decided.promotion is not None
    assert isinstance(decided.promotion.pop("decided_at"), str)
    assert decided.promotion == {
        "decision": "promoted",
        "reason": decided.promotion["reason"],
        "compared_with": "v1",
        "dataset": "colours",
        "split": "test",
        "covers": TEST_COVERS,
        "skipped_covers": 0,
        "candidate": {"macro_f1": 1.0, "accuracy": 1.0},
        "production": {"macro_f1": pytest.approx(ALL_POP_MACRO_F1), "accuracy": 1 / 3},
    }
    assert decided.promotion["reason"] == (
        "macro F1 1.0000 against production v1's 0.1667 on 6 test covers of 'colours'"
    )


@pytest.mark.parametrize(
    ("production_onnx", "candidate_onnx"), [(RIGHT, ALL_POP), (RIGHT, RIGHT)], ids=["worse", "tie"]
)
async def test_a_candidate_that_does_not_beat_production_is_kept(
    runtime: Runtime, colours: Dataset, production_onnx: bytes, candidate_onnx: bytes
) -> None:
    production = await register(runtime, production_onnx, labels=LABELS, trained_on=colours)
    candidate = await register(runtime, candidate_onnx, labels=LABELS, trained_on=colours)

    decided = await promote_if_better(runtime, candidate)

    assert await stages(runtime, production, candidate) == ["production", "candidate"]
    promotion = decided.promotion
    assert promotion is not None
    assert promotion["decision"] == "kept"
    assert promotion["reason"].endswith("not higher (a tie keeps production)")
    assert promotion["covers"] == TEST_COVERS
    assert promotion["production"] == {"macro_f1": 1.0, "accuracy": 1.0}
    tie = candidate_onnx == production_onnx
    assert promotion["candidate"]["macro_f1"] == pytest.approx(1.0 if tie else ALL_POP_MACRO_F1)


# --- not comparable: production stays, and the record says why --------------------------------

Setup = Callable[[Runtime, Dataset], Awaitable[tuple[ModelVersion, ModelVersion]]]


async def _pair(
    runtime: Runtime,
    production_trained_on: Dataset | None,
    candidate_trained_on: Dataset,
    *,
    production_onnx: bytes = ALL_POP,
    candidate_labels: list[str] = LABELS,
) -> tuple[ModelVersion, ModelVersion]:
    """A worse production and a better candidate, unless told otherwise."""
    production = await register(
        runtime, production_onnx, labels=LABELS, trained_on=production_trained_on
    )
    candidate = await register(
        runtime, RIGHT, labels=candidate_labels, trained_on=candidate_trained_on
    )
    return production, candidate


async def _labels_differ(runtime: Runtime, dataset: Dataset) -> tuple[ModelVersion, ModelVersion]:
    return await _pair(runtime, dataset, dataset, candidate_labels=OTHER_LABELS)


async def _no_production_dataset(
    runtime: Runtime, dataset: Dataset
) -> tuple[ModelVersion, ModelVersion]:
    return await _pair(runtime, None, dataset)


async def _candidate_trained_on_them(
    runtime: Runtime, dataset: Dataset
) -> tuple[ModelVersion, ModelVersion]:
    # The same covers split with another seed: some of production's test covers now train.
    reshuffled = await colour_dataset(runtime, "reshuffled", seed=1)
    return await _pair(runtime, dataset, reshuffled)


async def _test_covers_gone(
    runtime: Runtime, dataset: Dataset
) -> tuple[ModelVersion, ModelVersion]:
    _, members = await dataset_members(db=runtime.db, name=dataset.name)
    for member in members:
        if member.split == "test":
            await runtime.store.delete(member.cover_key)
    return await _pair(runtime, dataset, dataset)


async def _production_file_missing(
    runtime: Runtime, dataset: Dataset
) -> tuple[ModelVersion, ModelVersion]:
    production, candidate = await _pair(runtime, dataset, dataset)
    await runtime.store.delete(production.onnx_key)
    return production, candidate


async def _production_file_altered(
    runtime: Runtime, dataset: Dataset
) -> tuple[ModelVersion, ModelVersion]:
    production, candidate = await _pair(runtime, dataset, dataset)
    await runtime.store.put(production.onnx_key, RIGHT)
    return production, candidate


async def _production_does_not_run(
    runtime: Runtime, dataset: Dataset
) -> tuple[ModelVersion, ModelVersion]:
    return await _pair(runtime, dataset, dataset, production_onnx=b"not an ONNX model")


NOT_COMPARABLE: dict[str, tuple[Setup, str]] = {
    "labels differ": (
        _labels_differ,
        "the labels differ (candidate: country, jazz, rock; production: country, pop, rock)",
    ),
    "production has no dataset": (
        _no_production_dataset,
        "production v1 has no training run or dataset to test on",
    ),
    "candidate trained on them": (
        _candidate_trained_on_them,
        "of production's test covers (its dataset 'reshuffled' puts them in its train or "
        "validation split)",
    ),
    "test covers gone": (_test_covers_gone, "none of production's 6 test covers could be read"),
    "production file missing": (_production_file_missing, "is missing from the store"),
    "production file altered": (_production_file_altered, "does not match the sha256"),
    "production does not run": (_production_does_not_run, "the production model does not run"),
}


@pytest.mark.parametrize("case", list(NOT_COMPARABLE))
async def test_production_is_kept_when_the_two_cannot_be_compared(
    runtime: Runtime, colours: Dataset, case: str
) -> None:
    setup, why = NOT_COMPARABLE[case]
    production, candidate = await setup(runtime, colours)

    decided = await promote_if_better(runtime, candidate)

    assert await stages(runtime, production, candidate) == ["production", "candidate"]
    promotion = decided.promotion
    assert promotion is not None
    assert promotion["decision"] == "kept"
    assert promotion["reason"].startswith("not comparable: ")
    assert why in promotion["reason"]
    assert promotion["compared_with"] == production.version
    assert (promotion["candidate"], promotion["production"]) == (None, None)


# --- a real training run decides, the API shows it ---------------------------------------------


@pytest.mark.slow
async def test_a_trained_model_is_promoted_on_evidence_and_the_api_shows_every_decision(
    tmp_path: Path, database_url: str
) -> None:
    from sleeve_inference.app import create_app
    from sleeve_trainer.training import run_training

    settings = make_settings(tmp_path, database_url, auto_promote=True)
    async with open_runtime(settings) as runtime:
        await add_colour_covers(runtime)
        colours = await colour_dataset(runtime)
        await register(runtime, ALL_POP, labels=LABELS, trained_on=colours)  # v1, production
        options = TrainRequest(dataset="colours", epochs=10, batch_size=16, augment=False)

        trained = await run_training(runtime, options, on_progress=silent_progress)

        assert trained.version == "v2"
        worse = await register(runtime, ALL_POP, labels=LABELS, trained_on=colours)
        await promote_if_better(runtime, worse)  # v3
        other = await register(runtime, RIGHT, labels=OTHER_LABELS, trained_on=colours)
        await promote_if_better(runtime, other)  # v4

    async with serve(create_app(settings)) as api:
        listing = (await api.get("/v1/models")).json()
        detail = {v: (await api.get(f"/v1/models/{v}")).json() for v in ("v1", "v2", "v3", "v4")}
        card = await api.get(detail["v2"]["card_url"])

    assert {m["version"]: m["stage"] for m in listing} == {
        "v1": "archived",
        "v2": "production",
        "v3": "candidate",
        "v4": "candidate",
    }
    assert detail["v1"]["promotion"] is None  # registered by hand, nothing decided
    promoted = detail["v2"]["promotion"]
    assert (promoted["decision"], promoted["compared_with"]) == ("promoted", "v1")
    assert (promoted["dataset"], promoted["covers"]) == ("colours", TEST_COVERS)
    assert promoted["production"]["macro_f1"] == pytest.approx(ALL_POP_MACRO_F1)
    assert promoted["candidate"]["macro_f1"] > ALL_POP_MACRO_F1
    kept = detail["v3"]["promotion"]
    assert (kept["decision"], kept["compared_with"]) == ("kept", "v2")
    # The same covers as v2's decision: v2's figures there are its figures here.
    assert kept["production"] == promoted["candidate"]
    assert kept["candidate"] == promoted["production"]
    not_comparable = detail["v4"]["promotion"]
    assert not_comparable["decision"] == "kept"
    assert not_comparable["reason"].startswith("not comparable: the labels differ")
    # The trained version's card, written by the run beside its ONNX file.
    assert detail["v1"]["card_url"] is None
    assert card.status_code == 200, card.text
    written = card.json()
    assert (written["version"], written["training_run_id"]) == ("v2", trained.run_id)
    assert written["labels"] == ["country", "pop", "rock"]
    assert written["onnx"]["sha256"] == detail["v2"]["onnx_sha256"]
    assert written["onnx"]["key"] == f"models/run-{trained.run_id}/model.onnx"
    assert written["metrics"]["macro_f1"] == detail["v2"]["macro_f1"]
    assert written["dataset"]["name"] == "colours"
    assert written["dataset"]["counts"]["test"] == {"country": 2, "pop": 2, "rock": 2}
    assert [(s["source"], s["covers"]) for s in written["dataset"]["sources"]] == [
        ("deezer", 10),
        ("folder", 20),
    ]
    assert written["training"]["epochs"] == 10
    assert written["packages"]["tensorflow"] and written["packages"]["onnxruntime"]
