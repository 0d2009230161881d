"""Registering a version whose report is stored under the name the registration gives it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sleeve_common.db import Database
from sleeve_common.exceptions import StoreUnavailable
from sleeve_common.registry import list_model_versions, register_model_version


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.aclose()


async def _register(db: Database, **report: Any) -> str:
    version = await register_model_version(
        db=db,
        training_run_id=None,
        labels=["jazz", "metal"],
        input_spec={},
        metrics={"accuracy": 0.5},
        onnx_key="models/run-1/model.onnx",
        onnx_sha256="0" * 64,
        onnx_bytes=1,
        **report,
    )
    return version.version


async def test_the_report_is_stored_under_the_name_the_version_gets(db: Database) -> None:
    names: list[str] = []

    async def store_report(version: str) -> dict[str, str]:
        names.append(version)
        return {"cover_grid": f"models/{version}/cover_grid.png"}

    await _register(db, report_keys={"report": "r.json"}, store_report=store_report)
    await _register(db, store_report=store_report)

    assert names == ["v1", "v2"]
    [second, first] = await list_model_versions(db=db)
    assert first.report_keys == {"report": "r.json", "cover_grid": "models/v1/cover_grid.png"}
    assert second.report_keys == {"cover_grid": "models/v2/cover_grid.png"}


async def test_a_report_that_cannot_be_stored_registers_no_version(db: Database) -> None:
    async def store_report(version: str) -> dict[str, str]:
        raise StoreUnavailable(f"put 'models/{version}/cover_grid.png': the store is down")

    with pytest.raises(StoreUnavailable, match="models/v1/"):
        await _register(db, store_report=store_report)

    assert await list_model_versions(db=db) == []
    assert await _register(db) == "v1"  # the name was never taken
