"""Fixtures of the API tests: settings, a registry holding the tiny model, a live client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from support import make_settings

from sleeve_common.db import Database
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore, open_store
from sleeve_inference.app import create_app

from .harness import API_KEY, LIMITS, Registered, register_model, serve


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The API's settings: this test's database, a local store, an API key, small limits."""
    return make_settings(tmp_path, database_url, api_key=API_KEY, **LIMITS)


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[tuple[Database, ObjectStore]]:
    """The database and store the API reads, for a test to register models into."""
    db = Database(settings.database_url)
    try:
        yield db, open_store(settings)
    finally:
        await db.aclose()


@pytest.fixture
async def registered(registry: tuple[Database, ObjectStore]) -> Registered:
    """The tiny model registered as v1 (the first version, so production)."""
    return await register_model(*registry)


@pytest.fixture
def app(settings: Settings, registered: Registered) -> FastAPI:
    """The API over a registry holding the tiny model as v1."""
    return create_app(settings)


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app) as client:
        yield client
