"""The model card: what a registered model is, what it learnt from and how well it does.

The trainer writes it as JSON beside the ONNX file (``models/run-<id>/model_card.json``,
named ``model_card`` in the version's ``report_keys``) while it registers the version; the API
serves it at ``GET /v1/models/{version}/card``. Both use this one shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sleeve_common.model_files import ModelVariant, OnnxFile

__all__ = ["CoverSource", "DatasetCard", "ModelCard"]


class CoverSource(BaseModel):
    """Covers of the dataset that one scrape run of one source stored first."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(examples=["folder"])
    scrape_run_id: int | None = Field(
        examples=[1], description="None once the scrape run's record was deleted"
    )
    covers: int = Field(examples=[1000])


class DatasetCard(BaseModel):
    """The dataset the model was trained and tested on, and where its covers came from."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(examples=["discogs5"])
    created_at: datetime
    params: dict[str, Any] = Field(
        description="how the split was built: seed, val and test fractions, genres, "
        "min and max covers per genre",
        examples=[{"seed": 0, "val_fraction": 0.1, "test_fraction": 0.1}],
    )
    counts: dict[str, dict[str, int]] = Field(
        description="covers per split (train, val, test), then per genre",
        examples=[{"train": {"pop": 800, "rock": 800}, "test": {"pop": 100, "rock": 100}}],
    )
    dropped: dict[str, Any] = Field(
        description="covers left out of the split: with several genres, conflicting "
        "near-duplicates, genres under the minimum"
    )
    sources: list[CoverSource]


class ModelCard(BaseModel):
    """Everything needed to know what a model version is and to reproduce it."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(examples=["v1"])
    training_run_id: int
    created_at: datetime
    labels: list[str] = Field(examples=[["pop", "rock"]])
    input_spec: dict[str, Any] = Field(description="sleeve_common.model_signature.input_spec()")
    metrics: dict[str, Any] = Field(
        description="the evaluation on the dataset's test split, as `GET /v1/models/{version}` "
        "shows it; `baselines` holds the simple models the run scored on the same split"
    )
    dataset: DatasetCard
    training: dict[str, Any] = Field(
        description="the training request's options and the base weights it started from"
    )
    onnx: OnnxFile
    variants: dict[str, ModelVariant] = Field(
        default_factory=dict,
        description="the fp32 file and the fp16 and int8 variants the run exported, each "
        "scored on the test split and timed on the trainer's CPU; empty when it built none",
    )
    packages: dict[str, str | None] = Field(
        description="versions of Python, Sleeve and the libraries that trained and exported it",
        examples=[{"python": "3.11.9", "tensorflow": "2.21.0", "onnxruntime": "1.23.0"}],
    )
