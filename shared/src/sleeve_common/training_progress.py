"""Where a training run stands, as the trainer records it (``training_runs.progress``) and the
API shows it (``GET /v1/training-runs/{id}``): its phase, the epoch, the last epoch's loss and
accuracy, the covers done, the fraction of the whole run and the time left.

The trainer writes it about once a second; the API reads it back with ``read_progress`` and
counts the time left down from when it was written (``eta_now``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["PHASE_LABELS", "TrainingPhase", "TrainingProgress", "eta_now", "read_progress"]

logger = logging.getLogger(__name__)


class TrainingPhase(StrEnum):
    """The phases of a training run, in the order they run."""

    FETCH = "fetch"
    LOAD = "load"
    TRUNK = "trunk"
    POOL = "pool"
    HEAD = "head"
    BASELINES = "baselines"
    FINE_TUNE = "fine_tune"
    EXPORT = "export"
    VARIANTS = "variants"
    EVALUATE = "evaluate"
    REGISTER = "register"


PHASE_LABELS: dict[TrainingPhase, str] = {
    TrainingPhase.FETCH: "fetching the covers",
    TrainingPhase.LOAD: "loading TensorFlow and the base",
    TrainingPhase.TRUNK: "trunk activations",
    TrainingPhase.POOL: "pooling the views for the head",
    TrainingPhase.HEAD: "head",
    TrainingPhase.BASELINES: "scoring the baselines",
    TrainingPhase.FINE_TUNE: "fine-tune",
    TrainingPhase.EXPORT: "exporting to ONNX and checking it against Keras",
    TrainingPhase.VARIANTS: "exporting the fp16/int8 variants",
    TrainingPhase.EVALUATE: "evaluating the exported model on the test split",
    TrainingPhase.REGISTER: "storing the report and registering the model",
}


class TrainingProgress(BaseModel):
    """One snapshot of a training run's progress."""

    model_config = ConfigDict(frozen=True)

    phase: TrainingPhase = Field(examples=["head"])
    step: int = Field(ge=1, examples=[5], description="the phase's place among the run's phases")
    steps: int = Field(ge=1, examples=[10], description="phases this run goes through")
    epoch: int | None = Field(
        None, ge=0, examples=[4], description="epochs finished in the head or fine-tune phase"
    )
    epochs: int | None = Field(
        None,
        ge=1,
        examples=[10],
        description="most epochs of this phase (early stopping may end it sooner)",
    )
    loss: float | None = Field(None, examples=[1.183], description="the last epoch's training loss")
    accuracy: float | None = Field(
        None, examples=[0.52], description="the last epoch's training accuracy"
    )
    val_loss: float | None = Field(None, examples=[1.21])
    val_accuracy: float | None = Field(None, examples=[0.383])
    covers: int | None = Field(
        None, ge=0, examples=[120], description="covers done in the fetch or trunk phase"
    )
    covers_total: int | None = Field(None, ge=0, examples=[4444])
    covers_cached: int | None = Field(
        None,
        ge=0,
        examples=[4000],
        description="covers whose trunk activations an earlier run had cached (not computed "
        "again); set from the trunk phase on",
    )
    covers_computed: int | None = Field(
        None, ge=0, examples=[444], description="covers whose trunk activations this run computed"
    )
    fraction: float = Field(ge=0, le=1, examples=[0.62], description="share of the whole run done")
    elapsed_s: float = Field(ge=0, examples=[74.2])
    eta_s: float | None = Field(
        None,
        ge=0,
        examples=[41.0],
        description="seconds left when this was written; null until known",
    )
    message: str = Field(
        examples=["head epoch 4/10: loss 1.183, accuracy 0.520, val accuracy 0.383"]
    )
    updated_at: datetime


def read_progress(stored: dict[str, Any] | None, *, run_id: int) -> TrainingProgress | None:
    """The progress a run row holds, or None (none yet, or written by an incompatible version)."""
    if not stored:
        return None
    try:
        return TrainingProgress.model_validate(stored)
    except ValidationError as exc:
        logger.warning("training run %s: ignoring unreadable progress: %s", run_id, exc)
        return None


def eta_now(progress: TrainingProgress, now: datetime) -> float | None:
    """Seconds left at ``now``: the ETA written, less the time since it was written."""
    if progress.eta_s is None:
        return None
    return max(progress.eta_s - (now - progress.updated_at).total_seconds(), 0.0)
