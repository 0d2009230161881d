"""Response bodies of the API, with examples for the OpenAPI page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "GenreScore",
    "ImagePrediction",
    "JobAccepted",
    "JobView",
    "ModelDetail",
    "ModelSummary",
    "PredictResponse",
    "Timing",
]


class GenreScore(BaseModel):
    genre: str = Field(examples=["rock"])
    probability: float = Field(ge=0, le=1, examples=[0.62])


class ImagePrediction(BaseModel):
    filename: str | None = Field(examples=["cover.jpg"])
    top_genre: str = Field(examples=["rock"])
    genres: list[GenreScore]


class Timing(BaseModel):
    decode_ms: float
    inference_ms: float
    total_ms: float


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
