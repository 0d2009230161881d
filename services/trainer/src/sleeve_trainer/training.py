"""One training run: dataset → cached trunk activations → head → fine-tuning → ONNX → report →
registry.

TensorFlow work runs in a worker thread so progress keeps flowing to the terminal or job row.
Progress (``run_progress``) has a tick per epoch and per phase, and one at most every half
second for the covers; the run's row gets it about once a second with its heartbeat
(``run_record``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sleeve_common.images import decode_model_input
from sleeve_common.model_signature import input_spec
from sleeve_common.models import TrainingRunStatus
from sleeve_common.payloads import TrainRequest
from sleeve_common.progress import ProgressSink
from sleeve_common.registry import register_model_version
from sleeve_common.runtime import Runtime
from sleeve_common.training_progress import TrainingPhase
from sleeve_trainer.datasets import DatasetMemberRow, dataset_members
from sleeve_trainer.exceptions import DatasetTooSmall
from sleeve_trainer.model_card import store_model_card
from sleeve_trainer.promotion import promote_if_better
from sleeve_trainer.run_progress import RunProgress, RunSizes, Tick, plan_weights, with_eta
from sleeve_trainer.run_record import delete_run_files, open_run, run_prefix
from sleeve_trainer.tensorflow_setup import load_tensorflow
from sleeve_trainer.views import SERVED_VIEW, VIEW_COUNT, cover_views

if TYPE_CHECKING:
    from sleeve_common.store import ObjectStore
    from sleeve_trainer.report import CoverPicks

__all__ = ["TrainingOutcome", "run_training"]

logger = logging.getLogger(__name__)

_VERIFY_IMAGES = 16
_POOL_COVERS = 64  # covers' activations pooled per call: bounded memory, little overhead
_FETCH_CONCURRENCY = 16
_ESTIMATE_EVERY_S = 0.5


class _Stopped(Exception):
    """Raised in the training thread when the run it belongs to was cancelled."""


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: int
    version: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class _Artifacts:
    onnx: bytes
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    covers: CoverPicks  # the test covers of the report's grid


async def run_training(
    runtime: Runtime,
    options: TrainRequest,
    *,
    on_progress: ProgressSink,
    job_id: int | None = None,
) -> TrainingOutcome:
    """Train, evaluate, export and register a model version on ``options.dataset``."""
    ds, members = await dataset_members(db=runtime.db, name=options.dataset)
    record = await open_run(
        db=runtime.db,
        dataset_id=ds.id,
        params=options.model_dump(mode="json"),
        job_id=job_id,
        heartbeat_s=runtime.settings.train_heartbeat_s,
    )
    run_id = record.run_id
    progress = RunProgress(plan_weights(_sizes(members, options)))

    def sent(tick: Tick) -> Coroutine[Any, Any, None] | None:
        record.offer(tick.progress)
        if not tick.forward:
            return None
        return on_progress(
            tick.progress.fraction, f"training run {run_id}: {with_eta(tick.progress)}"
        )

    async def publish(tick: Tick) -> None:
        if (sending := sent(tick)) is not None:
            await sending

    async def keep_estimating() -> None:
        """Move phases with nothing to count (the export, the registration…) by the clock."""
        while True:
            await asyncio.sleep(_ESTIMATE_EVERY_S)
            if (tick := progress.estimate()) is not None:
                await publish(tick)

    recording = asyncio.create_task(record.keep_recording())
    estimating = asyncio.create_task(keep_estimating())
    try:
        await publish(progress.phase(TrainingPhase.FETCH, covers=0, covers_total=len(members)))
        covers = await _fetch_covers(
            runtime, members, on_cover=lambda done: publish(progress.covers(done, len(members)))
        )
        loop = asyncio.get_running_loop()
        stopped = threading.Event()

        def report(tick: Tick) -> None:
            # The thread cannot be cancelled; it ends here, at its next report, once its
            # caller has been (a stopped worker must not keep training, nor register).
            if stopped.is_set():
                raise _Stopped("training was stopped")
            if (sending := sent(tick)) is not None:
                asyncio.run_coroutine_threadsafe(sending, loop).result()

        try:
            artifacts = await asyncio.to_thread(
                _train, runtime, list(ds.genres), members, covers, options, progress, report
            )
        except asyncio.CancelledError:
            stopped.set()
            raise
        prefix = run_prefix(run_id)
        onnx_key = f"{prefix}/model.onnx"
        if options.variants:
            await publish(progress.phase(TrainingPhase.VARIANTS))
        from sleeve_trainer.variants import store_variants  # ONNX tools: not at CLI start

        variants = await store_variants(
            runtime.store,
            options.variants,
            model=artifacts.onnx,
            onnx_key=onnx_key,
            labels=list(ds.genres),
            members=members,
            covers=covers,
            seed=options.seed,
        )
        await publish(progress.phase(TrainingPhase.REGISTER))
        await runtime.store.put(onnx_key, artifacts.onnx)
        store_report = functools.partial(
            _store_report,
            store=runtime.store,
            prefix=prefix,
            labels=list(ds.genres),
            artifacts=artifacts,
            about={"dataset": ds.name, "options": options.model_dump(mode="json")},
        )

        async def report_and_card(name: str) -> dict[str, str]:
            card = await store_model_card(
                runtime,
                version=name,
                prefix=prefix,
                training_run_id=run_id,
                dataset=ds,
                options=options,
                metrics=artifacts.metrics,
                onnx_key=onnx_key,
                onnx=artifacts.onnx,
                variants=variants,
            )
            return {**await store_report(name), **card}

        version = await register_model_version(
            db=runtime.db,
            training_run_id=run_id,
            labels=list(ds.genres),
            input_spec=input_spec(),
            metrics=artifacts.metrics,
            onnx_key=onnx_key,
            onnx_sha256=hashlib.sha256(artifacts.onnx).hexdigest(),
            onnx_bytes=len(artifacts.onnx),
            # The report's figures and the model card carry the version's name: written once
            # registration gives it.
            store_report=report_and_card,
            variants=variants,
        )
    except BaseException as exc:
        await _cancelled(recording, estimating)
        # Stopped (a worker handing its job back, Ctrl-C) is no error of the run's own.
        stopped_here = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | _Stopped)
        await record.finish(
            TrainingRunStatus.INTERRUPTED if stopped_here else TrainingRunStatus.FAILED,
            progress=progress.latest,
            error="interrupted: stopped before it finished"
            if stopped_here
            else f"{type(exc).__name__}: {exc}",
        )
        try:  # no version names them: the registration is the last step here
            await delete_run_files(store=runtime.store, run_id=run_id)
        except Exception as cleanup:  # the store may be what failed
            logger.warning("training run %s: its files stay in the store: %s", run_id, cleanup)
        raise
    await _cancelled(recording, estimating)
    done = progress.finished(f"registered model {version.version}")
    await record.finish(
        TrainingRunStatus.SUCCEEDED,
        progress=done.progress,
        history=artifacts.history,
        metrics=artifacts.metrics,
    )
    if runtime.settings.auto_promote:
        version = await promote_if_better(runtime, version)
    await on_progress(
        1.0,
        f"training run {run_id} done: model {version.version} ({version.stage}), "
        f"test accuracy {artifacts.metrics['accuracy']:.3f}",
    )
    return TrainingOutcome(run_id=run_id, version=version.version, metrics=artifacts.metrics)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None: PostgreSQL's JSON refuses them."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def _cancelled(*tasks: asyncio.Task[None]) -> None:
    """Cancel ``tasks`` and wait until they have ended (a write they were making is over).
    One that failed first (the sink refused an estimate) is logged: the run's own next
    report meets the same error and says it."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.warning("training progress stopped: %s: %s", type(error).__name__, error)


def _sizes(members: list[DatasetMemberRow], options: TrainRequest) -> RunSizes:
    splits = Counter(m.split for m in members)
    return RunSizes(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        train_views=VIEW_COUNT if options.augment else 1,
        epochs=options.epochs,
        fine_tune_epochs=options.fine_tune_epochs,
        variants=len(options.variants),
    )


async def _store_report(
    version: str,
    *,
    store: ObjectStore,
    prefix: str,
    labels: list[str],
    artifacts: _Artifacts,
    about: dict[str, Any],
) -> dict[str, str]:
    """Draw the report images of ``version`` (each titled with it), store them and
    ``report.json`` under ``prefix``; their keys by name. Runs inside the registration."""
    from sleeve_trainer.report import draw_report_figures

    figures = await asyncio.to_thread(
        draw_report_figures,
        version=version,
        labels=labels,
        metrics=artifacts.metrics,
        history=artifacts.history,
        covers=artifacts.covers,
    )
    keys = {name: f"{prefix}/{name}.png" for name in figures}
    for name, png in figures.items():
        await store.put(keys[name], png)
    keys["report"] = f"{prefix}/report.json"
    document = {
        "version": version,
        **about,
        "metrics": artifacts.metrics,
        "history": artifacts.history,
    }
    await store.put(keys["report"], json.dumps(document, indent=2).encode())
    return keys


def _served(entries: list[np.ndarray]) -> np.ndarray:
    """The served view's activations of each cover, stacked."""
    return np.stack([entry[SERVED_VIEW] for entry in entries])


def _served_images(rows: list[DatasetMemberRow], covers: dict[str, bytes]) -> Iterator[np.ndarray]:
    """What the server would feed the model for each cover, one at a time."""
    return (decode_model_input(covers[m.content_sha256]) for m in rows)


def _pooled(
    top: Any, entries: list[np.ndarray], on_covers: Callable[[int], None] | None = None
) -> np.ndarray:
    """The pooled embeddings of every view in ``entries`` (each (views, …) activations), in
    order, through the top of the base as it is now; ``on_covers`` gets the count done."""
    pooled = []
    for start in range(0, len(entries), _POOL_COVERS):
        chunk = np.concatenate(entries[start : start + _POOL_COVERS]).astype(np.float32)
        pooled.append(np.asarray(top.predict(chunk, batch_size=256, verbose=0), np.float32))
        if on_covers is not None:
            on_covers(min(start + _POOL_COVERS, len(entries)))
    return np.concatenate(pooled)


async def _fetch_covers(
    runtime: Runtime,
    members: list[DatasetMemberRow],
    *,
    on_cover: Callable[[int], Awaitable[None]],
) -> dict[str, bytes]:
    """Every member's cover bytes by sha256; ``on_cover`` gets the count fetched so far."""
    limit = asyncio.Semaphore(_FETCH_CONCURRENCY)
    fetched = 0

    async def fetch(member: DatasetMemberRow) -> tuple[str, bytes]:
        nonlocal fetched
        async with limit:
            data = await runtime.store.get(member.cover_key)
        fetched += 1
        await on_cover(fetched)
        return member.content_sha256, data

    return dict(await asyncio.gather(*(fetch(m) for m in members)))


def _train(
    runtime: Runtime,
    labels: list[str],
    members: list[DatasetMemberRow],
    covers: dict[str, bytes],
    options: TrainRequest,
    progress: RunProgress,
    report: Callable[[Tick], None],
) -> _Artifacts:
    """The TensorFlow part (blocking; runs in a thread)."""
    report(progress.phase(TrainingPhase.LOAD))
    load_tensorflow()
    from sleeve_trainer.baselines import colour_histograms, compare_with_baselines, score_baseline
    from sleeve_trainer.export import export_onnx, verify_export
    from sleeve_trainer.fit import class_weights, fine_tune, fit_head
    from sleeve_trainer.model import build_classifier, build_head, build_top, cut_layer, load_base
    from sleeve_trainer.onnx_session import open_cpu_session, predict_probabilities
    from sleeve_trainer.report import combine_histories, evaluate, pick_covers
    from sleeve_trainer.trunk import ActivationCache, Trunk, trunk_activations, weights_id

    index = {label: i for i, label in enumerate(labels)}
    split = {name: [m for m in members if m.split == name] for name in ("train", "val", "test")}
    for name, rows in split.items():
        if not rows:
            raise DatasetTooSmall(f"the {name} split is empty; build the dataset from more covers")

    def targets(rows: list[DatasetMemberRow]) -> np.ndarray:
        return np.array([index[m.genre] for m in rows], dtype=np.int64)

    weights = runtime.settings.base_weights
    base = load_base(weights)
    cut = cut_layer(base, options.unfreeze_blocks)
    cache = ActivationCache(
        runtime.settings.data_dir / "cache" / "activations", weights_id(weights), cut
    )
    trunk = Trunk(base, cut, cache)
    train_views = VIEW_COUNT if options.augment else 1
    views_of = {"train": train_views, "val": 1, "test": 1}
    total = sum(len(rows) for rows in split.values())
    cached = {
        name: sum(cache.has(m.content_sha256, views_of[name]) for m in rows)
        for name, rows in split.items()
    }
    to_compute = sum((len(split[name]) - cached[name]) * views_of[name] for name in split)
    in_cache = sum(cached.values())
    report(progress.trunk_phase(total=total, cached=in_cache, views_to_compute=to_compute))
    computed = Counter[str]()  # covers and views this run computes (cache misses)

    def activations(rows: list[DatasetMemberRow], views: int, start: int) -> list[np.ndarray]:
        def load_views(sha: str) -> np.ndarray:
            computed.update(covers=1, views=views)
            return cover_views(covers[sha], augment=views > 1)

        def on_cover(count: int) -> None:
            report(
                progress.trunk(
                    start + count, computed=computed["covers"], computed_views=computed["views"]
                )
            )

        return trunk_activations(
            trunk,
            cache,
            [m.content_sha256 for m in rows],
            load_views,
            views=views,
            on_cover=on_cover,
        )

    train_acts = activations(split["train"], train_views, 0)
    val_acts = _served(activations(split["val"], 1, len(split["train"])))
    test_acts = _served(activations(split["test"], 1, len(split["train"]) + len(split["val"])))
    train_y, val_y, test_y = targets(split["train"]), targets(split["val"]), targets(split["test"])

    report(progress.phase(TrainingPhase.POOL))
    top = build_top(base, cut)
    train_x = _pooled(  # cover by cover, view by view
        top, train_acts, lambda done: report(progress.advance(done, len(train_acts)))
    )
    val_x = _pooled(top, [val_acts])
    head = build_head(len(labels), dropout=options.dropout, seed=options.seed)
    weights_by_class = class_weights(train_y, len(labels))

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        report(progress.epoch(epoch, logs))

    report(progress.epoch_phase(TrainingPhase.HEAD, epochs=options.epochs))
    phases = [
        fit_head(
            head,
            train_x,
            np.repeat(train_y, train_views),
            val_x,
            val_y,
            epochs=options.epochs,
            learning_rate=options.learning_rate,
            batch_size=options.batch_size,
            class_weight=weights_by_class,
            on_epoch=on_epoch,
            seed=options.seed,
        )
    ]
    report(progress.phase(TrainingPhase.BASELINES))
    test_images = np.stack(list(_served_images(split["test"], covers)))
    targets_of = (train_y, val_y, test_y)
    baselines = {
        "colour_histogram": score_baseline(
            (
                colour_histograms(_served_images(split["train"], covers)),
                colour_histograms(_served_images(split["val"], covers)),
                colour_histograms(test_images),
            ),
            targets_of,
            labels,
            class_weight=weights_by_class,
            seed=options.seed,
        ),
        "linear_probe": score_baseline(
            (train_x[SERVED_VIEW::train_views], val_x, _pooled(top, [test_acts])),
            targets_of,
            labels,
            class_weight=weights_by_class,
            seed=options.seed,
        ),
    }
    del train_x
    if options.fine_tune_epochs:
        report(progress.epoch_phase(TrainingPhase.FINE_TUNE, epochs=options.fine_tune_epochs))
        phases.append(
            fine_tune(
                top,
                head,
                base,
                train_acts,
                train_y,
                val_acts,
                val_y,
                epochs=options.fine_tune_epochs,
                learning_rate=options.fine_tune_learning_rate,
                unfreeze_blocks=options.unfreeze_blocks,
                batch_size=options.batch_size,
                on_epoch=on_epoch,
                class_weight=weights_by_class,
                seed=options.seed,
            )
        )
    classifier = build_classifier(base, head)

    report(progress.phase(TrainingPhase.EXPORT))
    onnx = export_onnx(classifier)
    export_diff = verify_export(onnx, classifier, test_images[:_VERIFY_IMAGES])
    report(progress.phase(TrainingPhase.EVALUATE))
    # The figures are the served file's own, on the input the server gives it.
    probabilities = predict_probabilities(open_cpu_session(onnx), test_images)
    metrics = evaluate(test_y, probabilities, labels)
    metrics["baselines"] = compare_with_baselines(metrics, baselines)
    history = combine_histories(*phases)
    metrics["export_max_abs_diff"] = export_diff
    metrics["test_size"] = len(test_y)
    metrics["train_size"] = len(split["train"])
    metrics["val_size"] = len(split["val"])
    return _Artifacts(
        onnx=onnx,
        metrics=_json_safe(metrics),
        history=_json_safe(history),
        covers=pick_covers(test_images, test_y, probabilities, labels),
    )
