"""The tiny real ONNX model the API tests serve, and how to register and serve it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import onnx
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from support import ThreadedUvicorn

from sleeve_common.db import Database
from sleeve_common.model_signature import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, input_spec
from sleeve_common.models import ModelVersion
from sleeve_common.registry import register_model_version
from sleeve_common.store import ObjectStore

LABELS = ["country", "rock", "pop"]
API_KEY = "a-real-test-key-1234567890"
INPUT_SPEC = input_spec()
METRICS = {"accuracy": 0.5, "macro_f1": 0.4}
# Limits small enough to pass in a test, large enough for a real 300x300 cover.
LIMITS: dict[str, Any] = {
    "max_upload_bytes": 200_000,
    "max_images_per_request": 4,
    "max_image_pixels": 1_000_000,
}
# Mean channel value (0..255) → logit: R → country, G → rock, B → pop. The bias breaks
# ties on grey images in favour of rock.
_WEIGHT = np.array([[0.02, 0.0, 0.0], [0.0, 0.02, 0.0], [0.0, 0.0, 0.02]], dtype=np.float32)
_BIAS = np.array([0.0, 0.1, -0.1], dtype=np.float32)


def build_onnx_model(bias: np.ndarray = _BIAS) -> bytes:
    """The tiny colour classifier as ONNX bytes (opset 17, dynamic batch).

    Another ``bias`` gives another model (other bytes, other sha256), same labels.
    """
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels"], ["means"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["means", "weight"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1),
        ],
        name="colour_classifier",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", *INPUT_SHAPE])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(LABELS)])],
        initializer=[
            numpy_helper.from_array(_WEIGHT, "weight"),
            numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sleeve-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def noise_png(side: int) -> bytes:
    """A ``side``² PNG of random pixels (slow to decode, hard to compress)."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    """A solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Registered:
    version: ModelVersion
    onnx: bytes


async def register_model(
    db: Database,
    store: ObjectStore,
    *,
    bias: np.ndarray = _BIAS,
    stored_onnx: bytes | None = None,
    metrics: dict[str, Any] = METRICS,
    images: Sequence[str] = ("confusion_matrix",),
) -> Registered:
    """Store the tiny model and a PNG per report image in ``images`` and register them. The
    n-th image is white, (32 + n)x32 pixels: a test can tell which one it got.

    ``stored_onnx`` puts other bytes under the key than the ones the registry's sha256
    describes (a tampered or corrupted store).
    """
    data = build_onnx_model(bias)
    sha = hashlib.sha256(data).hexdigest()
    onnx_key = f"models/{sha[:16]}/model.onnx"
    await store.put(onnx_key, data if stored_onnx is None else stored_onnx)
    report_keys = {name: f"models/{sha[:16]}/{name}.png" for name in images}
    for n, key in enumerate(report_keys.values()):
        await store.put(key, image_bytes((255, 255, 255), (32 + n, 32)))
    version = await register_model_version(
        db=db,
        training_run_id=None,
        labels=list(LABELS),
        input_spec=INPUT_SPEC,
        metrics=metrics,
        onnx_key=onnx_key,
        onnx_sha256=sha,
        onnx_bytes=len(data),
        report_keys=report_keys,
    )
    return Registered(version=version, onnx=data)


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client over ``app`` with its lifespan (startup and shutdown) running."""
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def serve_on_socket(app: FastAPI) -> AsyncIterator[str]:
    """``host:port`` of ``app`` (lifespan and all) served by uvicorn on a free loopback port.

    The socket is bound first, so the port is never raced for. uvicorn runs in its own thread
    and loop: it installs no signal handlers there, and a failed startup ends the thread, not
    the test session.
    """
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", ws="none", log_config=None, access_log=False)
    server = ThreadedUvicorn(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        await asyncio.to_thread(server.startup_done.wait, 60)
        assert server.started, "the app did not start; see the captured log"
        host, port = sock.getsockname()[:2]
        yield f"{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 60)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop within 60 s"
