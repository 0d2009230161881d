"""Covers that a model can learn in seconds, and versions to register over them.

Three genres of noisy single-colour covers, coloured as the tiny colour model of the API tests
reads them (``inference.harness.build_onnx_model``: red country, green rock, blue pop), so that
model answers every one right and a biased copy of it answers "pop" to all. Country and rock
covers come from a folder scrape run, pop covers from a Deezer one.
"""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np
from PIL import Image

from sleeve_common.model_signature import input_spec
from sleeve_common.models import Album, AlbumLabel, Dataset, ModelVersion, ScrapeRun, TrainingRun
from sleeve_common.registry import register_model_version
from sleeve_common.runtime import Runtime
from sleeve_common.store import cover_key
from sleeve_trainer.datasets import SplitSpec, build_dataset

__all__ = [
    "GENRE_COLOURS",
    "PER_GENRE",
    "SOURCES",
    "TEST_COVERS",
    "add_colour_covers",
    "colour_dataset",
    "register",
]

GENRE_COLOURS = {"country": (210, 40, 40), "rock": (40, 210, 40), "pop": (40, 40, 210)}
PER_GENRE = 10
SOURCES = {"country": "folder", "rock": "folder", "pop": "deezer"}
# 20% of each genre's 10 covers.
TEST_COVERS = 2 * len(GENRE_COLOURS)


def _cover(colour: tuple[int, int, int], seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(-30, 31, (64, 64, 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def add_colour_covers(runtime: Runtime) -> None:
    """``PER_GENRE`` stored covers of each genre, as albums of their source's scrape run."""
    async with runtime.db.session() as session:
        runs = {s: ScrapeRun(source=s, status="succeeded") for s in dict.fromkeys(SOURCES.values())}
        session.add_all(runs.values())
        await session.flush()
        for g, (genre, colour) in enumerate(GENRE_COLOURS.items()):
            for i in range(PER_GENRE):
                data = _cover(colour, seed=g * PER_GENRE + i)
                sha = hashlib.sha256(data).hexdigest()
                await runtime.store.put(cover_key(sha, "png"), data)
                session.add(
                    Album(
                        source=SOURCES[genre],
                        source_id=uuid.uuid4().hex,
                        cover_key=cover_key(sha, "png"),
                        content_sha256=sha,
                        width=64,
                        height=64,
                        scrape_run_id=runs[SOURCES[genre]].id,
                        labels=[AlbumLabel(genre=genre, raw_genre=genre, provenance=f"test:{i}")],
                    )
                )


async def colour_dataset(runtime: Runtime, name: str = "colours", *, seed: int = 0) -> Dataset:
    """A split of the colour covers: 6 train, 2 validation and 2 test covers per genre."""
    spec = SplitSpec(min_per_genre=5, val_fraction=0.2, test_fraction=0.2, seed=seed)
    return await build_dataset(db=runtime.db, name=name, spec=spec)


async def register(
    runtime: Runtime, onnx: bytes, *, labels: list[str], trained_on: Dataset | None
) -> ModelVersion:
    """Store ``onnx`` and register it, with a finished training run on ``trained_on``."""
    run_id = None
    if trained_on is not None:
        async with runtime.db.session() as session:
            run = TrainingRun(dataset_id=trained_on.id, status="succeeded")
            session.add(run)
            await session.flush()
            run_id = run.id
    sha = hashlib.sha256(onnx).hexdigest()
    key = f"models/{uuid.uuid4().hex[:12]}/model.onnx"
    await runtime.store.put(key, onnx)
    return await register_model_version(
        db=runtime.db,
        training_run_id=run_id,
        labels=labels,
        input_spec=input_spec(),
        metrics={"accuracy": 0.0, "macro_f1": 0.0},
        onnx_key=key,
        onnx_sha256=sha,
        onnx_bytes=len(onnx),
    )
