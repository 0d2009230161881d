"""A real 500 (issue 9, findings 1 and 2): an unhandled error in a route of the running app
is answered in the JSON error schema, says nothing of the exception, is counted in
``/metrics`` under its route, and the server goes on serving.

No mock raises it: the registry row itself is corrupted behind the API's back, so the
handler meets data its code cannot read (``metrics`` holding a JSON array, not an object).
The app runs under uvicorn on a loopback socket, as in production, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import text

from sleeve_common.db import Database
from sleeve_common.logs import RequestIdFilter
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore
from sleeve_inference.app import create_app

from .harness import Registered, image_bytes, serve_on_socket

_FAILURES = 'sleeve_http_requests_total{method="GET",route="/v1/models",status="500"}'


async def _corrupt_metrics(db: Database, value: str) -> None:
    async with db.session() as session:
        await session.execute(text("UPDATE model_versions SET metrics = :value"), {"value": value})


async def test_an_unhandled_error_is_a_counted_500_in_the_error_schema(
    settings: Settings,
    registry: tuple[Database, ObjectStore],
    registered: Registered,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, _ = registry
    async with (
        serve_on_socket(create_app(settings)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        assert (await client.get("/v1/models")).status_code == 200
        await _corrupt_metrics(db, "[1, 2]")

        caplog.handler.addFilter(RequestIdFilter())
        with caplog.at_level(logging.ERROR):
            failures = [await client.get("/v1/models") for _ in range(2)]

        for failed in failures:
            assert failed.status_code == 500
            assert failed.headers["content-type"] == "application/json"
            assert failed.json() == {
                "error": {"code": "internal_error", "message": failed.json()["error"]["message"]}
            }
            message = failed.json()["error"]["message"]
            assert message.startswith("internal error; see the server log")
            for leak in ("AttributeError", "Traceback", "list", "metrics", ".py", "[1, 2]"):
                assert leak not in failed.text
            # The id names the server log's lines of this request, the traceback's too.
            request_id = failed.headers["x-request-id"]
            assert request_id in message
            [logged] = [r for r in caplog.records if r.request_id == request_id]  # type: ignore[attr-defined]
            assert logged.getMessage() == "unhandled error answering GET /v1/models"
            assert logged.exc_info is not None and logged.exc_info[0] is AttributeError
        assert len({f.headers["x-request-id"] for f in failures}) == 2

        # The server goes on: other routes, the same route once the row is readable again.
        assert (await client.get("/healthz")).status_code == 200
        predicted = await client.post(
            "/v1/predict", content=image_bytes((255, 0, 0)), headers={"content-type": "image/png"}
        )
        assert predicted.status_code == 200, predicted.text
        await _corrupt_metrics(db, '{"accuracy": 0.5, "macro_f1": 0.4}')
        assert (await client.get("/v1/models")).status_code == 200

        metrics = (await client.get("/metrics")).text
        assert f"{_FAILURES} 2.0" in metrics
        assert (
            'sleeve_http_requests_total{method="GET",route="/v1/models",status="200"} 2.0'
            in metrics
        )
