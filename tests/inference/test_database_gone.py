"""The SQLite file moved away under a running API: 503 in the error schema, readiness false,
no empty database created in its place, and everything back by itself once the file is back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import make_settings

from sleeve_common.cli import main
from sleeve_common.db import Database, upgrade_database
from sleeve_common.store import open_store
from sleeve_inference.app import create_app

from .harness import API_KEY, register_model, serve


async def test_a_moved_database_file_answers_503_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "sleeve.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade_database, url)
    settings = make_settings(tmp_path, url, api_key=API_KEY)
    db = Database(url)
    await register_model(db, open_store(settings))
    await db.aclose()

    app = create_app(settings)
    async with serve(app) as api:
        assert (await api.get("/v1/models")).status_code == 200
        path.rename(tmp_path / "elsewhere.db")
        # The pool's open connections still see the moved file; new ones must not create one.
        await app.state.runtime.db.engine.dispose()

        models = await api.get("/v1/models")
        ready = await api.get("/readyz")

        assert models.status_code == 503
        assert models.json()["error"]["code"] == "unavailable"
        assert ready.status_code == 503
        assert "no database file" in ready.json()["checks"]["database"]
        assert not path.exists()  # no fresh, empty database in its place

        (tmp_path / "elsewhere.db").rename(path)

        assert (await api.get("/v1/models")).status_code == 200
        assert (await api.get("/readyz")).json()["checks"]["database"] == "ok"


def test_commands_other_than_upgrade_never_create_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing-here.db"
    monkeypatch.setenv("SLEEVE_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("SLEEVE_STORE_URL", f"file://{tmp_path / 'store'}")

    assert main(["check"]) == 1
    assert "no database file" in capsys.readouterr().err
    assert not path.exists()

    assert main(["db", "upgrade"]) == 0
    assert path.exists()
    assert main(["check"]) == 0
