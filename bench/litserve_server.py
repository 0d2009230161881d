"""The peer of the serving benchmark: LitServe with its own dynamic batching.

The same ONNX model, Sleeve's preprocessing (decoded in ``decode_request``, as LitServe's
examples do) and the same input as Sleeve: ``POST /v1/predict`` with the cover as the raw body
(``--body raw``) or as multipart ``files`` (``--body multipart``). Each answer lists every
genre per image. ``GET /health`` says when the workers are up.

    python bench/litserve_server.py --onnx model.onnx --port 8002 --max-batch-size 8
"""

# No `from __future__ import annotations` here: LitServe reads the annotation of
# `decode_request`'s argument at run time and hands it to FastAPI as the endpoint's type.

import argparse
import logging
from pathlib import Path
from typing import Annotated, Any

import litserve as ls
import numpy as np
from benchkit import model_input, open_session, predictions, usable_cores
from fastapi import Body, File

__all__ = ["main"]

RawBody = Annotated[bytes, Body(media_type="image/jpeg")]
Uploads = Annotated[list[bytes], File(alias="files")]


class _CoverAPI(ls.LitAPI):
    """Each request is a list of decoded covers; a batch runs the model once on all of them."""

    def __init__(
        self, onnx: Path, providers: list[str], intra_threads: int, **batching: Any
    ) -> None:
        super().__init__(api_path="/v1/predict", **batching)
        self._onnx = onnx
        self._providers = providers
        self._intra_threads = intra_threads

    def setup(self, device: str) -> None:
        self._session = open_session(self._onnx, self._providers, intra_threads=self._intra_threads)
        self._input = self._session.get_inputs()[0].name

    def batch(self, inputs: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        return inputs

    def predict(self, requests: list[list[np.ndarray]]) -> list[np.ndarray]:
        images = np.stack([image for request in requests for image in request])
        probabilities = np.asarray(self._session.run(None, {self._input: images})[0])
        ends = np.cumsum([len(request) for request in requests])[:-1]
        return list(np.split(probabilities, ends))

    def unbatch(self, output: list[np.ndarray]) -> list[np.ndarray]:
        return output

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return predictions(output)


class _RawAPI(_CoverAPI):
    def decode_request(self, request: RawBody) -> list[np.ndarray]:
        return [model_input(request)]


class _MultipartAPI(_CoverAPI):
    def decode_request(self, request: Uploads) -> list[np.ndarray]:
        return [model_input(data) for data in request]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--providers", default="CPUExecutionProvider")
    parser.add_argument("--body", choices=("raw", "multipart"), default="raw")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.002, help="seconds")
    parser.add_argument("--workers", type=int, default=1, help="inference processes")
    parser.add_argument(
        "--intra-threads", type=int, help="onnxruntime threads per worker (default: cores/workers)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    api_class = _RawAPI if args.body == "raw" else _MultipartAPI
    intra_threads = args.intra_threads or max(1, usable_cores() // args.workers)
    api = api_class(
        args.onnx,
        args.providers.split(","),
        intra_threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
    )
    server = ls.LitServer(
        api, accelerator="cpu", devices=1, workers_per_device=args.workers, fast_queue=True
    )
    server.run(
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        generate_client_file=False,
        access_log=False,
    )


if __name__ == "__main__":
    main()
