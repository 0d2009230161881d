"""The trainer's job handler: ``train`` jobs enqueued by ``POST /v1/training-runs``."""

from __future__ import annotations

from typing import Any

from sleeve_common.payloads import TrainRequest
from sleeve_common.progress import ThrottledProgress
from sleeve_common.runtime import Runtime
from sleeve_common.worker import Handler, JobContext
from sleeve_trainer.training import run_training

__all__ = ["train_handler"]


def train_handler(runtime: Runtime) -> Handler:
    async def handle(ctx: JobContext) -> dict[str, Any]:
        outcome = await run_training(
            runtime,
            TrainRequest.model_validate(ctx.payload),
            on_progress=ThrottledProgress(ctx.progress),
            job_id=ctx.job.id,
        )
        return {"training_run_id": outcome.run_id, "model_version": outcome.version}

    return handle
