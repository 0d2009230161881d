"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

import sleeve_common
from sleeve_common.db import Database, upgrade_database
from sleeve_common.models import (
    Base,
    ModelVersion,
    ScrapeRun,
    ScrapeRunStatus,
    TrainingRun,
    TrainingRunStatus,
)


async def test_models_and_migrations_agree(database: Database) -> None:
    def diff(connection):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection)
        return compare_metadata(context, Base.metadata)

    async with database.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == [], f"a model changed without a migration: {differences}"


async def test_every_table_exists(database: Database) -> None:
    async with database.engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert set(Base.metadata.tables) <= tables


def _downgrade(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option(
        "script_location", str(Path(sleeve_common.__file__).parent / "migrations")
    )
    config.attributes["database_url"] = url
    command.downgrade(config, revision)


async def test_scrape_run_records_upgrade_from_0003_and_downgrade(database_url: str) -> None:
    """0004 adds the run records to existing runs (zeros, empty maps, no heartbeat: a run an
    older version left running reads as interrupted) and its downgrade removes them."""
    await asyncio.to_thread(_downgrade, database_url, "0003")
    database = Database(database_url)
    try:
        async with database.session() as session:
            columns = await session.run_sync(
                lambda s: {c["name"] for c in inspect(s.connection()).get_columns("scrape_runs")}
            )
            assert "heartbeat_at" not in columns
            await session.execute(
                text(
                    "INSERT INTO scrape_runs (source, params, status, cursor, seen, added, "
                    "duplicates, rejected, started_at) VALUES ('folder', '{}', 'running', "
                    "'{\"files_done\": 3}', 3, 2, 1, 0, :started)"
                ),
                {"started": datetime(2026, 1, 1)},
            )
        await database.engine.dispose()
        await asyncio.to_thread(upgrade_database, database_url)
        async with database.session() as session:
            [run] = (await session.execute(select(ScrapeRun))).scalars()
        assert (run.seen, run.added, run.duplicates, run.cursor) == (3, 2, 1, {"files_done": 3})
        assert (run.fetched, run.requests, run.request_rate, run.attempt) == (0, 0, 0.0, 1)
        assert (run.rejected_by_reason, run.seen_by_genre, run.errors_by_kind) == ({}, {}, {})
        assert run.heartbeat_at is None
        assert run.reported_status(heartbeat_s=10) is ScrapeRunStatus.INTERRUPTED
    finally:
        await database.aclose()


async def test_model_version_promotion_upgrades_from_0004_and_downgrades(database_url: str) -> None:
    """0005 gives existing versions no promotion decision; its downgrade removes the column."""
    await asyncio.to_thread(_downgrade, database_url, "0004")
    database = Database(database_url)
    try:
        async with database.session() as session:
            columns = await session.run_sync(
                lambda s: {c["name"] for c in inspect(s.connection()).get_columns("model_versions")}
            )
            assert "promotion" not in columns
            await session.execute(
                text(
                    "INSERT INTO model_versions (version, stage, labels, input_spec, metrics, "
                    "onnx_key, onnx_sha256, onnx_bytes, report_keys, created_at) VALUES ('v1', "
                    "'production', '[\"pop\"]', '{}', '{}', 'm.onnx', :sha, 1, '{}', :created)"
                ),
                {"sha": "0" * 64, "created": datetime(2026, 1, 1)},
            )
        await database.engine.dispose()
        await asyncio.to_thread(upgrade_database, database_url)
        async with database.session() as session:
            [version] = (await session.execute(select(ModelVersion))).scalars()
        assert (version.version, version.stage, version.promotion) == ("v1", "production", None)
    finally:
        await database.aclose()


async def test_training_run_progress_upgrades_from_0006_and_downgrades(database_url: str) -> None:
    """0007 gives existing runs no progress and no heartbeat (a run an older version left
    running reads as interrupted); its downgrade removes both columns."""
    await asyncio.to_thread(_downgrade, database_url, "0006")
    database = Database(database_url)

    async def columns() -> set[str]:
        async with database.session() as session:
            return await session.run_sync(
                lambda s: {c["name"] for c in inspect(s.connection()).get_columns("training_runs")}
            )

    try:
        assert not {"progress", "heartbeat_at"} & await columns()
        async with database.session() as session:
            await session.execute(
                text(
                    "INSERT INTO datasets (name, params, genres, counts, "
                    "created_at) VALUES ('d', '{}', '[]', '{}', :created)"
                ),
                {"created": datetime(2026, 1, 1)},
            )
            await session.execute(
                text(
                    "INSERT INTO training_runs (dataset_id, params, status, history, started_at) "
                    "VALUES (1, '{}', 'running', '{}', :started)"
                ),
                {"started": datetime(2026, 1, 1)},
            )
        await database.engine.dispose()
        await asyncio.to_thread(upgrade_database, database_url)
        async with database.session() as session:
            [run] = (await session.execute(select(TrainingRun))).scalars()
        assert (run.status, run.progress, run.heartbeat_at) == ("running", None, None)
        assert run.reported_status(heartbeat_s=10) is TrainingRunStatus.INTERRUPTED
        await database.engine.dispose()
        await asyncio.to_thread(_downgrade, database_url, "0006")
        assert not {"progress", "heartbeat_at"} & await columns()
    finally:
        await database.aclose()


async def test_model_version_variants_upgrade_from_0005_and_downgrade(database_url: str) -> None:
    """0006 gives existing versions no variants (an empty map); its downgrade removes them."""
    await asyncio.to_thread(_downgrade, database_url, "0005")
    database = Database(database_url)
    try:
        async with database.session() as session:
            columns = await session.run_sync(
                lambda s: {c["name"] for c in inspect(s.connection()).get_columns("model_versions")}
            )
            assert "variants" not in columns
            await session.execute(
                text(
                    "INSERT INTO model_versions (version, stage, labels, input_spec, metrics, "
                    "onnx_key, onnx_sha256, onnx_bytes, report_keys, created_at) VALUES ('v1', "
                    "'production', '[\"pop\"]', '{}', '{}', 'm.onnx', :sha, 1, '{}', :created)"
                ),
                {"sha": "0" * 64, "created": datetime(2026, 1, 1)},
            )
        await database.engine.dispose()
        await asyncio.to_thread(upgrade_database, database_url)
        async with database.session() as session:
            [version] = (await session.execute(select(ModelVersion))).scalars()
        assert (version.version, version.variants) == ("v1", {})
    finally:
        await database.aclose()
