"""The naive server of the serving benchmark: one ``session.run`` per request, no batching.

What batching is measured against: FastAPI on uvicorn (as Sleeve), ``POST /v1/predict`` with
the cover as the raw body or as multipart ``files``, Sleeve's preprocessing, and the model run
once per request in a worker thread with onnxruntime's default threads.

    python bench/naive_server.py --onnx model.onnx --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import uvicorn
from benchkit import model_input, open_session, predictions
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["create_app"]


def create_app(onnx: Path, providers: Sequence[str]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.session = open_session(onnx, providers)
        yield

    app = FastAPI(lifespan=lifespan, openapi_url=None)

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        payloads = await _payloads(request)
        probabilities = await asyncio.to_thread(_run, request.app.state.session, payloads)
        return JSONResponse(predictions(probabilities))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _payloads(request: Request) -> list[bytes]:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:
            uploads = [item for item in form.getlist("files") if not isinstance(item, str)]
            return [await upload.read() for upload in uploads]
    return [await request.body()]


def _run(session: ort.InferenceSession, payloads: list[bytes]) -> np.ndarray:
    batch = np.stack([model_input(data) for data in payloads])
    outputs = session.run(None, {session.get_inputs()[0].name: batch})
    return np.asarray(outputs[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--providers", default="CPUExecutionProvider")
    args = parser.parse_args()
    app = create_app(args.onnx, args.providers.split(","))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
