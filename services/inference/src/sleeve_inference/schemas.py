"""Response bodies of the API, with examples for the OpenAPI page."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sleeve_common.model_files import ModelVariant, ServedVariant
from sleeve_common.registry import PromotionDecision
from sleeve_common.strict import JsonIntOrNone
from sleeve_common.training_progress import TrainingProgress

# A model version as the registry names them (``v1``, ``v2``, ...) or could: what does not
# match gets 422 before any query. PostgreSQL cannot even compare a string holding NUL (a 500),
# and a 60 KB name came back whole in the 404's message.
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

__all__ = [
    "VERSION_PATTERN",
    "BaselineScores",
    "CalibrationBin",
    "ClassScores",
    "GenreScore",
    "ImagePrediction",
    "ItemError",
    "JobAccepted",
    "JobView",
    "ModelDetail",
    "ModelMetrics",
    "ModelSummary",
    "PredictResponse",
    "PredictUrlsRequest",
    "PredictUrlsResponse",
    "ScoringJobRequest",
    "ScoringJobView",
    "ScrapeJobView",
    "ScrapeRunView",
    "Timing",
    "TrainingJobView",
    "TrainingRunView",
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
    top_k: JsonIntOrNone = Field(default=None, ge=1, le=100, description="genres per image")


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
    model_variant: ServedVariant = Field(
        examples=["fp32"],
        description="the version's file that answered: its fp32 export, or the fp16 or int8 "
        "variant SLEEVE_MODEL_VARIANT names (fp32 when the version has none)",
    )
    predictions: list[UrlPrediction]
    timing: Timing


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str = Field(examples=["v1"])
    model_variant: ServedVariant = Field(
        examples=["fp32"],
        description="the version's file that answered: its fp32 export, or the fp16 or int8 "
        "variant SLEEVE_MODEL_VARIANT names (fp32 when the version has none)",
    )
    predictions: list[ImagePrediction]
    timing: Timing


class ModelSummary(BaseModel):
    version: str
    stage: str
    labels: list[str]
    accuracy: float | None
    macro_f1: float | None
    created_at: datetime
    images: dict[str, str] = Field(
        description="links to the version's report images (PNG, each titled with the "
        "version) by name: `confusion_matrix`, `training_curves`, `reliability_diagram`, "
        "`cover_grid`; only those it has",
        examples=[{"confusion_matrix": "http://localhost:8000/v1/models/v1/confusion-matrix.png"}],
    )
    card_url: str | None = Field(
        description="the version's model card; null for a version registered without one",
        examples=["http://localhost:8000/v1/models/v1/card"],
    )


class ClassScores(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int = Field(description="test covers of this genre")


class CalibrationBin(BaseModel):
    """One of the 15 equal-width confidence bins of the reliability diagram, (lower, upper]."""

    lower: float
    upper: float
    count: int = Field(description="test covers whose top probability falls in the bin")
    confidence: float | None = Field(description="their mean top probability; null if none")
    accuracy: float | None = Field(description="the share of them answered right; null if none")


class BaselineScores(BaseModel):
    """A simple baseline's scores on the same test split; other figures it has pass through."""

    model_config = ConfigDict(extra="allow")

    accuracy: float | None = None
    macro_f1: float | None = None


class ModelMetrics(BaseModel):
    """The version's evaluation on its test split. A figure the version's trainer did not
    record (an older version) is null; other figures it recorded pass through."""

    model_config = ConfigDict(extra="allow")

    accuracy: float | None = Field(None, description="top-1 accuracy")
    macro_f1: float | None = Field(None, description="F1 averaged over genres, unweighted")
    top2_accuracy: float | None = Field(None, description="true genre among the top 2")
    top3_accuracy: float | None = Field(None, description="true genre among the top 3")
    log_loss: float | None = Field(
        None,
        description="mean of -ln p(true genre), p clipped to [1e-15, 1] (natural log)",
    )
    expected_calibration_error: float | None = Field(
        None,
        description="sum over the 15 confidence bins of (covers in bin / covers) * "
        "|accuracy - mean confidence|; 0 is perfectly calibrated",
    )
    calibration_bins: list[CalibrationBin] | None = None
    per_class: dict[str, ClassScores] | None = Field(None, description="by genre")
    confusion_matrix: list[list[int]] | None = Field(
        None, description="counts; rows are true genres, columns predicted ones, in label order"
    )
    baselines: dict[str, BaselineScores] | None = Field(
        None,
        description="simple baselines trained and scored on the same split, by name",
        examples=[{"colour_histogram": {"accuracy": 0.31, "macro_f1": 0.29}}],
    )
    test_size: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    export_max_abs_diff: float | None = Field(
        None, description="largest difference between the ONNX and Keras outputs"
    )


class ModelDetail(ModelSummary):
    """A version with its full evaluation report: the figures in ``metrics``, the images
    linked in ``images``."""

    metrics: ModelMetrics
    input_spec: dict[str, Any]
    onnx_sha256: str
    onnx_bytes: int
    promotion: PromotionDecision | None = Field(
        description="the automatic promotion's decision when the version was registered "
        "(SLEEVE_AUTO_PROMOTE), with both models' figures on production's test covers; null "
        "when none was made"
    )
    variants: dict[str, ModelVariant] = Field(
        description="its ONNX files by name when its training run exported variants "
        "(`sleeve train --variants fp16,int8`): `fp32` (its own file) and each variant, with "
        "the file's key, sha256 and size, its top-1 and macro-F1 on the test split, its "
        "agreement with fp32 and its images/s at batch 1 and 32 on the trainer's CPU, all "
        "measured in the same run; empty when it has none. SLEEVE_MODEL_VARIANT picks the one "
        "the server runs"
    )


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


class ScrapeRunView(BaseModel):
    """The scrape run a scrape job works on: what it found, stored and met so far."""

    id: int = Field(examples=[7], description="the run's id (`sleeve scrape --resume RUN`)")
    source: str = Field(examples=["itunes"])
    status: Literal["running", "interrupted", "failed", "succeeded"] = Field(
        examples=["running"],
        description="`running`: its process is alive (its heartbeat is at most three "
        "`SLEEVE_SCRAPE_HEARTBEAT_S` old); `interrupted`: it was stopped, or its process died "
        "(the heartbeat went stale); `failed`: an error stopped it; `succeeded`: its source is "
        "exhausted. All but `succeeded` continue from the last stored item on the job's next "
        "attempt or with `sleeve scrape --resume`",
    )
    seen: int = Field(ge=0, examples=[120], description="items handled")
    fetched: int = Field(ge=0, examples=[112], description="covers downloaded (or read)")
    stored: int = Field(ge=0, examples=[97], description="covers added as new albums")
    duplicates: int = Field(
        ge=0, examples=[11], description="items whose album or bytes were stored already"
    )
    rejected: int = Field(ge=0, examples=[12])
    rejected_by_reason: dict[str, int] = Field(
        examples=[{"cover download failed: HTTP 404": 4, "corrupt image": 1}]
    )
    seen_by_genre: dict[str, int] = Field(examples=[{"jazz": 100, "metal": 20}])
    requests: int = Field(ge=0, examples=[240], description="HTTP requests sent, retries included")
    errors_by_kind: dict[str, int] = Field(
        examples=[{"http_404": 4, "http_429": 2, "unreachable": 1}],
        description="failed HTTP tries by kind (an HTTP status, or `unreachable`, "
        "`malformed_reply`, `rate_limited`, `too_large`, `refused`), retried ones included",
    )
    request_rate: float = Field(
        ge=0,
        examples=[9.8],
        description="requests per second over the last seconds; 0 unless running",
    )
    error: str | None
    started_at: datetime
    heartbeat_at: datetime | None = Field(description="when its process last wrote to it")
    finished_at: datetime | None


class ScrapeJobView(JobView):
    run: ScrapeRunView | None = Field(description="none until a scraper worker starts the job")


class TrainingRunView(BaseModel):
    """One training run of a training job (each attempt of the job starts one)."""

    id: int = Field(examples=[3])
    status: Literal["running", "interrupted", "failed", "succeeded"] = Field(
        examples=["running"],
        description="`running`: its process is alive (its heartbeat is at most three "
        "`SLEEVE_TRAIN_HEARTBEAT_S` old); `interrupted`: its worker was stopped, or its process "
        "died (the heartbeat went stale); the job's next attempt starts a new run, which reuses "
        "the trunk activations this one cached; `failed`: an error stopped it; `succeeded`: "
        "it registered a model version",
    )
    progress: TrainingProgress | None = Field(
        description="where it stands, written about once a second: phase, epoch of epochs, "
        "the last epoch's loss and accuracy, covers done, fraction of the run, time left; "
        "null until it has started"
    )
    eta_s: float | None = Field(
        examples=[41.0],
        description="seconds left now (the ETA last written, counted down since); null when "
        "not running or not known yet",
    )
    error: str | None
    started_at: datetime
    heartbeat_at: datetime | None = Field(description="when its process last wrote to it")
    finished_at: datetime | None


class TrainingJobView(JobView):
    run: TrainingRunView | None = Field(
        description="the job's latest training run; none until a trainer worker starts the job"
    )
    earlier_runs: list[TrainingRunView] = Field(
        default_factory=list,
        description="runs of earlier attempts (interrupted or failed), oldest first",
    )


class ScoringJobRequest(BaseModel):
    """A catalog to score in the background: a store prefix or albums in the database."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: str = Field(
        min_length=1,
        max_length=2048,
        description="`store:PREFIX` (images under a prefix of the object store) or "
        "`albums:FILTER` (albums in the database; FILTER is empty or `KEY=VALUE,…` with "
        "source, genre, scrape_run, dataset, split). Folders and manifests on a disk are "
        "scored with the `sleeve score` command.",
        examples=["albums:source=itunes", "store:catalog/2026/"],
    )
    model: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="model version; default: the served one",
        examples=["v2"],
    )
    engine: Literal["local", "ray"] = "local"


class ScoringJobView(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: int = Field(examples=[3])
    status: str = Field(
        examples=["running"], description="queued, running, succeeded, failed or cancelled"
    )
    input: str = Field(examples=["albums:source=itunes"])
    model_version: str = Field(examples=["v2"])
    engine: str = Field(examples=["local"])
    total: int = Field(description="items in the catalog", examples=[50000])
    done: int = Field(description="items scored", examples=[12000])
    failed: int = Field(description="items that could not be scored (see their rows)")
    duplicates: int = Field(description="repeated item ids, scored once")
    progress: float = Field(ge=0, le=1, examples=[0.24])
    images_per_second: float | None = Field(
        description="items finished per second since the job started", examples=[210.5]
    )
    eta_s: float | None = Field(description="seconds left at that pace", examples=[181.0])
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    results_url: str = Field(examples=["/v1/scoring-jobs/3/results?format=jsonl"])
