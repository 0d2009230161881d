"""``POST /v1/predict``: genres for uploaded covers."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Query, Request, UploadFile

from sleeve_common.images import InvalidImage, decode_image, to_model_input
from sleeve_inference.deps import ModelsDep, SettingsDep
from sleeve_inference.errors import ApiError
from sleeve_inference.model import LoadedModel
from sleeve_inference.schemas import GenreScore, ImagePrediction, PredictResponse, Timing

__all__ = ["router"]

router = APIRouter(tags=["predict"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "an image or the request is too large"},
    422: {"description": "a file is not a usable image, or a parameter is out of range"},
    503: {"description": "no model is loaded yet"},
}


@router.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS)
async def predict(
    request: Request,
    files: Annotated[
        list[UploadFile], File(description="one or more cover images (JPEG, PNG, WebP)")
    ],
    models: ModelsDep,
    settings: SettingsDep,
    top_k: Annotated[int | None, Query(ge=1, le=100, description="genres per image")] = None,
) -> PredictResponse:
    """Genre probabilities for each uploaded cover, best first."""
    started = time.perf_counter()
    model = await models.get()
    if model is None:
        raise ApiError(503, "model_not_loaded", models.last_error or "no model is loaded yet")
    if len(files) > settings.max_images_per_request:
        raise ApiError(
            413, "too_many_images", f"at most {settings.max_images_per_request} images per request"
        )
    payloads = []
    for index, upload in enumerate(files):
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(
                413,
                "image_too_large",
                f"file {index} ({upload.filename!r}) is over {settings.max_upload_bytes} bytes",
            )
        payloads.append(data)
    batch = await asyncio.to_thread(
        _decode_all, payloads, [f.filename for f in files], settings.max_image_pixels
    )
    decoded = time.perf_counter()
    probabilities = await asyncio.to_thread(model.predict, batch)
    inferred = time.perf_counter()
    k = min(top_k or settings.top_k, len(model.labels))
    request.app.state.metrics.images_predicted.inc(len(files))
    return PredictResponse(
        model_version=model.version,
        predictions=[
            _prediction(model, row, upload.filename, k)
            for row, upload in zip(probabilities, files, strict=True)
        ],
        timing=Timing(
            decode_ms=round((decoded - started) * 1000, 2),
            inference_ms=round((inferred - decoded) * 1000, 2),
            total_ms=round((time.perf_counter() - started) * 1000, 2),
        ),
    )


def _decode_all(payloads: list[bytes], names: list[str | None], max_pixels: int) -> np.ndarray:
    images = []
    for index, (data, name) in enumerate(zip(payloads, names, strict=True)):
        try:
            images.append(to_model_input(decode_image(data, max_pixels=max_pixels)))
        except InvalidImage as exc:
            raise ApiError(422, "invalid_image", f"file {index} ({name!r}): {exc}") from None
    return np.stack(images)


def _prediction(
    model: LoadedModel, row: np.ndarray, filename: str | None, k: int
) -> ImagePrediction:
    order = np.argsort(row)[::-1][:k]
    genres = [GenreScore(genre=model.labels[i], probability=round(float(row[i]), 6)) for i in order]
    return ImagePrediction(filename=filename, top_genre=genres[0].genre, genres=genres)
