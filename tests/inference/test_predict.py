"""``POST /v1/predict`` through the serving core: raw bodies, pixel budget, admission control,
deadlines, request ids and the serving metrics. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from support import DISCOGS5, make_settings

from sleeve_common.logs import RequestIdFilter
from sleeve_inference.app import create_app

from .harness import API_KEY, LABELS, LIMITS, Registered, image_bytes, noise_png, serve

RED = (255, 0, 0)


def cover_bytes(genre: str = "Rock") -> bytes:
    return sorted((DISCOGS5 / genre).glob("*.jpg"))[0].read_bytes()


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    for fragment in fragments:
        assert fragment in error["message"]


async def test_raw_image_body_is_one_prediction(api: httpx.AsyncClient) -> None:
    data = cover_bytes()
    raw = await api.post("/v1/predict", content=data, headers={"content-type": "image/jpeg"})
    multipart = await api.post("/v1/predict", files=[("files", ("c.jpg", data, "image/jpeg"))])

    assert raw.status_code == 200, raw.text
    [prediction] = raw.json()["predictions"]
    assert prediction["filename"] is None
    assert prediction["genres"] == multipart.json()["predictions"][0]["genres"]


async def test_raw_png_body_gets_its_genre(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/predict", content=image_bytes(RED), headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["top_genre"] == "country"


async def test_raw_body_problems_are_precise(api: httpx.AsyncClient) -> None:
    empty = await api.post("/v1/predict", content=b"", headers={"content-type": "image/jpeg"})
    assert_error(empty, 422, "invalid_image", "empty file")
    text = await api.post("/v1/predict", content=b"hello", headers={"content-type": "image/png"})
    assert_error(text, 422, "invalid_image", "not a recognised image format")
    big = b"\xff" * (LIMITS["max_upload_bytes"] + 1)
    huge = await api.post("/v1/predict", content=big, headers={"content-type": "image/jpeg"})
    assert_error(huge, 413, "image_too_large", str(LIMITS["max_upload_bytes"]))
    other = await api.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"})
    assert_error(other, 415, "unsupported_media_type", "multipart/form-data")
    assert (await api.get("/healthz")).status_code == 200


async def test_request_pixel_budget_is_checked_before_decoding(
    tmp_path: Path, database_url: str, registered: Registered
) -> None:
    settings = make_settings(
        tmp_path, database_url, api_key=API_KEY, **{**LIMITS, "max_request_pixels": 1_500_000}
    )
    # Two one-colour 1000x1000 PNGs: each within max_image_pixels, together over the budget.
    square = image_bytes(RED, (1000, 1000))
    files = [("files", (f"{i}.png", square, "image/png")) for i in range(2)]
    async with serve(create_app(settings)) as api:
        response = await api.post("/v1/predict", files=files)
        assert_error(response, 413, "too_many_pixels", "2000000 pixels", "1500000")
        alone = await api.post("/v1/predict", files=files[:1])
        assert alone.status_code == 200, alone.text


async def test_full_server_answers_503_with_retry_after_at_once(
    app: object, api: httpx.AsyncClient
) -> None:
    serving = app.state.serving  # type: ignore[attr-defined]
    capacity = serving.admission.max_images
    with serving.admission.admit(capacity, images_per_second=0.0):
        response = await api.post("/v1/predict", files=[("files", ("r.png", image_bytes(RED)))])
    assert_error(response, 503, "overloaded", "capacity")
    assert int(response.headers["retry-after"]) >= 1
    assert serving.admission.in_flight == 0
    after = await api.post("/v1/predict", files=[("files", ("r.png", image_bytes(RED)))])
    assert after.status_code == 200, after.text
    metrics = (await api.get("/metrics")).text
    assert 'sleeve_rejections_total{reason="overloaded"} 1.0' in metrics
    assert 'status="503"' in metrics


async def test_request_past_its_deadline_gets_503(
    tmp_path: Path, database_url: str, registered: Registered
) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        api_key=API_KEY,
        **{**LIMITS, "max_upload_bytes": 4_000_000, "request_deadline_s": 0.001},
    )
    async with serve(create_app(settings)) as api:
        response = await api.post(
            "/v1/predict", content=noise_png(900), headers={"content-type": "image/png"}
        )
        assert_error(response, 503, "deadline_exceeded", "SLEEVE_REQUEST_DEADLINE_S")
        assert response.headers["retry-after"] == "1"
        assert (await api.get("/healthz")).status_code == 200


async def test_concurrent_requests_are_batched_and_each_gets_its_answer(
    api: httpx.AsyncClient,
) -> None:
    colours = {"country": (255, 0, 0), "rock": (0, 255, 0), "pop": (0, 0, 255)}
    names = [name for name in LABELS for _ in range(4)]
    responses = await asyncio.gather(
        *(
            api.post(
                "/v1/predict",
                content=image_bytes(colours[name]),
                headers={"content-type": "image/png"},
            )
            for name in names
        )
    )
    assert [r.json()["predictions"][0]["top_genre"] for r in responses] == names
    assert {r.json()["model_version"] for r in responses} == {"v1"}
    metrics = (await api.get("/metrics")).text
    assert "sleeve_batch_size_count" in metrics
    assert 'sleeve_model_info{provider="CPU",version="v1"} 1.0' in metrics
    assert "sleeve_queue_images 0.0" in metrics


async def test_request_id_is_returned_and_kept(api: httpx.AsyncClient) -> None:
    fresh = await api.get("/healthz")
    assert len(fresh.headers["x-request-id"]) == 32
    kept = await api.get("/healthz", headers={"x-request-id": "client-42"})
    assert kept.headers["x-request-id"] == "client-42"
    hostile = await api.get("/healthz", headers={"x-request-id": "a b\tc" * 40})
    assert hostile.headers["x-request-id"] != "a b\tc" * 40


async def test_access_log_names_the_request(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="sleeve.access"):
        response = await api.post(
            "/v1/predict",
            content=image_bytes(RED),
            headers={"content-type": "image/png", "x-request-id": "trace-7"},
        )
    assert response.status_code == 200
    [line] = [r for r in caplog.records if r.name == "sleeve.access"]
    assert '"POST /v1/predict" 200' in line.getMessage()
    assert line.request_id == "trace-7"  # type: ignore[attr-defined]


async def test_method_not_allowed_keeps_the_allow_header(api: httpx.AsyncClient) -> None:
    response = await api.request("TRACE", "/healthz")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"
