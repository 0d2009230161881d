"""The trainer's job handler: ``train`` jobs enqueued by ``POST /v1/training-runs`` (and by the
first-run bootstrap, whose request asks for the dataset to be built first).

A train job may run more than once (its worker was stopped or died): it reuses the dataset it
built, and if an earlier run of the same job already registered a model, it answers with that
version instead of training and registering another. Otherwise the runs earlier attempts left
``running`` are marked ``interrupted`` (their unregistered files deleted) and a new run starts,
which reads the trunk activations they cached instead of computing them again.
"""

from __future__ import annotations

from typing import Any

from sleeve_common.payloads import TrainRequest
from sleeve_common.progress import ThrottledProgress
from sleeve_common.runtime import Runtime
from sleeve_common.worker import Handler, JobContext
from sleeve_trainer.datasets import SplitSpec, ensure_dataset
from sleeve_trainer.run_record import close_interrupted_runs, registered_by
from sleeve_trainer.training import run_training

__all__ = ["train_handler"]


def train_handler(runtime: Runtime) -> Handler:
    async def handle(ctx: JobContext) -> dict[str, Any]:
        request = TrainRequest.model_validate(ctx.payload)
        done = await registered_by(db=runtime.db, job_id=ctx.job.id)
        if done is not None:
            run_id, version = done
            return {"training_run_id": run_id, "model_version": version}
        await close_interrupted_runs(db=runtime.db, store=runtime.store, job_id=ctx.job.id)
        if request.build_dataset is not None:
            build = request.build_dataset
            await ctx.progress(0.0, f"building dataset {request.dataset!r}", stage="dataset")
            dataset, built = await ensure_dataset(
                db=runtime.db,
                name=request.dataset,
                spec=SplitSpec(
                    genres=build.genres,
                    min_per_genre=build.min_per_genre,
                    max_per_genre=build.max_per_genre,
                    seed=build.seed,
                ),
            )
            sizes = {split: sum(g.values()) for split, g in dataset.counts["splits"].items()}
            await ctx.progress(
                0.0,
                f"dataset {dataset.name!r} {'built' if built else 'reused'}: "
                f"{', '.join(dataset.genres)}; {sizes}",
                stage="train",
            )
        outcome = await run_training(
            runtime,
            request,
            on_progress=ThrottledProgress(ctx.progress),
            job_id=ctx.job.id,
        )
        return {"training_run_id": outcome.run_id, "model_version": outcome.version}

    return handle
