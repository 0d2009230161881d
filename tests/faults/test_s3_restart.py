"""The real S3 server stopped under load and started again, under a running ``sleeve serve``.

The store is a SeaweedFS of its own (the database a SQLite file, so that only the store
fails). While clients keep sending requests it is stopped, then started again on the same
port with the same data directory. The API is never restarted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from servers import S3Server, seaweedfs_s3

from sleeve_common.db import Database, upgrade_database
from sleeve_common.store import ObstoreStore, cover_key

from ..inference.harness import API_KEY, register_model
from .stack import S3_PREFIX, Load, a_cover, s3_env, sleeve_serve

COVER = a_cover()

REQUESTS = {
    "models": lambda c: c.get("/v1/models"),
    "confusion matrix": lambda c: c.get("/v1/models/v1/confusion-matrix.png"),
    "promote": lambda c: c.post("/v1/models/v1/promote", headers={"X-API-Key": API_KEY}),
    "queue scoring": lambda c: c.post(
        "/v1/scoring-jobs", json={"input": "store:covers/"}, headers={"X-API-Key": API_KEY}
    ),
    "predict": lambda c: c.post(
        "/v1/predict", content=COVER, headers={"content-type": "image/jpeg"}
    ),
    "readyz": lambda c: c.get("/readyz"),
}
UP = dict.fromkeys(REQUESTS, 200) | {"queue scoring": 202}
# The ones that read the store for their answer: a report image, the ONNX file a promotion
# verifies, the listing a scoring job is checked against.
ON_THE_STORE = ("confusion matrix", "promote", "queue scoring")


def s3_store(s3: S3Server) -> ObstoreStore:
    return ObstoreStore.s3(
        s3.bucket,
        prefix=S3_PREFIX,
        endpoint=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
    )


async def _prepare(url: str, store: ObstoreStore) -> None:
    """Migrate the database, register the tiny model, and put a cover where scoring reads."""
    await asyncio.to_thread(upgrade_database, url)
    await store.put(cover_key("a" * 64), COVER)
    db = Database(url)
    try:
        await register_model(db, store)
    finally:
        await db.aclose()


def test_s3_stopped_under_load_answers_503_and_recovers_by_itself(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}"
    with seaweedfs_s3() as s3:
        asyncio.run(_prepare(url, s3_store(s3)))
        env = {
            "SLEEVE_DATABASE_URL": url,
            "SLEEVE_DATA_DIR": str(tmp_path / "var"),
            "SLEEVE_API_KEY": API_KEY,
            **s3_env(s3),
        }
        with sleeve_serve(env, log=tmp_path / "api.log") as api:
            with Load(api.base, REQUESTS) as load:
                load.wait_for_each("up", UP, at_least=3)
                # Back by itself: the S3 server is started again, the API is not touched.
                load.stop_and_start(
                    s3,
                    refused=ON_THE_STORE,
                    served=("models", "predict"),
                    back={"readyz": 200, "confusion matrix": 200},
                    up=UP,
                )
            assert api.process.poll() is None, "the API was restarted or died"
            with httpx.Client(base_url=api.base) as client:
                metrics = client.get("/metrics").text
                stages = {m["version"]: m["stage"] for m in client.get("/v1/models").json()}
            log = api.log.read_text(errors="replace")

    assert not load.broken()
    assert 'status="500"' not in metrics
    assert "Traceback" not in log, log[-3000:]
    assert stages == {"v1": "production"}
    # While it was stopped: what reads the store got a 503 in the error schema, readiness
    # said why, and the registry (in the database) and predictions (with the model already
    # loaded and cached on disk) went on.
    load.check_answers(up=UP, refused=ON_THE_STORE)
    ready = load.answers("down", "readyz")
    assert ready and all(a.status == 503 for a in ready)
    assert all(f"s3://{s3.bucket}/{S3_PREFIX}" in a.body["checks"]["store"] for a in ready)
    assert all(a.body["checks"]["database"] == "ok" for a in ready)
    for name in ("models", "predict"):
        down = load.answers("down", name)
        assert down and all(a.status == 200 for a in down), [str(a) for a in down][:5]
