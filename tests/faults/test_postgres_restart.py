"""The real PostgreSQL stopped under load and started again, under a running ``sleeve serve``.

While clients keep sending requests, PostgreSQL is stopped (a fast shutdown: sessions
killed, connections refused), then started again on the same port with the same data. The
API is never restarted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
from servers import postgres_server
from sqlalchemy.engine import make_url
from support import make_settings, wait_until

from sleeve_common.db import Database, upgrade_database
from sleeve_common.store import ObstoreStore, cover_key
from sleeve_inference.app import create_app

from ..inference.harness import API_KEY, register_model, serve
from .stack import Load, a_cover, sleeve_serve

COVER = a_cover()

REQUESTS = {
    "models": lambda c: c.get("/v1/models"),
    "model v1": lambda c: c.get("/v1/models/v1"),
    "scrape runs": lambda c: c.get("/v1/scrape-runs"),
    "queue scoring": lambda c: c.post(
        "/v1/scoring-jobs", json={"input": "store:covers/"}, headers={"X-API-Key": API_KEY}
    ),
    "predict": lambda c: c.post(
        "/v1/predict", content=COVER, headers={"content-type": "image/jpeg"}
    ),
    "readyz": lambda c: c.get("/readyz"),
}
# What each request answers while all is well.
UP = dict.fromkeys(REQUESTS, 200) | {"queue scoring": 202}
# The ones that need the database for their answer.
ON_THE_DATABASE = ("models", "model v1", "scrape runs", "queue scoring")


async def _prepare(url: str, store_dir: Path) -> None:
    """Migrate the database, register the tiny model, and put a cover where scoring reads."""
    await asyncio.to_thread(upgrade_database, url)
    store = ObstoreStore.local(store_dir)
    await store.put(cover_key("a" * 64), COVER)
    db = Database(url)
    try:
        await register_model(db, store)
    finally:
        await db.aclose()


def test_postgres_stopped_under_load_answers_503_and_recovers_by_itself(tmp_path: Path) -> None:
    with postgres_server() as pg:
        asyncio.run(_prepare(pg.url, tmp_path / "store"))
        env = {
            "SLEEVE_DATABASE_URL": pg.url,
            "SLEEVE_STORE_URL": f"file://{tmp_path / 'store'}",
            "SLEEVE_DATA_DIR": str(tmp_path / "var"),
            "SLEEVE_API_KEY": API_KEY,
        }
        with sleeve_serve(env, log=tmp_path / "api.log") as api:
            with Load(api.base, REQUESTS) as load:
                load.wait_for_each("up", UP, at_least=3)
                # Back by itself: PostgreSQL is started again, the API is not touched.
                load.stop_and_start(
                    pg,
                    refused=ON_THE_DATABASE,
                    served=("predict",),
                    back={"readyz": 200, "models": 200},
                    up=UP,
                )
            assert api.process.poll() is None, "the API was restarted or died"
            # Every job the API said it queued is there: nothing admitted was lost.
            queued = [a.body["id"] for a in load.answers(name="queue scoring") if a.status == 202]
            with httpx.Client(base_url=api.base) as client:
                found = [client.get(f"/v1/scoring-jobs/{i}").status_code for i in queued]
                metrics = client.get("/metrics").text
            log = api.log.read_text(errors="replace")

    assert not load.broken()
    assert found == [200] * len(queued)
    assert 'status="500"' not in metrics
    assert "Traceback" not in log, log[-3000:]
    # While it was stopped: every request that needs the database got a 503 in the error
    # schema, readiness said why, and predictions went on with the model already loaded.
    load.check_answers(up=UP, refused=ON_THE_DATABASE)
    ready = load.answers("down", "readyz")
    assert ready and all(a.status == 503 for a in ready)
    assert all(a.body["checks"]["database"].startswith("cannot reach") for a in ready)
    assert all(a.body["checks"]["model"] == "ok (v1)" for a in ready)
    predictions = load.answers("down", "predict")
    assert predictions and all(a.status == 200 for a in predictions)


async def test_a_session_killed_mid_query_answers_503_and_the_next_request_works(
    postgres_database_url: str, tmp_path: Path
) -> None:
    """What a shutdown (or an operator's ``pg_terminate_backend``) does to a query in flight:
    the server ends the session with an error the driver reports as a bare DBAPIError."""
    settings = make_settings(tmp_path, postgres_database_url, api_key=API_KEY)
    db = Database(postgres_database_url)
    await register_model(db, ObstoreStore.local(tmp_path / "store"))
    await db.aclose()
    target = make_url(postgres_database_url)
    admin = await asyncpg.connect(
        host=target.host,
        port=target.port,
        user=target.username,
        password=target.password,
        database=target.database,
    )
    try:
        async with serve(create_app(settings)) as api:
            # The registry's table locked: the API's query waits inside PostgreSQL.
            locking = admin.transaction()
            await locking.start()
            await admin.execute("LOCK TABLE model_versions IN ACCESS EXCLUSIVE MODE")
            request = asyncio.create_task(api.get("/v1/models"))
            waiting: list[int] = []

            async def api_waits() -> bool:
                waiting[:] = await admin.fetchval(WAITING_ON_A_LOCK)
                return bool(waiting)

            await wait_until(api_waits, None, "the API's query waiting on the lock", 30)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", waiting
            )
            answer = await asyncio.wait_for(request, timeout=30)
            await locking.rollback()

            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "unavailable"
            assert (await api.get("/v1/models")).status_code == 200
    finally:
        await admin.close()


WAITING_ON_A_LOCK = """
SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
"""
