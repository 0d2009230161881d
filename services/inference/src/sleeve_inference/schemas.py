"""Response bodies of the API, with examples for the OpenAPI page."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "GenreScore",
    "ImagePrediction",
    "ItemError",
    "JobAccepted",
    "JobView",
    "ModelDetail",
    "ModelSummary",
    "PredictResponse",
    "PredictUrlsRequest",
    "PredictUrlsResponse",
    "Timing",
    "UrlPrediction",
]


class GenreScore(BaseModel):
    genre: str = Field(examples=["rock"])
    probability: float = Field(ge=0, le=1, examples=[0.62])


class ImagePrediction(BaseModel):
    filename: str | None = Field(examples=["cover.jpg"])
    top_genre: str = Field(examples=["rock"])
    genres: list[GenreScore]


class Timing(BaseModel):
    decode_ms: float = Field(description="decoding and resizing the images")
    inference_ms: float = Field(description="waiting for a batch and running the model")
    total_ms: float
    batch_size: int = Field(
        ge=0, description="images in the model batch this request joined (0: none ran)"
    )


class PredictUrlsRequest(BaseModel):
    """Image URLs to fetch (behind the SSRF guard) and classify."""

    model_config = ConfigDict(extra="forbid", strict=True)

    urls: list[Annotated[str, StringConstraints(min_length=1, max_length=2048)]] = Field(
        min_length=1, max_length=1024, examples=[["https://covers.example.com/a.jpg"]]
    )
    top_k: int | None = Field(default=None, ge=1, le=100, description="genres per image")


class ItemError(BaseModel):
    code: str = Field(examples=["forbidden_address"])
    message: str = Field(examples=["10.0.0.7 is a private address"])


class UrlPrediction(BaseModel):
    url: str
    top_genre: str | None = Field(examples=["rock"])
    genres: list[GenreScore]
    error: ItemError | None = Field(description="why this URL has no prediction")


class PredictUrlsResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str = Field(examples=["v1"])
    predictions: list[UrlPrediction]
    timing: Timing


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str = Field(examples=["v1"])
    predictions: list[ImagePrediction]
    timing: Timing


class ModelSummary(BaseModel):
    version: str
    stage: str
    labels: list[str]
    accuracy: float | None
    macro_f1: float | None
    created_at: datetime


class ModelDetail(ModelSummary):
    metrics: dict[str, Any]
    input_spec: dict[str, Any]
    onnx_sha256: str
    onnx_bytes: int
    confusion_matrix_url: str | None
    training_curves_url: str | None


class JobAccepted(BaseModel):
    id: int = Field(examples=[12])
    status: str = Field(examples=["queued"])
    url: str = Field(examples=["/v1/training-runs/12"])


class JobView(BaseModel):
    id: int
    kind: str
    status: str = Field(examples=["running"])
    progress: float = Field(ge=0, le=1, examples=[0.4])
    progress_message: str | None = Field(examples=["head epoch 4/10: val accuracy 0.312"])
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
