"""The Open Inference Protocol (KServe V2) under ``/v2``, spoken by the real ``tritonclient``.

uvicorn serves the app on a free loopback port from a thread with its own loop (as in
``test_page``), once for the module, over SQLite: the protocol does not touch the database
past loading the model, and ``test_predict`` covers PostgreSQL. ``tritonclient.http.aio``
(aiohttp, part of ``tritonclient[http]``) talks to it from the test's loop; malformed requests
go through plain httpx. The serving core's refusals (capacity, deadline, pixel budget, no
model) need their own settings or state, so those tests serve an app in-process instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http.aio as triton_http
from fastapi import FastAPI
from support import DISCOGS5, make_settings
from tritonclient.utils import InferenceServerException

from sleeve_common.db import Database, upgrade_database
from sleeve_common.settings import Settings
from sleeve_common.store import open_store
from sleeve_inference.app import create_app

from .harness import (
    API_KEY,
    LABELS,
    LIMITS,
    Registered,
    image_bytes,
    noise_png,
    register_model,
    serve,
    serve_on_socket,
)

# For the tests that serve their own app through conftest's fixtures.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

COLOURS = {"country": (255, 0, 0), "rock": (0, 255, 0), "pop": (0, 0, 255)}
RED = COLOURS["country"]
SIZE = 224
HEADER_LENGTH = "Inference-Header-Content-Length"
INFER = "/v2/models/sleeve/infer"


@pytest.fixture(scope="module")
async def v2_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """``host:port`` of the app, the tiny model registered as v1, served by uvicorn."""
    tmp_path = tmp_path_factory.mktemp("v2")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}"
    await asyncio.to_thread(upgrade_database, database_url)
    settings = make_settings(tmp_path, database_url, api_key=API_KEY, **LIMITS)
    db = Database(database_url)
    try:
        await register_model(db, open_store(settings))
    finally:
        await db.aclose()
    async with serve_on_socket(create_app(settings)) as address:
        yield address


@pytest.fixture
async def triton(v2_server: str) -> AsyncIterator[triton_http.InferenceServerClient]:
    """The real V2 client over the served app."""
    async with triton_http.InferenceServerClient(v2_server) as client:
        yield client


@pytest.fixture
async def v2_http(v2_server: str) -> AsyncIterator[httpx.AsyncClient]:
    """Plain HTTP to the served app, for what a V2 client would never send."""
    async with httpx.AsyncClient(base_url=f"http://{v2_server}", timeout=30) as client:
        yield client


# --- Helpers ---------------------------------------------------------------------------------


def cover(genre: str) -> bytes:
    """A real Discogs cover from the shared kit."""
    return sorted((DISCOGS5 / genre).glob("*.jpg"))[0].read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bytes_input(payloads: list[bytes], *, binary: bool = True) -> triton_http.InferInput:
    """``image`` as a BYTES tensor: raw bytes (binary extension) or base64 strings (JSON)."""
    tensor = triton_http.InferInput("image", [len(payloads)], "BYTES")
    elements = payloads if binary else [base64.b64encode(p) for p in payloads]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def pixels_input(pixels: np.ndarray, *, binary: bool = True) -> triton_http.InferInput:
    tensor = triton_http.InferInput("image", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def solid(*colours: tuple[int, int, int]) -> np.ndarray:
    """Model inputs of one colour each, uint8 [N, 224, 224, 3]."""
    return np.stack([np.full((SIZE, SIZE, 3), colour, dtype=np.uint8) for colour in colours])


async def infer(
    client: triton_http.InferenceServerClient,
    tensor: triton_http.InferInput,
    *,
    binary_output: bool | None = None,
    version: str = "",
) -> triton_http.InferResult:
    """``tritonclient``'s infer; ``binary_output=None`` leaves its default (binary)."""
    outputs = (
        None
        if binary_output is None
        else [triton_http.InferRequestedOutput("probabilities", binary_data=binary_output)]
    )
    return await client.infer("sleeve", [tensor], model_version=version, outputs=outputs)


def genres(result: triton_http.InferResult) -> list[str]:
    """The top genre of each row, named by the response's ``labels`` parameter."""
    labels = result.get_response()["parameters"]["labels"].split(",")
    return [labels[i] for i in result.as_numpy("probabilities").argmax(axis=1)]


def json_infer(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """httpx arguments for a JSON inference request."""
    return {"json": {"inputs": list(inputs), **extra}}


def image_tensor(
    data: list[Any], *, shape: list[int] | None = None, datatype: str = "BYTES"
) -> dict[str, Any]:
    return {
        "name": "image",
        "datatype": datatype,
        "shape": [len(data)] if shape is None else shape,
        "data": data,
    }


def binary_infer(
    tensor: dict[str, Any], data: bytes, *, header_length: int | None = None
) -> dict[str, Any]:
    """httpx arguments for a request with the binary tensor data extension."""
    header = json.dumps({"inputs": [tensor]}).encode()
    length = len(header) if header_length is None else header_length
    return {"content": header + data, "headers": {HEADER_LENGTH: str(length)}}


def assert_v2_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """V2's error body: only ``error``, a string; returns it."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    for fragment in fragments:
        assert fragment in body["error"]
    return str(body["error"])


async def assert_still_serving(client: httpx.AsyncClient) -> None:
    response = await client.post(INFER, **json_infer(image_tensor([b64(image_bytes(RED))])))
    assert response.status_code == 200, response.text
    assert np.argmax(response.json()["outputs"][0]["data"]) == LABELS.index("country")


# --- Server and model metadata, health -------------------------------------------------------


async def test_server_is_live_ready_and_describes_itself(
    triton: triton_http.InferenceServerClient,
) -> None:
    assert await triton.is_server_live()
    assert await triton.is_server_ready()
    metadata = await triton.get_server_metadata()
    assert metadata == {"name": "sleeve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


async def test_model_metadata_names_the_tensors_and_labels(
    triton: triton_http.InferenceServerClient,
) -> None:
    metadata = await triton.get_model_metadata("sleeve")
    assert metadata == {
        "name": "sleeve",
        "versions": ["v1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]}],
        "parameters": {"labels": ",".join(LABELS), "image_uint8_shape": "[-1, 224, 224, 3]"},
    }
    assert await triton.get_model_metadata("sleeve", "v1") == metadata


async def test_model_readiness_by_name_and_version(
    triton: triton_http.InferenceServerClient, v2_http: httpx.AsyncClient
) -> None:
    assert await triton.is_model_ready("sleeve")
    assert await triton.is_model_ready("sleeve", "v1")
    assert not await triton.is_model_ready("sleeve", "v2")
    assert not await triton.is_model_ready("genre-net")
    ready = await v2_http.get("/v2/models/sleeve/ready")
    assert ready.json() == {"name": "sleeve", "ready": True}
    other = await v2_http.get("/v2/models/sleeve/versions/v2/ready")
    assert_v2_error(other, 404, "'v2' is not served", "'v1'")


async def test_the_client_reads_v2_errors(triton: triton_http.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        await triton.get_model_metadata("genre-net")
    assert unknown.value.status() == "404"
    assert "unknown model 'genre-net'" in unknown.value.message()

    with pytest.raises(InferenceServerException) as not_an_image:
        await infer(triton, bytes_input([image_bytes(RED), b"liner notes, not a cover"]))
    assert not_an_image.value.status() == "400"
    assert "element 1 is not a usable image" in not_an_image.value.message()


# --- Inference -------------------------------------------------------------------------------


async def test_encoded_images_get_their_colours_genre(
    triton: triton_http.InferenceServerClient,
) -> None:
    payloads = [image_bytes(COLOURS[name]) for name in LABELS]
    result = await infer(triton, bytes_input(payloads))  # binary in and out: the defaults

    assert genres(result) == LABELS
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    response = result.get_response()
    assert response["model_name"] == "sleeve" and response["model_version"] == "v1"
    assert response["outputs"][0]["parameters"]["binary_data_size"] == probabilities.nbytes


async def test_probabilities_equal_what_v1_predict_answers(
    triton: triton_http.InferenceServerClient, v2_http: httpx.AsyncClient
) -> None:
    payloads = [cover("Rock"), cover("Pop"), cover("Country"), image_bytes((40, 90, 200))]
    result = await infer(triton, bytes_input(payloads), binary_output=False, version="v1")

    v1 = await v2_http.post(
        "/v1/predict",
        params={"top_k": len(LABELS)},
        files=[("files", (f"{i}.img", data)) for i, data in enumerate(payloads)],
    )
    assert v1.status_code == 200, v1.text
    expected = [
        [{g["genre"]: g["probability"] for g in p["genres"]}[label] for label in LABELS]
        for p in v1.json()["predictions"]
    ]
    assert "binary_data_size" not in result.get_output("probabilities").get("parameters", {})
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


async def test_base64_strings_in_a_json_body(triton: triton_http.InferenceServerClient) -> None:
    payloads = [image_bytes(COLOURS["pop"]), image_bytes(COLOURS["rock"])]
    as_json = await infer(triton, bytes_input(payloads, binary=False), binary_output=False)
    as_binary = await infer(triton, bytes_input(payloads))

    assert genres(as_json) == ["pop", "rock"]
    np.testing.assert_allclose(
        as_json.as_numpy("probabilities"), as_binary.as_numpy("probabilities"), atol=1e-7
    )


async def test_uint8_pixels_give_what_the_encoded_images_give(
    triton: triton_http.InferenceServerClient,
) -> None:
    colours = [COLOURS[name] for name in LABELS]
    encoded = await infer(triton, bytes_input([image_bytes(c) for c in colours]))
    pixels = await infer(triton, pixels_input(solid(*colours)), binary_output=True)
    one_in_json = await infer(triton, pixels_input(solid(colours[1]), binary=False))

    assert genres(pixels) == LABELS
    np.testing.assert_allclose(
        pixels.as_numpy("probabilities"), encoded.as_numpy("probabilities"), atol=1e-6
    )
    np.testing.assert_allclose(
        one_in_json.as_numpy("probabilities"), pixels.as_numpy("probabilities")[1:2], atol=1e-6
    )


async def test_json_response_has_the_protocols_fields(v2_http: httpx.AsyncClient) -> None:
    tensor = image_tensor([[b64(image_bytes(COLOURS["rock"]))]], shape=[1, 1])
    response = await v2_http.post(
        "/v2/models/sleeve/versions/v1/infer", **json_infer(tensor, id="request-7")
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    [output] = body.pop("outputs")
    assert body == {
        "model_name": "sleeve",
        "model_version": "v1",
        "id": "request-7",
        "parameters": {"labels": ",".join(LABELS)},
    }
    assert output["name"] == "probabilities" and output["datatype"] == "FP32"
    assert output["shape"] == [1, len(LABELS)]
    assert np.argmax(output["data"]) == LABELS.index("rock")


# --- Refusals, in V2's error body -------------------------------------------------------------

_MAX = LIMITS["max_images_per_request"]
_PNG = b64(image_bytes(RED))


def _bad(
    request: Callable[[], dict[str, Any]],
    status: int,
    *fragments: str,
    path: str = INFER,
    method: str = "POST",
    id: str,
) -> Any:
    return pytest.param(method, path, request, status, fragments, id=id)


BAD_REQUESTS = [
    _bad(lambda: {"content": b'{"inputs": ['}, 400, "not valid JSON", id="malformed-json"),
    _bad(lambda: {"json": {"outputs": []}}, 400, "inputs", "Field required", id="no-inputs"),
    _bad(
        lambda: json_infer(image_tensor([0.5], datatype="FP32")),
        400,
        "datatype FP32",
        "BYTES",
        id="wrong-datatype",
    ),
    _bad(
        lambda: json_infer({**image_tensor([_PNG]), "name": "cover"}),
        400,
        "one input, 'image'",
        id="wrong-input-name",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG]), image_tensor([_PNG])),
        400,
        "one input",
        id="two-inputs",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG, _PNG], shape=[1, 2])),
        400,
        "shape [N] or [N, 1]",
        id="bytes-shape",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG], shape=[2])),
        400,
        "shape [2] but 1 elements",
        id="shape-and-data-disagree",
    ),
    _bad(
        lambda: json_infer(image_tensor([], shape=[0])),
        400,
        "no images",
        id="no-images",
    ),
    _bad(
        lambda: json_infer(image_tensor([0] * 12, shape=[1, 2, 2, 3], datatype="UINT8")),
        400,
        "[N, 224, 224, 3]",
        id="uint8-shape",
    ),
    _bad(
        lambda: json_infer(image_tensor([1, 2, 3], shape=[1, SIZE, SIZE, 3], datatype="UINT8")),
        400,
        "integers 0-255",
        id="uint8-too-few-values",
    ),
    _bad(
        lambda: json_infer(
            image_tensor([300] * (SIZE * SIZE * 3), shape=[1, SIZE, SIZE, 3], datatype="UINT8")
        ),
        400,
        "outside 0-255",
        id="uint8-out-of-range",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG] * (_MAX + 1))),
        413,
        f"at most {_MAX} per request",
        id="too-many-images",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG, b64(b"liner notes")])),
        400,
        "element 1 is not a usable image",
        "not a recognised image format",
        id="not-an-image",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG, "not*base64"])),
        400,
        "element 1 is not valid base64",
        id="bad-base64",
    ),
    _bad(
        lambda: json_infer(image_tensor([7])),
        400,
        "element 0 is not a string of base64",
        id="number-as-bytes",
    ),
    _bad(
        lambda: json_infer(image_tensor([b64(b"\xff" * (LIMITS["max_upload_bytes"] + 1))])),
        413,
        f"element 0 is over {LIMITS['max_upload_bytes']} bytes",
        id="element-too-large",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG]), outputs=[{"name": "logits"}]),
        400,
        "one output, 'probabilities'",
        id="unknown-output",
    ),
    _bad(
        lambda: json_infer(
            image_tensor([_PNG]),
            outputs=[{"name": "probabilities", "parameters": {"classification": 2}}],
        ),
        400,
        "classification extension is not supported",
        id="classification",
    ),
    _bad(
        lambda: binary_infer(
            {"name": "image", "datatype": "BYTES", "shape": [1]}, b"", header_length=10_000
        ),
        400,
        HEADER_LENGTH,
        id="header-length-past-the-body",
    ),
    _bad(
        lambda: binary_infer(
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": 10},
            },
            b"\x05\x00\x00\x00",
        ),
        400,
        "declares 10 bytes of binary data",
        id="binary-data-short",
    ),
    _bad(
        lambda: binary_infer(
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": 6},
            },
            b"\x09\x00\x00\x00ab",
        ),
        400,
        "element 0 declares 9 bytes",
        id="bytes-element-truncated",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG])),
        404,
        "unknown model 'genre-net'",
        path="/v2/models/genre-net/infer",
        id="unknown-model",
    ),
    _bad(
        lambda: json_infer(image_tensor([_PNG])),
        404,
        "version 'v9' is not served",
        "'v1'",
        path="/v2/models/sleeve/versions/v9/infer",
        id="unknown-version",
    ),
    _bad(
        dict,
        404,
        "version 'v2' is not served",
        path="/v2/models/sleeve/versions/v2",
        method="GET",
        id="unknown-version-metadata",
    ),
    _bad(
        dict,
        404,
        "no V2 endpoint GET /v2/models/sleeve/config",
        path="/v2/models/sleeve/config",
        method="GET",
        id="unknown-endpoint",
    ),
    _bad(
        dict,
        405,
        "PUT is not allowed on /v2/health/live; it takes GET",
        path="/v2/health/live",
        method="PUT",
        id="method-of-a-get",
    ),
    _bad(
        dict,
        405,
        "GET is not allowed on /v2/models/sleeve/infer; it takes POST",
        path="/v2/models/sleeve/infer",
        method="GET",
        id="method-of-infer",
    ),
    _bad(
        dict,
        405,
        "OPTIONS is not allowed on /v2/health/ready; it takes GET",
        path="/v2/health/ready",
        method="OPTIONS",
        id="options",
    ),
]


@pytest.mark.parametrize(("method", "path", "request_args", "status", "fragments"), BAD_REQUESTS)
async def test_bad_requests_get_v2_errors_and_the_server_keeps_serving(
    v2_http: httpx.AsyncClient,
    method: str,
    path: str,
    request_args: Callable[[], dict[str, Any]],
    status: int,
    fragments: tuple[str, ...],
) -> None:
    response = await v2_http.request(method, path, **request_args())
    assert_v2_error(response, status, *fragments)
    if status == 405:
        assert response.headers["allow"] == fragments[0].rsplit("it takes ", 1)[1]
    await assert_still_serving(v2_http)


async def test_a_streamed_body_over_the_size_limit_gets_a_v2_413(
    v2_http: httpx.AsyncClient,
) -> None:
    limit = LIMITS["max_upload_bytes"] * LIMITS["max_images_per_request"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(limit // 65_536 + 2):
            yield b" " * 65_536

    response = await v2_http.post(INFER, content=chunks())
    assert_v2_error(response, 413, "request body is over")


# --- The serving core's refusals --------------------------------------------------------------


def _settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    return make_settings(tmp_path, database_url, api_key=API_KEY, **{**LIMITS, **overrides})


@sqlite_only
async def test_a_full_server_answers_503_with_retry_after(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    serving = app.state.serving
    with serving.admission.admit(serving.admission.max_images, images_per_second=0.0):
        response = await api.post(INFER, **json_infer(image_tensor([_PNG])))
    assert_v2_error(response, 503, "capacity")
    assert int(response.headers["retry-after"]) >= 1
    assert serving.admission.in_flight == 0
    await assert_still_serving(api)


@sqlite_only
async def test_a_request_past_its_deadline_gets_503(
    tmp_path: Path, database_url: str, registered: Registered
) -> None:
    settings = _settings(
        tmp_path, database_url, max_upload_bytes=4_000_000, request_deadline_s=0.001
    )
    async with serve(create_app(settings)) as api:
        response = await api.post(INFER, **json_infer(image_tensor([b64(noise_png(900))])))
        assert_v2_error(response, 503, "SLEEVE_REQUEST_DEADLINE_S")
        assert response.headers["retry-after"] == "1"


@sqlite_only
async def test_the_pixel_budget_answers_413(
    tmp_path: Path, database_url: str, registered: Registered
) -> None:
    settings = _settings(tmp_path, database_url, max_request_pixels=1_500_000)
    square = b64(image_bytes(RED, (1000, 1000)))
    async with serve(create_app(settings)) as api:
        response = await api.post(INFER, **json_infer(image_tensor([square, square])))
        assert_v2_error(response, 413, "2000000 pixels", "1500000")


@sqlite_only
async def test_without_a_model_the_server_is_live_but_not_ready(settings: Settings) -> None:
    async with serve(create_app(settings)) as api:
        assert (await api.get("/v2/health/live")).json() == {"live": True}
        ready = await api.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})
        model = await api.get("/v2/models/sleeve/ready")
        assert (model.status_code, model.json()) == (503, {"name": "sleeve", "ready": False})
        assert_v2_error(await api.get("/v2/models/sleeve"), 503)
        assert_v2_error(await api.post(INFER, **json_infer(image_tensor([_PNG]))), 503)
        assert_v2_error(await api.get("/v2/models/genre-net"), 404, "unknown model")


# --- Documentation ---------------------------------------------------------------------------


async def test_openapi_documents_the_v2_endpoints(v2_http: httpx.AsyncClient) -> None:
    paths = (await v2_http.get("/openapi.json")).json()["paths"]
    v2 = {path: item for path, item in paths.items() if path.startswith("/v2")}

    assert set(v2) == {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/versions/{model_version}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/versions/{model_version}/ready",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    }
    operations = [op for item in v2.values() for op in item.values()]
    assert all(op["tags"] == ["v2"] and op["summary"] for op in operations)
    infer_op = v2["/v2/models/{model_name}/infer"]["post"]
    body = infer_op["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["inputs"]
    assert set(body["properties"]["inputs"]["items"]["properties"]) >= {"name", "shape", "data"}
    assert set(infer_op["responses"]) == {"200", "400", "404", "413", "503", "default"}
    error_ref = infer_op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref.endswith("/V2Error")
