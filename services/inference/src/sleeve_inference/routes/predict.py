"""``POST /v1/predict``: genres for uploaded covers (multipart, or one image as the body)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile

from sleeve_inference.batcher import BatchResult
from sleeve_inference.deps import ServingDep, SettingsDep, UrlFetcherDep
from sleeve_inference.errors import ApiError, error_responses
from sleeve_inference.predictor import Predictor
from sleeve_inference.schemas import (
    GenreScore,
    ImagePrediction,
    ItemError,
    PredictResponse,
    PredictUrlsRequest,
    PredictUrlsResponse,
    Timing,
    UrlPrediction,
)
from sleeve_inference.serving import DeadlineExceeded
from sleeve_inference.url_fetch import UrlFetchError

__all__ = ["answer", "router", "until_answered"]

router = APIRouter(tags=["predict"])

T = TypeVar("T")

# One image as the whole body: no multipart framing to parse.
RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")

_UNAVAILABLE = (
    503,
    "no model is loaded yet (the message says how the first model's training goes, e.g. "
    "`training the first model: step 3 of 4, training the model, 62% done, about 1 min left`, "
    "or why it failed and how to fix it), the server is at capacity (Retry-After), or the "
    "request ran past its deadline",
)
_ERRORS = error_responses(
    (400, "malformed multipart"),
    (413, "an image, the request or its total pixels are too large, or too many images"),
    (415, "the body is neither multipart with `files` nor one image"),
    (422, "a file is not a usable image, or a parameter is out of range"),
    _UNAVAILABLE,
)
_IMAGE = {"type": "string", "contentMediaType": "application/octet-stream"}
# The body is read by the handler (multipart `files`, or one raw image), so it is described
# here rather than by parameters: `files` is required whenever the body is multipart.
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "minItems": 1,
                            "items": _IMAGE,
                            "description": "one or more cover images (JPEG, PNG, WebP, GIF, "
                            "BMP, TIFF)",
                        }
                    },
                }
            },
            **{kind: {"schema": _IMAGE} for kind in RAW_IMAGE_TYPES},
        },
    }
}


@router.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_BODY)
async def predict(
    request: Request,
    serving: ServingDep,
    settings: SettingsDep,
    top_k: Annotated[int | None, Query(ge=1, le=100, description="genres per image")] = None,
) -> Response:
    """Genre probabilities for each cover, best first.

    Send covers as multipart `files`, or one cover as the raw body with its image
    `Content-Type` (cheaper: no multipart parsing).
    """
    started = time.perf_counter()
    names, payloads = await _payloads(request, settings.max_upload_bytes)
    if len(payloads) > settings.max_images_per_request:
        raise ApiError(
            413, "too_many_images", f"at most {settings.max_images_per_request} images per request"
        )
    serving.model()  # 503 now, before any work, when nothing is served
    with serving.admit(len(payloads)):
        serving.check_pixels(payloads)
        result = await until_answered(request, settings.request_deadline_s, serving.run(payloads))
    for index, error in enumerate(result.errors):
        if error is not None:
            raise ApiError(422, "invalid_image", f"file {index} ({names[index]!r}): {error}")
    # Serialised here: the model was built from validated parts, and FastAPI would validate
    # it once more (a measurable share of the event loop's time per request under load).
    body = answer(result, names, k=top_k or settings.top_k, started=started)
    return Response(body.model_dump_json(), media_type="application/json")


@router.post(
    "/v1/predict/urls",
    response_model=PredictUrlsResponse,
    responses=error_responses(
        400,
        (
            413,
            "more URLs than SLEEVE_MAX_IMAGES_PER_REQUEST, too many pixels, or a body over "
            "the size limit",
        ),
        (422, "the body is not a JSON object with a list of `urls`"),
        _UNAVAILABLE,
    ),
)
async def predict_urls(
    request: Request,
    body: PredictUrlsRequest,
    serving: ServingDep,
    settings: SettingsDep,
    fetcher: UrlFetcherDep,
) -> PredictUrlsResponse:
    """Fetch each image URL (http/https, public addresses only) and predict its genres.

    A URL that cannot be fetched or is not an image gets an `error` in its item; the others
    are answered as usual.
    """
    started = time.perf_counter()
    if len(body.urls) > settings.max_images_per_request:
        raise ApiError(
            413, "too_many_images", f"at most {settings.max_images_per_request} URLs per request"
        )
    serving.model()
    with serving.admit(len(body.urls)):
        fetched = await until_answered(
            request,
            settings.request_deadline_s,
            asyncio.gather(*(fetcher.fetch(url) for url in body.urls), return_exceptions=True),
        )
        errors: dict[int, ItemError] = {}
        payloads: dict[int, bytes] = {}
        for index, outcome in enumerate(fetched):
            if isinstance(outcome, UrlFetchError):
                errors[index] = ItemError(code=outcome.kind, message=str(outcome))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                payloads[index] = outcome
        result = None
        if payloads:
            serving.check_pixels(list(payloads.values()))
            result = await until_answered(
                request, settings.request_deadline_s, serving.run(list(payloads.values()))
            )
    rows: dict[int, np.ndarray] = {}
    if result is not None:
        for index, row, error in zip(payloads, result.probabilities, result.errors, strict=True):
            if error is None:
                rows[index] = row
            else:
                errors[index] = ItemError(code="invalid_image", message=str(error))
    predictor = result.predictor if result else serving.model()
    k = min(body.top_k or settings.top_k, len(predictor.labels))
    predictions = []
    for index, url in enumerate(body.urls):
        genres = _genres(predictor, rows[index], k) if index in rows else []
        predictions.append(
            UrlPrediction(
                url=url,
                top_genre=genres[0].genre if genres else None,
                genres=genres,
                error=errors.get(index),
            )
        )
    return PredictUrlsResponse(
        model_version=predictor.version,
        model_variant=predictor.variant,
        predictions=predictions,
        timing=_timing(started, result),
    )


async def _payloads(request: Request, max_bytes: int) -> tuple[list[str | None], list[bytes]]:
    """Names and bytes of the uploaded images, each checked against ``max_bytes``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in RAW_IMAGE_TYPES:
        body = await request.body()
        if len(body) > max_bytes:
            raise ApiError(413, "image_too_large", f"the image is over {max_bytes} bytes")
        return [None], [body]
    if content_type != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with the images in `files`, or one image as the body "
            f"with Content-Type {', '.join(RAW_IMAGE_TYPES)}",
        )
    async with request.form() as form:  # a malformed body: Starlette's 400
        files = form.getlist("files")
        if not files:
            raise ApiError(422, "invalid_request", "files: send one or more images in `files`")
        names: list[str | None] = []
        payloads = []
        for index, upload in enumerate(files):
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    422, "invalid_request", f"files: part {index} is a text field, not a file"
                )
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ApiError(
                    413,
                    "image_too_large",
                    f"file {index} ({upload.filename!r}) is over {max_bytes} bytes",
                )
            names.append(upload.filename)
            payloads.append(data)
    return names, payloads


async def until_answered(request: Request, deadline_s: float, work: Awaitable[T]) -> T:
    """``work``'s result; cancelled when the deadline passes (``DeadlineExceeded``, a 503) or
    the client goes away (a 499 nobody reads), so queued images then cost no model run."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        async with asyncio.timeout(deadline_s):
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        raise DeadlineExceeded(f"no answer within {deadline_s} s") from None
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if not task.done():
        raise ApiError(499, "client_closed_request", "the client closed the connection")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so ``receive`` waits)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def answer(
    result: BatchResult, names: list[str | None], *, k: int, started: float
) -> PredictResponse:
    """The response for ``result``'s rows, one per name."""
    predictor = result.predictor
    k = min(k, len(predictor.labels))
    predictions = []
    for name, row in zip(names, result.probabilities, strict=True):
        genres = _genres(predictor, row, k)
        predictions.append(ImagePrediction(filename=name, top_genre=genres[0].genre, genres=genres))
    return PredictResponse(
        model_version=predictor.version,
        model_variant=predictor.variant,
        predictions=predictions,
        timing=_timing(started, result),
    )


def _genres(predictor: Predictor, row: np.ndarray, k: int) -> list[GenreScore]:
    return [GenreScore(genre=g, probability=round(p, 6)) for g, p in predictor.top_k(row, k)]


def _timing(started: float, result: BatchResult | None) -> Timing:
    total_s = time.perf_counter() - started
    decode_s = result.decode_s if result else 0.0
    return Timing(
        decode_ms=round(decode_s * 1000, 2),
        inference_ms=round((total_s - decode_s) * 1000, 2),
        total_ms=round(total_s * 1000, 2),
        batch_size=result.batch_size if result else 0,
    )
