"""The serving core every prediction route shares: admit, check the pixel budget, batch.

``Serving`` is made and closed by the app's lifespan and handed to routes by ``deps``. It
owns admission control and the batcher, sized to the cores this process may use: on a CPU,
one runner per core, each decoding its batch and running the model on one onnxruntime
thread (the fastest layout measured, docs/performance.md); on a GPU one runner whose session
uses every core.
"""

from __future__ import annotations

import contextlib
import logging

from sleeve_common.cpus import available_cpus
from sleeve_common.images import InvalidImage, image_size
from sleeve_common.settings import Settings
from sleeve_inference.admission import Admission, Overloaded
from sleeve_inference.batcher import Batcher, BatchResult, Inputs
from sleeve_inference.metrics import Metrics
from sleeve_inference.model_holder import ModelHolder
from sleeve_inference.predictor import Predictor, choose_providers

__all__ = ["DeadlineExceeded", "NoModelLoaded", "Serving", "TooManyPixels"]

logger = logging.getLogger(__name__)


class NoModelLoaded(Exception):
    """Nothing to serve yet; the message says why (from the model holder)."""


class DeadlineExceeded(Exception):
    """A request was not answered within ``SLEEVE_REQUEST_DEADLINE_S``."""


class TooManyPixels(Exception):
    """The request's images together declare more pixels than the per-request budget."""


class Serving:
    """Admission and the batcher of one API process."""

    def __init__(self, settings: Settings, holder: ModelHolder, metrics: Metrics) -> None:
        cores, on_gpu = _hardware(settings)
        self.runners = 1 if on_gpu else cores
        self._settings = settings
        self._holder = holder
        self._metrics = metrics
        self.admission = Admission(settings.queue_max_images)
        self.batcher = Batcher(
            lambda: holder.current,
            max_batch_size=settings.batch_max_size,
            max_delay_s=settings.batch_max_delay_ms / 1000,
            max_queue_images=settings.queue_max_images,
            max_image_pixels=settings.max_image_pixels,
            runners=self.runners,
            observe_batch=metrics.observe_batch,
        )
        metrics.watch(
            queue_depth=lambda: self.batcher.queued_images,
            in_flight=lambda: self.admission.in_flight,
        )
        logger.info("serving with %d model runners (%s)", self.runners, "GPU" if on_gpu else "CPU")

    @staticmethod
    def model_threads(settings: Settings) -> int:
        """onnxruntime intra-op threads per session: all cores for one GPU runner, else one."""
        cores, on_gpu = _hardware(settings)
        return cores if on_gpu else 1

    def start(self) -> None:
        self.batcher.start()

    async def aclose(self) -> None:
        await self.batcher.aclose()

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

    def check_pixels(self, payloads: list[bytes]) -> None:
        """``TooManyPixels`` if the images' headers declare more than the request's budget.

        Only headers are read (microseconds each); an image whose header is unreadable counts
        as zero here and is reported by its decode.
        """
        total = 0
        for data in payloads:
            try:
                width, height = image_size(data, max_pixels=self._settings.max_image_pixels)
            except InvalidImage:
                continue
            total += width * height
        if total > self._settings.max_request_pixels:
            raise TooManyPixels(
                f"the images declare {total} pixels together "
                f"(limit {self._settings.max_request_pixels} per request)"
            )

    async def run(self, inputs: Inputs) -> BatchResult:
        """Probabilities for encoded images or uint8 NHWC pixels, from the batcher."""
        self.model()
        result = await self.batcher.submit(inputs)
        self._metrics.images_predicted.inc(result.errors.count(None))
        return result


def _hardware(settings: Settings) -> tuple[int, bool]:
    """Cores this process may use, and whether the model runs on a GPU."""
    on_gpu = choose_providers(settings.ort_providers)[0] == "CUDAExecutionProvider"
    return settings.cpu_threads or available_cpus(), on_gpu
