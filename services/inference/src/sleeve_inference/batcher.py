"""The dynamic batcher: concurrent requests merge into model batches.

Contract (``tests/inference/test_batcher.py`` checks each clause):

- ``submit(inputs)`` queues one request's images, encoded (a list of bytes) or decoded (uint8
  NHWC), and returns their probabilities and the model that made them; a request's images are
  never split across batches.
- Encoded images are decoded in the runner's own thread, right before the model runs: on a
  CPU each runner is one thread doing both, the fastest layout measured (docs/performance.md),
  and the event loop keeps a core's worth of room. An image that does not decode fails only
  its own item (``BatchResult.errors``); the rest of the batch runs.
- A batch holds at most ``max_batch_size`` images (a larger request runs alone) and waits at
  most ``max_delay_s`` for more once its first request is in.
- Each batch reads the current model once: a promotion never mixes versions inside a batch.
- The model runs in a thread pool, never on the event loop; ``runners`` batches may run at
  once (one per core on a CPU, each on one thread; one on a GPU).
- A model error, or a result whose row count does not match, reaches every caller of that
  batch and no other.
- More than ``max_queue_images`` queued images: ``submit`` raises ``QueueFull`` at once.
- A caller that is cancelled (deadline, client gone) before its batch starts costs no model
  run.
- ``aclose()`` fails every pending request with ``BatcherClosed``; runners wake on an event,
  not by polling.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from sleeve_common.images import InvalidImage
from sleeve_inference.predictor import Predictor

__all__ = ["BatchResult", "Batcher", "BatcherClosed", "NoModel", "QueueFull"]

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds ``max_queue_images`` already: shed this request now."""


class NoModel(Exception):
    """No model is loaded to run the batch."""


class BatcherClosed(Exception):
    """The batcher shut down before the request ran."""


Inputs = list[bytes] | np.ndarray
"""Encoded images, or uint8 NHWC pixels already at the model's input size."""


@dataclass(frozen=True)
class BatchResult:
    predictor: Predictor  # the version that produced these rows
    probabilities: np.ndarray  # (len(inputs), classes); NaN rows where ``errors`` has one
    errors: list[InvalidImage | None]  # why an input could not be decoded, per input
    batch_size: int  # images in the batch this request ran in
    decode_s: float  # time the batch spent decoding


@dataclass
class _Entry:
    inputs: Inputs
    future: asyncio.Future[BatchResult]
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Owns the queue and the runners; made and closed by the app's lifespan."""

    def __init__(
        self,
        model: Callable[[], Predictor | None],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_images: int,
        max_image_pixels: int = 40_000_000,
        runners: int = 1,
        observe_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._model = model
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._max_queue_images = max_queue_images
        self._max_image_pixels = max_image_pixels
        self._runners = runners
        self._observe_batch = observe_batch
        self._queue: collections.deque[_Entry] = collections.deque()
        self._queued_images = 0
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=runners, thread_name_prefix="model")
        self._closed = False
        self._finished: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)

    @property
    def images_per_second(self) -> float:
        """Recent throughput, over the last batches that finished (0 before any)."""
        if len(self._finished) < 2:
            return 0.0
        span = self._finished[-1][0] - self._finished[0][0]
        images = sum(count for _, count in list(self._finished)[1:])
        return images / span if span > 0 else 0.0

    @property
    def queued_images(self) -> int:
        """Images waiting for a runner (not counting batches already running)."""
        return self._queued_images

    def start(self) -> None:
        """Start the runners on the running event loop."""
        self._tasks = [
            asyncio.create_task(self._run(), name=f"batcher-runner-{i}")
            for i in range(self._runners)
        ]

    async def submit(self, inputs: Inputs) -> BatchResult:
        """Probabilities for ``inputs`` from the next batch they fit in."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        count = len(inputs)
        if self._queued_images + count > self._max_queue_images:
            raise QueueFull(
                f"{self._queued_images} images are queued (limit {self._max_queue_images})"
            )
        entry = _Entry(inputs, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        self._queued_images += count
        self._wakeup.set()
        return await entry.future

    async def aclose(self) -> None:
        """Stop the runners and fail what is still queued."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            entry = self._pop()
            if not entry.future.done():
                entry.future.set_exception(BatcherClosed("the server is shutting down"))
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _pop(self) -> _Entry:
        entry = self._queue.popleft()
        self._queued_images -= len(entry.inputs)
        return entry

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._execute(batch)
            except Exception:  # a runner must outlive any one batch
                logger.exception("batch of %d requests failed unexpectedly", len(batch))

    async def _collect(self) -> list[_Entry]:
        """The next batch: wait for a first request, then up to ``max_delay_s`` for more."""
        batch: list[_Entry] = []
        size = 0
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            while self._queue and (
                not batch or size + len(self._queue[0].inputs) <= self._max_batch_size
            ):
                entry = self._pop()
                if entry.future.done():  # cancelled while queued: costs no model run
                    continue
                batch.append(entry)
                size += len(entry.inputs)
            if batch and (size >= self._max_batch_size or self._queue):
                return batch  # full, or the next request would not fit
            if batch and deadline is None:
                deadline = loop.time() + self._max_delay_s
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return batch
            self._wakeup.clear()
            if remaining is None:
                await self._wakeup.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)

    async def _execute(self, batch: list[_Entry]) -> None:
        live = [entry for entry in batch if not entry.future.done()]
        if not live:
            return
        predictor = self._model()
        if predictor is None:
            _fail(live, NoModel("no model is loaded"))
            return
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run_batch, predictor, [entry.inputs for entry in live]
            )
        except Exception as exc:
            _fail(live, exc)
            return
        finished = time.perf_counter()
        size = sum(len(entry.inputs) for entry in live)
        self._finished.append((finished, size))
        if self._observe_batch is not None:
            self._observe_batch(size, finished - started)
        for entry, result in zip(live, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

    def _run_batch(self, predictor: Predictor, batch: list[Inputs]) -> list[BatchResult]:
        """Decode what is encoded, run the model once, split the rows (in a runner thread)."""
        started = time.perf_counter()
        prepared = [self._prepare(predictor, inputs) for inputs in batch]
        decode_s = time.perf_counter() - started
        images = [pixels for pixels, _ in prepared if len(pixels)]
        count = sum(len(pixels) for pixels in images)
        probabilities = np.empty((0, len(predictor.labels)), dtype=np.float32)
        if images:
            probabilities = predictor.predict(
                images[0] if len(images) == 1 else np.concatenate(images)
            )
        if len(probabilities) != count:
            raise RuntimeError(
                f"model {predictor.version} gave {len(probabilities)} rows for {count} images"
            )
        results, offset = [], 0
        for pixels, errors in prepared:
            rows = np.full((len(errors), len(predictor.labels)), np.nan, dtype=np.float32)
            ok = [i for i, error in enumerate(errors) if error is None]
            rows[ok] = probabilities[offset : offset + len(pixels)]
            offset += len(pixels)
            results.append(BatchResult(predictor, rows, errors, count, decode_s))
        return results

    def _prepare(
        self, predictor: Predictor, inputs: Inputs
    ) -> tuple[np.ndarray, list[InvalidImage | None]]:
        """The model inputs that decoded, and the reason for each input that did not."""
        if isinstance(inputs, np.ndarray):
            return inputs, [None] * len(inputs)
        return predictor.decode_all(inputs, max_pixels=self._max_image_pixels)


def _fail(entries: list[_Entry], exc: BaseException) -> None:
    for entry in entries:
        if not entry.future.done():
            entry.future.set_exception(exc)
