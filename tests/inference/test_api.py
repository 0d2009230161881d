"""The inference HTTP API end to end: a real app, lifespan running, a real ONNX model.

Every test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update
from support import DISCOGS5, make_settings

from sleeve_common.db import Database
from sleeve_common.models import Dataset, ModelVersion
from sleeve_common.registry import REPORT_IMAGES
from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore
from sleeve_inference.app import create_app
from sleeve_inference.model_holder import ModelHolder, ModelIntegrityError

from .harness import (
    API_KEY,
    INPUT_SPEC,
    LABELS,
    LIMITS,
    METRICS,
    Registered,
    build_onnx_model,
    image_bytes,
    register_model,
    serve,
)

# What the trainer records for a version (sleeve_trainer.report.evaluate, the split sizes),
# with a baseline and a figure the API does not know: all of it is served as stored.
REPORT_METRICS = {
    "accuracy": 0.5,
    "macro_f1": 0.4,
    "top2_accuracy": 0.75,
    "top3_accuracy": 1.0,
    "log_loss": 0.9,
    "expected_calibration_error": 0.12,
    "calibration_bins": [
        {"lower": 0.0, "upper": 0.5, "count": 0, "confidence": None, "accuracy": None},
        {"lower": 0.5, "upper": 1.0, "count": 6, "confidence": 0.62, "accuracy": 0.5},
    ],
    "per_class": {g: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for g in LABELS},
    "confusion_matrix": [[1, 1, 0], [0, 1, 1], [1, 0, 1]],
    "baselines": {"colour_histogram": {"accuracy": 0.3, "macro_f1": 0.25, "top2_accuracy": 0.5}},
    "test_size": 6,
    "export_max_abs_diff": 1e-6,
    "embedding_seconds": 12.5,
}
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
# The whole request may hold max_images_per_request full files plus 64 KiB of multipart framing.
BODY_LIMIT = LIMITS["max_upload_bytes"] * LIMITS["max_images_per_request"] + 64 * 1024


def cover(genre: str, index: int = 0) -> Path:
    """A real Discogs cover (read from the shared kit, never copied)."""
    return sorted((DISCOGS5 / genre).glob("*.jpg"))[index]


def upload(path: Path) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (path.name, path.read_bytes(), "image/jpeg"))


def png(name: str, colour: tuple[int, int, int]) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (name, image_bytes(colour), "image/png"))


def png_header(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> None:
    """The JSON error shape, with its status, stable code and a message naming the problem."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str)
    for fragment in fragments:
        assert fragment in message, body


async def assert_still_serving(api: httpx.AsyncClient) -> None:
    """A good request right after a bad one is answered normally."""
    response = await api.post("/v1/predict", files=[png("red.png", RED)])
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["top_genre"] == "country"


# --- predict -------------------------------------------------------------------------------


async def test_predict_one_real_cover(api: httpx.AsyncClient) -> None:
    path = cover("Rock")
    response = await api.post("/v1/predict", files=[upload(path)], params={"top_k": len(LABELS)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v1"
    [prediction] = body["predictions"]
    assert prediction["filename"] == path.name
    genres = prediction["genres"]
    assert sorted(g["genre"] for g in genres) == sorted(LABELS)
    probabilities = [g["probability"] for g in genres]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert prediction["top_genre"] == genres[0]["genre"]
    timing = body["timing"]
    assert set(timing) == {"decode_ms", "inference_ms", "total_ms", "batch_size"}
    assert timing["batch_size"] >= 1
    assert all(value >= 0 for value in timing.values())
    assert timing["total_ms"] >= timing["inference_ms"]


async def test_predict_many_files_in_one_request(api: httpx.AsyncClient) -> None:
    paths = [cover("Country"), cover("Pop"), cover("HipHop")]
    files = [upload(p) for p in paths] + [png("blue.png", BLUE)]

    response = await api.post("/v1/predict", files=files)

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == [*(p.name for p in paths), "blue.png"]
    assert predictions[-1]["top_genre"] == "pop"
    for prediction in predictions:
        assert prediction["top_genre"] == prediction["genres"][0]["genre"]


async def test_predict_answers_the_same_for_the_same_cover(api: httpx.AsyncClient) -> None:
    path = cover("Electronic", 3)
    alone = await api.post("/v1/predict", files=[upload(path)])
    batched = await api.post("/v1/predict", files=[png("green.png", GREEN), upload(path)])

    assert alone.status_code == batched.status_code == 200
    assert batched.json()["predictions"][1] == alone.json()["predictions"][0]


@pytest.mark.parametrize("top_k", [1, 2])
async def test_top_k_limits_the_genres(api: httpx.AsyncClient, top_k: int) -> None:
    response = await api.post(
        "/v1/predict", files=[upload(cover("Pop")), png("red.png", RED)], params={"top_k": top_k}
    )

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [len(p["genres"]) for p in predictions] == [top_k, top_k]
    assert predictions[1]["genres"][0]["genre"] == "country"


@pytest.mark.parametrize("top_k", [0, 101, -1])
async def test_top_k_out_of_range_is_refused(api: httpx.AsyncClient, top_k: int) -> None:
    response = await api.post("/v1/predict", files=[upload(cover("Pop"))], params={"top_k": top_k})

    assert_error(response, 422, "invalid_request", "top_k")
    await assert_still_serving(api)


async def test_crafted_colours_get_their_genres(api: httpx.AsyncClient) -> None:
    files = [png("red.png", RED), png("green.png", GREEN), png("blue.png", BLUE)]

    response = await api.post("/v1/predict", files=files, params={"top_k": 1})

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["top_genre"] for p in predictions] == ["country", "rock", "pop"]
    # Mean red 255 → logits (5.1, 0.1, -0.1) → softmax.
    logits = np.array([5.1, 0.1, -0.1])
    expected = float(np.exp(logits[0]) / np.exp(logits).sum())
    assert predictions[0]["genres"][0]["probability"] == pytest.approx(expected, abs=1e-5)


# --- predict: bad input gets a precise 4xx and the server keeps answering --------------


def _truncated_cover() -> bytes:
    data = cover("Rock", 1).read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "data", "content_type", "fragment"),
    [
        ("notes.txt", b"side A: a song\nside B: another\n", "text/plain", "not a recognised"),
        ("empty.jpg", b"", "image/jpeg", "empty file"),
        ("truncated.jpg", _truncated_cover(), "image/jpeg", "corrupt image"),
        ("tiny.png", image_bytes(RED, (4, 4)), "image/png", "too small"),
        # Over max_image_pixels (1,000,000) but under Pillow's own bomb limit.
        ("big.png", png_header(2_000, 2_000), "image/png", "too large"),
        # Far over Pillow's own bomb limit: refused before any pixel is decoded.
        ("bomb.png", png_header(100_000, 100_000), "image/png", "too large"),
    ],
    ids=["text", "empty", "truncated-jpeg", "tiny", "over-max-pixels", "decompression-bomb"],
)
async def test_bad_image_is_refused(
    api: httpx.AsyncClient, name: str, data: bytes, content_type: str, fragment: str
) -> None:
    files = [png("red.png", RED), ("files", (name, data, content_type))]

    response = await api.post("/v1/predict", files=files)

    assert_error(response, 422, "invalid_image", f"file 1 ({name!r})", fragment)
    await assert_still_serving(api)


async def test_file_over_max_upload_bytes_is_refused(api: httpx.AsyncClient) -> None:
    data = cover("Rock").read_bytes()
    data += b"\x00" * (LIMITS["max_upload_bytes"] + 1 - len(data))

    response = await api.post("/v1/predict", files=[("files", ("huge.jpg", data, "image/jpeg"))])

    assert_error(response, 413, "image_too_large", "huge.jpg", str(LIMITS["max_upload_bytes"]))
    await assert_still_serving(api)


async def test_more_files_than_allowed_is_refused(api: httpx.AsyncClient) -> None:
    files = [png(f"{i}.png", RED) for i in range(LIMITS["max_images_per_request"] + 1)]

    response = await api.post("/v1/predict", files=files)

    assert_error(response, 413, "too_many_images", str(LIMITS["max_images_per_request"]))
    await assert_still_serving(api)


async def test_body_over_the_overall_limit_is_refused(api: httpx.AsyncClient) -> None:
    # Each file is under max_upload_bytes; together they pass the request limit.
    part = b"\x00" * (LIMITS["max_upload_bytes"] - 10)
    files = [
        ("files", (f"{i}.jpg", part, "image/jpeg"))
        for i in range(LIMITS["max_images_per_request"] + 1)
    ]

    request = api.build_request("POST", "/v1/predict", files=files)
    declared = int(request.headers["content-length"])
    assert declared == len(request.read())
    assert declared > BODY_LIMIT

    response = await api.send(request)

    assert_error(response, 413, "payload_too_large", str(BODY_LIMIT))
    await assert_still_serving(api)
    metrics = (await api.get("/metrics")).text
    assert 'method="POST",route="unmatched",status="413"} 1.0' in metrics


async def test_streamed_body_over_the_overall_limit_is_refused(api: httpx.AsyncClient) -> None:
    """Without a Content-Length the limit is counted as the body arrives."""
    boundary = "sleeve-test-boundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    total = LIMITS["max_upload_bytes"] * (LIMITS["max_images_per_request"] + 1)

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(total // 65_536 + 1):
            yield b"\x00" * 65_536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await api.post(
        "/v1/predict",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )

    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large", str(BODY_LIMIT))
    await assert_still_serving(api)


async def test_request_without_files_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/predict", files=[("image", ("red.png", image_bytes(RED), "image/png"))]
    )

    assert_error(response, 422, "invalid_request", "files")
    await assert_still_serving(api)


async def test_a_text_field_named_files_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/predict",
        content=b'--b\r\nContent-Disposition: form-data; name="files"\r\n\r\nred.png\r\n--b--\r\n',
        headers={"content-type": "multipart/form-data; boundary=b"},
    )

    assert_error(response, 422, "invalid_request", "files: part 0 is a text field")


async def test_malformed_multipart_is_a_declared_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/predict",
        content=b"--b\r\nno headers, no end",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )

    assert_error(response, 400, "bad_request")
    declared = (await api.get("/openapi.json")).json()["paths"]["/v1/predict"]["post"]
    assert "400" in declared["responses"]


async def test_the_spec_requires_files_in_a_multipart_body(api: httpx.AsyncClient) -> None:
    """An empty multipart body matched the spec yet got 422 (schemathesis ST202)."""
    spec = (await api.get("/openapi.json")).json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]
    multipart = body["content"]["multipart/form-data"]["schema"]
    assert body["required"] is True
    assert multipart["required"] == ["files"]
    assert multipart["properties"]["files"]["minItems"] == 1


async def test_json_body_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/predict", json={"files": ["https://example.com/a.jpg"]})

    assert_error(response, 415, "unsupported_media_type", "files", "image/jpeg")
    await assert_still_serving(api)


# --- models --------------------------------------------------------------------------------


async def test_models_list_has_v1(api: httpx.AsyncClient, registered: Registered) -> None:
    response = await api.get("/v1/models")

    assert response.status_code == 200, response.text
    [summary] = response.json()
    assert summary["version"] == "v1"
    assert summary["stage"] == "production"
    assert summary["labels"] == LABELS
    assert summary["accuracy"] == METRICS["accuracy"]
    assert summary["macro_f1"] == METRICS["macro_f1"]


async def test_model_detail_and_its_confusion_matrix(
    api: httpx.AsyncClient, registered: Registered
) -> None:
    response = await api.get("/v1/models/v1")

    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["labels"] == LABELS
    assert {name: detail["metrics"][name] for name in METRICS} == METRICS
    # Figures this version's trainer did not record are null, not missing.
    assert detail["metrics"]["top3_accuracy"] is None
    assert detail["metrics"]["baselines"] is None
    assert detail["input_spec"] == INPUT_SPEC
    assert detail["onnx_sha256"] == registered.version.onnx_sha256
    assert detail["onnx_bytes"] == len(registered.onnx)
    assert detail["images"] == {"confusion_matrix": "http://test/v1/models/v1/confusion-matrix.png"}

    image = await api.get(detail["images"]["confusion_matrix"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")


async def test_every_report_image_is_linked_by_the_list_and_served(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    await register_model(*registry, bias=np.array([0.0, 0.0, 50.0]), images=REPORT_IMAGES)

    listed = {m["version"]: m["images"] for m in (await api.get("/v1/models")).json()}

    assert listed["v1"] == {"confusion_matrix": "http://test/v1/models/v1/confusion-matrix.png"}
    assert listed["v2"] == {
        "confusion_matrix": "http://test/v1/models/v2/confusion-matrix.png",
        "training_curves": "http://test/v1/models/v2/training-curves.png",
        "reliability_diagram": "http://test/v1/models/v2/reliability-diagram.png",
        "cover_grid": "http://test/v1/models/v2/cover-grid.png",
    }
    assert (await api.get("/v1/models/v2")).json()["images"] == listed["v2"]
    for n, name in enumerate(REPORT_IMAGES):
        image = await api.get(listed["v2"][name])
        assert image.status_code == 200, image.text
        assert image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (32 + n, 32)  # its own image


async def test_model_detail_is_the_full_report(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    await register_model(*registry, bias=np.array([0.0, 0.0, 50.0]), metrics=REPORT_METRICS)

    response = await api.get("/v1/models/v2")

    assert response.status_code == 200, response.text
    metrics = response.json()["metrics"]
    assert {name: metrics[name] for name in REPORT_METRICS} == REPORT_METRICS
    assert metrics["train_size"] is None  # not recorded: null
    declared = (await api.get("/openapi.json")).json()["components"]["schemas"]["ModelMetrics"]
    assert {"top3_accuracy", "log_loss", "expected_calibration_error", "baselines"} <= set(
        declared["properties"]
    )


async def test_unknown_model_version_is_404(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/models/v99"), 404, "not_found", "v99")
    assert_error(await api.get("/v1/models/v99/confusion-matrix.png"), 404, "not_found", "v99")


async def test_unknown_or_missing_model_image_is_404(api: httpx.AsyncClient) -> None:
    unknown = await api.get(f"/v1/models/v1/secrets{'x' * 5000}.png")
    assert_error(unknown, 404, "not_found", "cover-grid")
    assert "secrets" not in unknown.text  # a name of any length is not echoed
    assert_error(
        await api.get("/v1/models/v1/training-curves.png"), 404, "not_found", "training curves"
    )


async def test_a_report_image_gone_from_the_store_is_404(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    db, store = registry
    await register_model(db, store, bias=np.array([0.0, 0.0, 50.0]), images=REPORT_IMAGES)
    detail = (await api.get("/v1/models/v2")).json()
    key = next(k for k in await store.list("models/") if k.endswith("cover_grid.png"))
    await store.delete(key)

    gone = await api.get(detail["images"]["cover_grid"])

    assert_error(gone, 404, "not_found", "model v2's cover grid is missing from the store")
    assert (await api.get(detail["images"]["confusion_matrix"])).status_code == 200


async def test_no_image_path_shadows_the_promotion(api: httpx.AsyncClient) -> None:
    """GET is no method of `/v1/models/{version}/promote`: its 405 says POST is."""
    response = await api.get("/v1/models/v1/promote")

    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_promote_needs_the_api_key(api: httpx.AsyncClient) -> None:
    assert_error(await api.post("/v1/models/v1/promote"), 401, "unauthorized", "X-API-Key")
    assert_error(
        await api.post("/v1/models/v1/promote", headers={"X-API-Key": API_KEY + "x"}),
        401,
        "unauthorized",
    )

    response = await api.post("/v1/models/v1/promote", headers={"X-API-Key": API_KEY})

    assert response.status_code == 200, response.text
    assert response.json()["version"] == "v1"
    assert response.json()["stage"] == "production"


async def test_promoting_a_new_version_serves_it(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    # v2 favours pop by a wide margin, whatever the colour.
    await register_model(*registry, bias=np.array([0.0, 0.0, 50.0]))
    before = await api.post("/v1/predict", files=[png("red.png", RED)])
    assert before.json()["model_version"] == "v1"

    promoted = await api.post("/v1/models/v2/promote", headers={"X-API-Key": API_KEY})
    assert promoted.status_code == 200, promoted.text

    after = await api.post("/v1/predict", files=[png("red.png", RED)])
    assert after.status_code == 200, after.text
    assert after.json()["model_version"] == "v2"
    assert after.json()["predictions"][0]["top_genre"] == "pop"
    stages = {m["version"]: m["stage"] for m in (await api.get("/v1/models")).json()}
    assert stages == {"v1": "archived", "v2": "production"}


@pytest.mark.parametrize("damage", ["missing", "altered"])
async def test_a_version_that_cannot_be_served_is_not_promoted(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore], damage: str
) -> None:
    db, store = registry
    v2 = await register_model(db, store, bias=np.array([0.0, 0.0, 50.0]))
    if damage == "missing":
        await store.delete(v2.version.onnx_key)
    else:
        await store.put(v2.version.onnx_key, build_onnx_model())

    refused = await api.post("/v1/models/v2/promote", headers={"X-API-Key": API_KEY})

    message = "is missing from the store" if damage == "missing" else "does not match the sha256"
    assert_error(refused, 409, "model_unusable", message)
    stages = {m["version"]: m["stage"] for m in (await api.get("/v1/models")).json()}
    assert stages == {"v1": "production", "v2": "candidate"}
    served = await api.post("/v1/predict", files=[png("red.png", RED)])
    assert served.json()["model_version"] == "v1"


async def test_promoting_an_unknown_version_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/models/v7/promote", headers={"X-API-Key": API_KEY})

    assert_error(response, 404, "not_found", "v7")


async def test_writes_are_off_without_an_api_key(tmp_path: Path, database_url: str) -> None:
    app = create_app(make_settings(tmp_path, database_url, **LIMITS))
    async with serve(app) as api:
        for path, body in [
            ("/v1/models/v1/promote", None),
            ("/v1/training-runs", {"dataset": "discogs5"}),
            ("/v1/scrape-runs", {"source": "folder", "path": "/data/covers"}),
        ]:
            response = await api.post(path, json=body, headers={"X-API-Key": API_KEY})
            assert_error(response, 403, "writes_disabled", "SLEEVE_API_KEY")


# --- work: training and scrape runs --------------------------------------------------------

KEY = {"X-API-Key": API_KEY}


async def add_dataset(db: Database, name: str) -> None:
    async with db.session() as session:  # committed when the block ends
        session.add(Dataset(name=name))


async def test_training_run_is_queued_and_shown(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    await add_dataset(registry[0], "discogs5")
    request = {"dataset": "discogs5", "epochs": 3, "learning_rate": 0.002}

    created = await api.post("/v1/training-runs", json=request, headers=KEY)

    assert created.status_code == 202, created.text
    accepted = created.json()
    assert accepted["status"] == "queued"
    assert accepted["url"].endswith(f"/v1/training-runs/{accepted['id']}")
    shown = await api.get(accepted["url"])
    assert shown.status_code == 200, shown.text
    job = shown.json()
    assert job["id"] == accepted["id"]
    assert job["kind"] == "train"
    assert job["status"] == "queued"
    assert job["progress"] == 0
    assert job["result"] is None
    assert job["error"] is None
    assert job["started_at"] is None
    assert {k: job["request"][k] for k in request} == request
    assert job["request"]["fine_tune_epochs"] == 8  # defaults are filled in


async def test_a_training_run_on_a_missing_dataset_is_refused_at_once(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/training-runs", json={"dataset": "nothing-yet"}, headers=KEY)

    assert_error(response, 422, "invalid_request", "'nothing-yet' does not exist")
    # Asked to build it first, it is queued.
    build = {"dataset": "nothing-yet", "build_dataset": {"min_per_genre": 5}}
    assert (await api.post("/v1/training-runs", json=build, headers=KEY)).status_code == 202


async def test_training_run_needs_the_api_key(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/training-runs", json={"dataset": "discogs5"})

    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"dataset": "discogs5", "epochs": 0}, "epochs"),
        ({"dataset": "discogs5", "shuffle_labels": True}, "shuffle_labels"),
        ({"dataset": "../etc/passwd"}, "dataset"),
        ({"dataset": "covers/discogs5"}, "dataset"),
        ({}, "dataset"),
    ],
    ids=["epochs-0", "unknown-field", "dotdot-dataset", "slash-dataset", "no-dataset"],
)
async def test_invalid_training_request_is_refused(
    api: httpx.AsyncClient, body: dict[str, object], fragment: str
) -> None:
    response = await api.post("/v1/training-runs", json=body, headers=KEY)

    assert_error(response, 422, "invalid_request", fragment)


async def test_scrape_run_is_not_a_training_run(api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/v1/scrape-runs", json={"source": "itunes", "genres": ["jazz"]}, headers=KEY
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    shown = await api.get(f"/v1/scrape-runs/{job_id}")
    assert shown.status_code == 200
    assert shown.json()["kind"] == "scrape"
    assert shown.json()["request"]["genres"] == ["jazz"]
    assert_error(await api.get(f"/v1/training-runs/{job_id}"), 404, "not_found", str(job_id))


async def test_unknown_job_is_404(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/training-runs/424242"), 404, "not_found")
    assert_error(await api.get("/v1/scrape-runs/424242"), 404, "not_found")


@pytest.mark.parametrize(
    "job_id",
    ["9223372036854775808", "99999999999999999999999", "-9223372036854775809", "2147483648"],
)
async def test_ids_beyond_the_database_range_are_422(api: httpx.AsyncClient, job_id: str) -> None:
    for route in ("scrape-runs", "training-runs"):
        response = await api.get(f"/v1/{route}/{job_id}")
        assert_error(response, 422, "invalid_request", "job_id")


@pytest.mark.parametrize("resume", [9223372036854775808, 2**31, 1e30])
async def test_scrape_resume_beyond_the_database_range_is_422(
    api: httpx.AsyncClient, resume: float
) -> None:
    response = await api.post(
        "/v1/scrape-runs",
        json={"source": "folder", "path": "/covers", "resume": resume},
        headers={"X-API-Key": API_KEY},
    )
    assert_error(response, 422, "invalid_request", "resume")


async def test_folder_scrape_without_path_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/scrape-runs", json={"source": "folder"}, headers=KEY)

    assert_error(response, 422, "invalid_request", "path")


# --- health, readiness, metrics ------------------------------------------------------------


async def test_healthz(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_with_a_model(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "store": "ok", "model": "ok (v1)"},
        "provider": "CPU",
        "first_model": None,  # only while no model is served: how its training goes
    }


async def test_no_model_then_a_model_is_registered(
    settings: Settings, registry: tuple[Database, ObjectStore]
) -> None:
    app = create_app(settings)
    async with serve(app) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not ready"
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["store"] == "ok"
        assert "no model" in ready.json()["checks"]["model"]
        assert_error(
            await api.post("/v1/predict", files=[png("red.png", RED)]),
            503,
            "model_not_loaded",
            "no model",
        )
        assert (await api.get("/healthz")).status_code == 200

        await register_model(*registry)
        await app.state.models.refresh()

        response = await api.post("/v1/predict", files=[png("red.png", RED)])
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == "v1"
        assert response.json()["predictions"][0]["top_genre"] == "country"
        assert (await api.get("/readyz")).status_code == 200


async def test_metrics_count_requests_and_images(api: httpx.AsyncClient) -> None:
    files = [png("red.png", RED), upload(cover("Country"))]
    assert (await api.post("/v1/predict", files=files)).status_code == 200

    response = await api.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "sleeve_http_requests_total" in text
    assert 'sleeve_http_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in text
    assert "sleeve_images_predicted_total 2.0" in text


# --- page and docs -------------------------------------------------------------------------


async def test_page_has_an_upload_form(api: httpx.AsyncClient) -> None:
    response = await api.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'type="file"' in response.text


async def test_openapi_and_docs(api: httpx.AsyncClient) -> None:
    spec = await api.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/v1/predict" in paths
    assert {"/v1/models", "/v1/training-runs", "/readyz"} <= set(paths)

    docs = await api.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")


async def test_the_spec_declares_the_key_refusals_with_the_error_body(
    api: httpx.AsyncClient,
) -> None:
    """Every operation behind the API key declares what the README says of it: 401 for a
    missing or wrong key, 403 on a server without one, both in the error body's schema."""
    paths = (await api.get("/openapi.json")).json()["paths"]
    guarded = [
        (path, method, operation)
        for path, methods in paths.items()
        for method, operation in methods.items()
        if operation.get("security")
    ]
    assert sorted(f"{method.upper()} {path}" for path, method, _ in guarded) == [
        "POST /v1/models/{version}/promote",
        "POST /v1/scoring-jobs",
        "POST /v1/scoring-jobs/{job_id}/cancel",
        "POST /v1/scrape-runs",
        "POST /v1/training-runs",
    ]
    for path, method, operation in guarded:
        for status in ("401", "403"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, status)


# --- the model holder ----------------------------------------------------------------------


async def test_tampered_onnx_is_not_served(runtime: Runtime, tmp_path: Path) -> None:
    other = build_onnx_model(np.array([9.0, 0.0, 0.0]))
    await register_model(runtime.db, runtime.store, stored_onnx=other)
    cache = tmp_path / "cache"
    holder = ModelHolder(runtime, cache_dir=cache)

    with pytest.raises(ModelIntegrityError, match="sha256"):
        await holder.refresh()

    assert holder.current is None
    assert not cache.exists() or not list(cache.iterdir())


async def test_tampered_new_version_keeps_the_old_one_served(
    runtime: Runtime, tmp_path: Path
) -> None:
    await register_model(runtime.db, runtime.store)
    holder = ModelHolder(runtime, cache_dir=tmp_path / "cache")
    loaded = await holder.refresh()
    assert loaded is not None
    assert loaded.version == "v1"

    bias = np.array([0.0, 0.0, 50.0])
    await register_model(runtime.db, runtime.store, bias=bias, stored_onnx=build_onnx_model(-bias))
    # Altered after its promotion (promote itself refuses an altered file).
    async with runtime.db.session() as session:
        await session.execute(
            update(ModelVersion).where(ModelVersion.version == "v2").values(stage="production")
        )
        await session.execute(
            update(ModelVersion).where(ModelVersion.version == "v1").values(stage="archived")
        )

    with pytest.raises(ModelIntegrityError):
        await holder.refresh()
    assert holder.current is loaded
    red = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert LABELS[int(np.argmax(holder.current.predict(red)))] == "country"


async def test_server_starts_even_when_the_production_model_is_tampered(
    settings: Settings, registry: tuple[Database, ObjectStore]
) -> None:
    await register_model(*registry, stored_onnx=b"not the registered model")

    async with serve(create_app(settings)) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert "model v1 could not be loaded" in ready.json()["checks"]["model"]
        assert "sha256" in ready.json()["checks"]["model"]
        answer = await api.post(
            "/v1/predict", files=[("files", ("a.png", image_bytes(RED), "image/png"))]
        )
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "model_not_loaded"
        assert (await api.get("/healthz")).status_code == 200


async def test_swagger_ui_needs_no_outside_host(api: httpx.AsyncClient) -> None:
    page = await api.get("/docs")
    assert page.status_code == 200
    assert "https://" not in page.text  # no CDN: works offline and behind firewalls
    assets = re.findall(r'"(/static-offline-docs/[^"]+\.(?:js|css))"', page.text)
    assert len(assets) == 2
    for asset in assets:
        response = await api.get(asset)
        assert response.status_code == 200
        assert len(response.content) > 10_000
