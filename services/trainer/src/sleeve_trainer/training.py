"""One training run: dataset → cached embeddings → head (→ fine-tuning) → report → ONNX → registry.

TensorFlow work runs in a worker thread so progress keeps flowing to the terminal or job row.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sleeve_common.images import decode_model_input
from sleeve_common.model_signature import input_spec
from sleeve_common.models import TrainingRun, utcnow
from sleeve_common.payloads import TrainRequest
from sleeve_common.progress import ProgressSink
from sleeve_common.registry import register_model_version
from sleeve_common.runtime import Runtime
from sleeve_trainer.datasets import DatasetMemberRow, dataset_members
from sleeve_trainer.exceptions import DatasetTooSmall
from sleeve_trainer.model_card import store_model_card
from sleeve_trainer.promotion import promote_if_better

if TYPE_CHECKING:
    from sleeve_common.store import ObjectStore
    from sleeve_trainer.report import CoverPicks

__all__ = ["TrainingOutcome", "run_training"]

logger = logging.getLogger(__name__)

_VERIFY_IMAGES = 16
_FETCH_CONCURRENCY = 16


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
    async with runtime.db.session() as session:
        run = TrainingRun(
            dataset_id=ds.id,
            params=options.model_dump(mode="json"),
            status="running",
            job_id=job_id,
        )
        session.add(run)
        await session.flush()
        run_id = run.id
    try:
        await on_progress(0.0, f"training run {run_id}: fetching {len(members)} covers")
        covers = await _fetch_covers(runtime, members)
        loop = asyncio.get_running_loop()
        stopped = threading.Event()

        def report(fraction: float, message: str) -> None:
            # The thread cannot be cancelled; it ends here, at its next report, once its
            # caller has been (a stopped worker must not keep training, nor register).
            if stopped.is_set():
                raise _Stopped("training was stopped")
            asyncio.run_coroutine_threadsafe(
                on_progress(fraction, f"training run {run_id}: {message}"), loop
            ).result()

        try:
            artifacts = await asyncio.to_thread(
                _train, runtime, list(ds.genres), members, covers, options, report
            )
        except asyncio.CancelledError:
            stopped.set()
            raise
        prefix = f"models/run-{run_id}"
        onnx_key = f"{prefix}/model.onnx"
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
        )
    except BaseException as exc:
        await _finish_run(runtime, run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    await _finish_run(
        runtime, run_id, status="succeeded", history=artifacts.history, metrics=artifacts.metrics
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


class _NoRetracingNotice(logging.Filter):
    """Drops TensorFlow's notice that a new Keras model's predict function was traced: each
    embedding pass builds one, by design. Every other TensorFlow warning still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _quiet_tensorflow() -> None:
    """Before TensorFlow loads: its C++ start-up INFO and WARNING lines off unless the user set
    TF_CPP_MIN_LOG_LEVEL (errors still show), and the retracing notice filtered out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NoRetracingNotice) for f in tf_logger.filters):
        tf_logger.addFilter(_NoRetracingNotice())


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


async def _fetch_covers(runtime: Runtime, members: list[DatasetMemberRow]) -> dict[str, bytes]:
    limit = asyncio.Semaphore(_FETCH_CONCURRENCY)

    async def fetch(member: DatasetMemberRow) -> tuple[str, bytes]:
        async with limit:
            return member.content_sha256, await runtime.store.get(member.cover_key)

    return dict(await asyncio.gather(*(fetch(m) for m in members)))


async def _finish_run(runtime: Runtime, run_id: int, *, status: str, **values: Any) -> None:
    async with runtime.db.session() as session:
        run = await session.get(TrainingRun, run_id)
        if run is not None:
            run.status = status
            run.finished_at = utcnow()
            for name, value in values.items():
                setattr(run, name, value)


def _train(
    runtime: Runtime,
    labels: list[str],
    members: list[DatasetMemberRow],
    covers: dict[str, bytes],
    options: TrainRequest,
    report: Callable[[float, str], None],
) -> _Artifacts:
    """The TensorFlow part (blocking; runs in a thread)."""
    _quiet_tensorflow()
    from sleeve_trainer.embeddings import EmbeddingCache, embed_with_cache, weights_id
    from sleeve_trainer.export import export_onnx, verify_export
    from sleeve_trainer.fit import class_weights, fine_tune, fit_head
    from sleeve_trainer.model import build_classifier, build_head, load_base
    from sleeve_trainer.report import combine_histories, evaluate, pick_covers

    index = {label: i for i, label in enumerate(labels)}
    split = {name: [m for m in members if m.split == name] for name in ("train", "val", "test")}
    for name, rows in split.items():
        if not rows:
            raise DatasetTooSmall(f"the {name} split is empty; build the dataset from more covers")

    def pixels(sha: str) -> np.ndarray:
        return decode_model_input(covers[sha])

    def images_of(rows: list[DatasetMemberRow]) -> np.ndarray:
        return np.stack([pixels(m.content_sha256) for m in rows])

    def targets(rows: list[DatasetMemberRow]) -> np.ndarray:
        return np.array([index[m.genre] for m in rows], dtype=np.int64)

    weights = runtime.settings.base_weights
    report(0.05, f"loading base weights ({weights})")
    base = load_base(weights)
    cache = EmbeddingCache(runtime.settings.data_dir / "cache" / "embeddings", weights_id(weights))
    total = (len(split["train"]) * (2 if options.flip_augment else 1)) + len(split["val"])
    done = 0

    def embed(rows: list[DatasetMemberRow], *, flip: bool = False) -> np.ndarray:
        nonlocal done
        start = done

        def on_batch(count: int) -> None:
            report(
                0.05 + 0.45 * (start + count) / total, f"embedding covers {start + count}/{total}"
            )

        result = embed_with_cache(
            base,
            cache,
            [m.content_sha256 for m in rows],
            pixels,
            batch_size=options.batch_size,
            flip=flip,
            on_batch=on_batch,
        )
        done += len(rows)
        return result

    train_x, val_x = embed(split["train"]), embed(split["val"])
    train_y, val_y, test_y = targets(split["train"]), targets(split["val"]), targets(split["test"])
    if options.flip_augment:
        train_x = np.concatenate([train_x, embed(split["train"], flip=True)])
        train_y = np.concatenate([train_y, train_y])

    head = build_head(len(labels), dropout=options.dropout, seed=options.seed)
    weights_by_class = class_weights(train_y, len(labels))

    def head_epoch(epoch: int, logs: dict[str, float]) -> None:
        report(
            0.5 + 0.3 * epoch / options.epochs,
            f"head epoch {epoch}/{options.epochs}: val accuracy {logs.get('val_accuracy', 0):.3f}",
        )

    phases = [
        fit_head(
            head,
            train_x,
            train_y,
            val_x,
            val_y,
            epochs=options.epochs,
            learning_rate=options.learning_rate,
            batch_size=options.batch_size,
            class_weight=weights_by_class,
            on_epoch=head_epoch,
            seed=options.seed,
        )
    ]
    classifier = build_classifier(base, head)
    if options.fine_tune_epochs:

        def tune_epoch(epoch: int, logs: dict[str, float]) -> None:
            report(
                0.8 + 0.1 * epoch / options.fine_tune_epochs,
                f"fine-tune epoch {epoch}/{options.fine_tune_epochs}: "
                f"val accuracy {logs.get('val_accuracy', 0):.3f}",
            )

        phases.append(
            fine_tune(
                classifier,
                base,
                images_of(split["train"]),
                train_y[: len(split["train"])],
                images_of(split["val"]),
                val_y,
                epochs=options.fine_tune_epochs,
                learning_rate=options.fine_tune_learning_rate,
                unfreeze_blocks=options.unfreeze_blocks,
                batch_size=options.batch_size,
                on_epoch=tune_epoch,
                class_weight=weights_by_class,
                seed=options.seed,
            )
        )
    report(0.9, "evaluating on the test split")
    test_images = images_of(split["test"])
    probabilities = np.asarray(
        classifier.predict(test_images, batch_size=options.batch_size, verbose=0)
    )
    metrics = evaluate(test_y, probabilities, labels)
    history = combine_histories(*phases)

    report(0.95, "exporting to ONNX and checking it against Keras")
    onnx = export_onnx(classifier)
    metrics["export_max_abs_diff"] = verify_export(onnx, classifier, test_images[:_VERIFY_IMAGES])
    metrics["test_size"] = len(test_y)
    metrics["train_size"] = len(split["train"])
    metrics["val_size"] = len(split["val"])
    return _Artifacts(
        onnx=onnx,
        metrics=_json_safe(metrics),
        history=_json_safe(history),
        covers=pick_covers(test_images, test_y, probabilities, labels),
    )
