"""The serving core every prediction route shares: admit, decode in threads, batch, answer.

``Serving`` is made and closed by the app's lifespan and handed to routes by ``deps``. It
owns the decode thread pool and the batcher, sized to the cores this process may use: on a
CPU, ``cores`` decode threads and ``cores`` model runners of one onnxruntime thread each
(the fastest split measured, docs/performance.md); on a GPU one runner with larger batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from sleeve_common.cpus import available_cpus
from sleeve_common.images import InvalidImage, image_size
from sleeve_common.settings import Settings
from sleeve_inference.admission import Admission, Overloaded
from sleeve_inference.batcher import Batcher, BatchResult
from sleeve_inference.metrics import Metrics
from sleeve_inference.model_holder import ModelHolder
from sleeve_inference.predictor import Predictor, choose_providers

__all__ = ["DeadlineExceeded", "Decoded", "NoModelLoaded", "Serving", "TooManyPixels"]

logger = logging.getLogger(__name__)


class NoModelLoaded(Exception):
    """Nothing to serve yet; the message says why (from the model holder)."""


class DeadlineExceeded(Exception):
    """A request was not answered within ``SLEEVE_REQUEST_DEADLINE_S``."""


class TooManyPixels(Exception):
    """The request's images together declare more pixels than the per-request budget."""


@dataclass(frozen=True)
class Decoded:
    """One request's images: the model inputs that decoded, and the reason for each that did
    not (same order as the payloads; exactly one of the two is set per item)."""

    images: list[np.ndarray | None]
    errors: list[InvalidImage | None]
    seconds: float


class Serving:
    """Admission, the decode pool and the batcher of one API process."""

    def __init__(self, settings: Settings, holder: ModelHolder, metrics: Metrics) -> None:
        cores, on_gpu = _hardware(settings)
        self.runners = 1 if on_gpu else cores
        self._settings = settings
        self._holder = holder
        self._metrics = metrics
        self.admission = Admission(settings.queue_max_images)
        self._decode_pool = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="decode")
        self.batcher = Batcher(
            lambda: holder.current,
            max_batch_size=settings.batch_max_size,
            max_delay_s=settings.batch_max_delay_ms / 1000,
            max_queue_images=settings.queue_max_images,
            runners=self.runners,
            observe_batch=metrics.observe_batch,
        )
        metrics.watch(
            queue_depth=lambda: self.batcher.queued_images,
            in_flight=lambda: self.admission.in_flight,
        )
        logger.info(
            "serving with %d decode threads and %d model runners (%s)",
            cores,
            self.runners,
            "GPU" if on_gpu else "CPU",
        )

    @staticmethod
    def model_threads(settings: Settings) -> int:
        """onnxruntime intra-op threads per session: all cores for one GPU runner, else one."""
        cores, on_gpu = _hardware(settings)
        return cores if on_gpu else 1

    def start(self) -> None:
        self.batcher.start()

    async def aclose(self) -> None:
        await self.batcher.aclose()
        self._decode_pool.shutdown(wait=True, cancel_futures=True)

    def model(self) -> Predictor:
        """The served model, or ``NoModelLoaded`` saying why there is none."""
        predictor = self._holder.current
        if predictor is None:
            raise NoModelLoaded(self._holder.last_error or "no model is loaded yet")
        return predictor

    def admit(self, images: int) -> contextlib.AbstractContextManager[None]:
        """Places for ``images`` until the answer (``with serving.admit(n):``), or
        ``Overloaded`` at once."""
        try:
            return self.admission.admit(images, images_per_second=self.batcher.images_per_second)
        except Overloaded:
            self._metrics.rejections.labels("overloaded").inc()
            raise

    async def decode(self, payloads: list[bytes]) -> Decoded:
        """Check the pixel budget from the headers, then decode in the pool (uint8 inputs)."""
        started = time.perf_counter()
        decoded = await asyncio.get_running_loop().run_in_executor(
            self._decode_pool, self._decode_all, payloads, self.model()
        )
        return Decoded(*decoded, seconds=time.perf_counter() - started)

    async def run(self, images: np.ndarray) -> BatchResult:
        """Probabilities for uint8 NHWC ``images`` from the batcher."""
        self.model()
        result = await self.batcher.submit(images)
        self._metrics.images_predicted.inc(len(images))
        return result

    def _decode_all(
        self, payloads: list[bytes], predictor: Predictor
    ) -> tuple[list[np.ndarray | None], list[InvalidImage | None]]:
        max_pixels = self._settings.max_image_pixels
        sizes: list[int] = []
        for data in payloads:
            try:
                width, height = image_size(data, max_pixels=max_pixels)
            except InvalidImage:
                width = height = 0  # reported by the decode below
            sizes.append(width * height)
        if sum(sizes) > self._settings.max_request_pixels:
            raise TooManyPixels(
                f"the images declare {sum(sizes)} pixels together "
                f"(limit {self._settings.max_request_pixels} per request)"
            )
        images: list[np.ndarray | None] = []
        errors: list[InvalidImage | None] = []
        for data in payloads:
            try:
                images.append(predictor.decode(data, max_pixels=max_pixels))
                errors.append(None)
            except InvalidImage as exc:
                images.append(None)
                errors.append(exc)
        return images, errors


def _hardware(settings: Settings) -> tuple[int, bool]:
    """Cores this process may use, and whether the model runs on a GPU."""
    on_gpu = choose_providers(settings.ort_providers)[0] == "CUDAExecutionProvider"
    return settings.cpu_threads or available_cpus(), on_gpu
