"""The batcher's contract, one test per clause (see the docstring of ``batcher.py``).

The model is a real onnxruntime session of the tiny colour classifier; failures are real
onnxruntime errors (images of the wrong size) or a real ONNX graph that answers one row.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sleeve_common.model_signature import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from sleeve_inference.batcher import Batcher, BatcherClosed, NoModel, QueueFull
from sleeve_inference.predictor import Predictor

from .harness import LABELS, build_onnx_model, image_bytes


@dataclass(frozen=True)
class RecordingPredictor(Predictor):
    """A real predictor that also notes the batch sizes it ran and the threads it ran on."""

    sizes: list[int] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.sizes.append(len(images))
        self.threads.append(threading.current_thread().name)
        return super().predict(images)


def open_model(
    tmp_path: Path, version: str = "v1", data: bytes | None = None
) -> RecordingPredictor:
    path = tmp_path / f"{version}.onnx"
    path.write_bytes(data or build_onnx_model())
    opened = Predictor.open(path, version=version, labels=LABELS, threads=1)
    return RecordingPredictor(version=version, labels=LABELS, session=opened.session)


def one_row_model() -> bytes:
    """A real ONNX graph that answers a single row whatever the batch size."""
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels"], ["mean"], keepdims=0),
            helper.make_node("Expand", ["mean", "shape"], [OUTPUT_NAME]),
        ],
        name="one_row",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", *INPUT_SHAPE])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 3])],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [2], [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def images(count: int, value: int = 128, size: int = 224) -> np.ndarray:
    return np.full((count, size, size, 3), value, dtype=np.uint8)


def red(level: int) -> np.ndarray:
    image = images(1, 0)
    image[..., 0] = level
    return image


def batcher_for(model: Predictor | None, **options: object) -> Batcher:
    settings: dict[str, object] = {"max_batch_size": 8, "max_delay_s": 0.05, "max_queue_images": 64}
    settings.update(options)
    return Batcher(lambda: model, **settings)  # type: ignore[arg-type]


async def test_concurrent_requests_share_one_batch(tmp_path: Path) -> None:
    model = open_model(tmp_path)
    batcher = batcher_for(model)
    batcher.start()
    try:
        reds = [red(v) for v in (10, 80, 160, 240)]
        results = await asyncio.gather(*(batcher.submit(image) for image in reds))
    finally:
        await batcher.aclose()
    assert model.sizes == [4]
    assert [r.batch_size for r in results] == [4, 4, 4, 4]
    assert all(r.probabilities.shape == (1, len(LABELS)) for r in results)
    # Each caller gets its own row: the redder the image, the likelier "country".
    country = [float(r.probabilities[0, LABELS.index("country")]) for r in results]
    assert country == sorted(country)
    assert len(set(country)) == 4


async def test_encoded_images_are_decoded_in_the_runner(tmp_path: Path) -> None:
    """Bytes go in; a bad image fails only its own item, the rest of the batch runs."""
    model = open_model(tmp_path)
    batcher = batcher_for(model)
    batcher.start()
    try:
        first, second = await asyncio.gather(
            batcher.submit([image_bytes((255, 0, 0)), b"not an image"]),
            batcher.submit([image_bytes((0, 0, 255))]),
        )
    finally:
        await batcher.aclose()
    assert model.sizes == [2]  # the two images that decoded, in one batch
    assert all(name.startswith("model") for name in model.threads)
    assert first.errors[0] is None
    assert "not a recognised image format" in str(first.errors[1])
    assert np.isnan(first.probabilities[1]).all()
    assert model.top_k(first.probabilities[0], 1)[0][0] == "country"
    assert model.top_k(second.probabilities[0], 1)[0][0] == "pop"
    assert first.batch_size == second.batch_size == 2


async def test_a_request_is_never_split_and_batches_stay_bounded(tmp_path: Path) -> None:
    model = open_model(tmp_path)
    batcher = batcher_for(model, max_batch_size=4)
    batcher.start()
    try:
        sizes = [1, 2, 3, 6, 1, 1]
        results = await asyncio.gather(*(batcher.submit(images(n)) for n in sizes))
    finally:
        await batcher.aclose()
    assert [len(r.probabilities) for r in results] == sizes
    assert sum(model.sizes) == sum(sizes)
    assert all(size <= 4 for size in model.sizes if size != 6)  # the 6 runs alone
    assert 6 in model.sizes


async def test_a_lone_request_runs_after_the_delay(tmp_path: Path) -> None:
    model = open_model(tmp_path)
    batcher = batcher_for(model, max_delay_s=0.01)
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.submit(images(1)), timeout=10)
    finally:
        await batcher.aclose()
    assert result.batch_size == 1


async def test_each_batch_reads_the_model_once(tmp_path: Path) -> None:
    """A promotion between batches never mixes versions inside one; answers name theirs."""
    versions = [open_model(tmp_path, "v1"), open_model(tmp_path, "v2")]
    reads: list[str] = []

    def current() -> Predictor:
        chosen = versions[len(reads) % 2]
        reads.append(chosen.version)
        return chosen

    batcher = Batcher(current, max_batch_size=8, max_delay_s=0.05, max_queue_images=64)
    batcher.start()
    try:
        first = await asyncio.gather(*(batcher.submit(images(1)) for _ in range(3)))
        second = await asyncio.gather(*(batcher.submit(images(1)) for _ in range(3)))
    finally:
        await batcher.aclose()
    assert reads == ["v1", "v2"]
    assert {r.predictor.version for r in first} == {"v1"}
    assert {r.predictor.version for r in second} == {"v2"}


async def test_the_model_runs_off_the_event_loop(tmp_path: Path) -> None:
    model = open_model(tmp_path)
    batcher = batcher_for(model)
    batcher.start()
    try:
        await batcher.submit(images(1))
    finally:
        await batcher.aclose()
    assert model.threads
    assert threading.current_thread().name not in model.threads
    assert all(name.startswith("model") for name in model.threads)


async def test_a_model_error_reaches_every_caller_of_the_batch(tmp_path: Path) -> None:
    model = open_model(tmp_path)
    batcher = batcher_for(model)
    batcher.start()
    try:
        wrong_size = [batcher.submit(images(1, size=100)) for _ in range(3)]
        outcomes = await asyncio.gather(*wrong_size, return_exceptions=True)
        after = await batcher.submit(images(1))
    finally:
        await batcher.aclose()
    assert len(outcomes) == 3
    assert all(isinstance(o, Exception) and "dimension" in str(o).lower() for o in outcomes)
    assert after.probabilities.shape == (1, len(LABELS))  # the runner lives on


async def test_a_row_count_mismatch_fails_every_caller(tmp_path: Path) -> None:
    model = open_model(tmp_path, data=one_row_model())
    batcher = batcher_for(model)
    batcher.start()
    try:
        outcomes = await asyncio.gather(
            *(batcher.submit(images(1)) for _ in range(3)), return_exceptions=True
        )
    finally:
        await batcher.aclose()
    assert all(isinstance(o, RuntimeError) and "for 3 images" in str(o) for o in outcomes)


async def test_a_full_queue_refuses_at_once(tmp_path: Path) -> None:
    batcher = batcher_for(open_model(tmp_path), max_queue_images=3)  # not started: nothing drains
    waiting = [asyncio.ensure_future(batcher.submit(images(n))) for n in (1, 2)]
    await asyncio.sleep(0)  # let both join the queue
    with pytest.raises(QueueFull, match="3 images are queued"):
        await batcher.submit(images(1))
    assert batcher.queued_images == 3
    await batcher.aclose()
    for task in waiting:
        with pytest.raises(BatcherClosed):
            await task


async def test_a_cancelled_caller_costs_no_model_run(tmp_path: Path) -> None:
    model = open_model(tmp_path)
    batcher = batcher_for(model)
    gone = asyncio.ensure_future(batcher.submit(images(5)))
    stays = asyncio.ensure_future(batcher.submit(images(1)))
    await asyncio.sleep(0)
    gone.cancel()
    batcher.start()
    try:
        result = await stays
    finally:
        await batcher.aclose()
    assert model.sizes == [1]
    assert result.batch_size == 1


async def test_aclose_fails_what_is_pending(tmp_path: Path) -> None:
    batcher = batcher_for(open_model(tmp_path))
    pending = asyncio.ensure_future(batcher.submit(images(1)))
    await asyncio.sleep(0)
    await batcher.aclose()
    with pytest.raises(BatcherClosed):
        await pending
    with pytest.raises(BatcherClosed):
        await batcher.submit(images(1))


async def test_no_model_reaches_the_callers() -> None:
    batcher = batcher_for(None)
    batcher.start()
    try:
        with pytest.raises(NoModel):
            await batcher.submit(images(1))
    finally:
        await batcher.aclose()


async def test_runners_wake_on_an_event(tmp_path: Path) -> None:
    """An idle runner waits on the event: nothing runs until a request comes."""
    model = open_model(tmp_path)
    batcher = batcher_for(model, runners=2)
    batcher.start()
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert model.sizes == []
        await batcher.submit(images(2))
    finally:
        await batcher.aclose()
    assert model.sizes == [2]


def test_the_one_row_model_is_valid() -> None:
    onnx.checker.check_model(onnx.load_from_string(one_row_model()), full_check=True)
