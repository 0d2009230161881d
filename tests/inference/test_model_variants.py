"""``SLEEVE_MODEL_VARIANT``: the API runs the served version's fp16 or int8 file when its
training run exported one, checked against the sha256 the registry recorded for it; a version
without that variant is served in fp32 with one warning; every answer names the version and
the file. ``GET /v1/models/{version}`` shows the variants. On SQLite and PostgreSQL.

The variants are the trainer's own conversions of the tiny colour model (``harness``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from support import make_settings

from sleeve_common.db import Database
from sleeve_common.model_files import ModelVariant
from sleeve_common.models import ModelVersion
from sleeve_common.registry import register_model_version
from sleeve_common.runtime import open_runtime
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore, open_store
from sleeve_inference.app import create_app
from sleeve_inference.model_holder import ModelHolder, ModelIntegrityError, model_cache_dir
from sleeve_trainer.variants import build_variants

from .harness import (
    API_KEY,
    INPUT_SPEC,
    LABELS,
    LIMITS,
    METRICS,
    build_onnx_model,
    image_bytes,
    serve,
)

RED, BLUE = (230, 30, 30), (30, 30, 230)
COVERS = [image_bytes(colour) for colour in (RED, (30, 230, 30), BLUE)]


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[bytes, ModelVariant]]:
    """The colour model's fp32 file and its fp16 and int8 variants, with their records."""
    return build_variants(
        build_onnx_model(),
        ["fp16", "int8"],
        onnx_key="models/run-1/model.onnx",
        labels=LABELS,
        test_covers=COVERS,
        test_targets=np.arange(len(LABELS)),
        calibration_covers=COVERS,
        measure_s=0.01,
    )


def _settings(tmp_path: Path, database_url: str, variant: str) -> Settings:
    return make_settings(tmp_path, database_url, api_key=API_KEY, model_variant=variant, **LIMITS)


async def _register(
    settings: Settings,
    built: dict[str, tuple[bytes, ModelVariant]],
    *,
    variants: Sequence[str] = ("fp16", "int8"),
    stored: dict[str, bytes] | None = None,
) -> ModelVersion:
    """Store the fp32 file and ``variants`` (``stored`` replaces some files' bytes: an altered
    store) and register them as one version."""
    kept = {name: built[name] for name in ("fp32", *variants)}
    store: ObjectStore = open_store(settings)
    for name, (data, record) in kept.items():
        await store.put(record.key, (stored or {}).get(name, data))
    fp32 = built["fp32"][1]
    db = Database(settings.database_url)
    try:
        return await register_model_version(
            db=db,
            training_run_id=None,
            labels=LABELS,
            input_spec=INPUT_SPEC,
            metrics=METRICS,
            onnx_key=fp32.key,
            onnx_sha256=fp32.sha256,
            onnx_bytes=fp32.size_bytes,
            variants={name: record for name, (_, record) in kept.items()},
        )
    finally:
        await db.aclose()


def _upload(name: str, colour: tuple[int, int, int]) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (name, image_bytes(colour), "image/png"))


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8"])
async def test_the_setting_picks_the_file_the_api_runs(
    tmp_path: Path,
    database_url: str,
    built: dict[str, tuple[bytes, ModelVariant]],
    variant: str,
) -> None:
    settings = _settings(tmp_path, database_url, variant)
    await _register(settings, built)

    async with serve(create_app(settings)) as api:
        response = await api.post(
            "/v1/predict", files=[_upload("red.png", RED), _upload("blue.png", BLUE)]
        )
        detail = (await api.get("/v1/models/v1")).json()

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_version"], body["model_variant"]) == ("v1", variant)
    assert [p["top_genre"] for p in body["predictions"]] == ["country", "pop"]
    # The one file fetched is that variant's, verified by its name: its sha256.
    cached = sorted(p.name for p in model_cache_dir(settings).iterdir())
    assert cached == [f"{built[variant][1].sha256}.onnx"]
    assert detail["variants"] == {
        name: record.model_dump(mode="json") for name, (_, record) in built.items()
    }


async def test_a_version_without_the_variant_is_served_in_fp32_with_one_warning(
    tmp_path: Path,
    database_url: str,
    built: dict[str, tuple[bytes, ModelVariant]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings(tmp_path, database_url, "int8")
    await _register(settings, built, variants=("fp16",))

    with caplog.at_level(logging.WARNING, logger="sleeve_inference.model_holder"):
        async with open_runtime(settings) as runtime:
            holder = ModelHolder(runtime, cache_dir=model_cache_dir(settings))
            first = await holder.refresh()
            again = await holder.refresh()
        async with serve(create_app(settings)) as api:
            response = await api.post("/v1/predict", files=[_upload("red.png", RED)])

    assert first is not None and again is first
    assert (first.version, first.variant) == ("v1", "fp32")
    body = response.json()
    assert (body["model_version"], body["model_variant"]) == ("v1", "fp32")
    warnings = [r.getMessage() for r in caplog.records if "has no int8 variant" in r.getMessage()]
    # One for the holder here, one for the app's own holder: once per holder and version.
    assert len(warnings) == 2, warnings
    assert "serving its fp32 file" in warnings[0]


async def test_a_variant_file_that_does_not_match_its_sha256_is_refused(
    tmp_path: Path, database_url: str, built: dict[str, tuple[bytes, ModelVariant]]
) -> None:
    settings = _settings(tmp_path, database_url, "int8")
    # The fp16 file under the int8 key: a model, but not the one registered.
    await _register(settings, built, stored={"int8": built["fp16"][0]})
    cache = model_cache_dir(settings)

    async with open_runtime(settings) as runtime:
        holder = ModelHolder(runtime, cache_dir=cache)
        with pytest.raises(ModelIntegrityError, match=r"v1: stored ONNX \(int8\) .* sha256"):
            await holder.refresh()
        assert holder.current is None
        assert "sha256" in (holder.last_error or "")
    assert not cache.exists() or not list(cache.iterdir())
