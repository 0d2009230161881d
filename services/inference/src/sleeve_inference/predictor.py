"""The predictor: one ONNX model and the steps from a cover's bytes to ranked genres.

The API's batcher, bulk scoring and a Ray actor all use it the same way: open it from a
model file (``Predictor.open``), ``decode`` covers with the common decode path, ``predict``
a uint8 batch, ``top_k`` each row. It holds no event loop or database, so it runs anywhere.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sleeve_common.images import InvalidImage, decode_model_input
from sleeve_common.model_files import ServedVariant
from sleeve_common.model_signature import INPUT_NAME, INPUT_SIZE, OUTPUT_NAME

__all__ = ["Predictor", "choose_providers"]

logger = logging.getLogger(__name__)


def choose_providers(requested: str | None) -> list[str]:
    """CUDA first when this onnxruntime build has it and a GPU is there, CPU always last."""
    available = ort.get_available_providers()
    if requested:
        wanted = [p.strip() for p in requested.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in available]
        if unknown:
            raise ValueError(
                f"SLEEVE_ORT_PROVIDERS names unavailable providers {unknown}; have {available}"
            )
        return wanted
    if "CUDAExecutionProvider" in available and _nvidia_driver_present():
        # Finds CUDA and cuDNN when they came as pip wheels (the image's "gpu" extra).
        ort.preload_dlls()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _nvidia_driver_present() -> bool:
    """onnxruntime-gpu lists CUDA even on machines without a GPU; the driver library tells."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Predictor:
    """A model version ready to run: its session, labels and input size, and which of its
    files the session runs (``variant``)."""

    version: str
    labels: list[str]
    session: ort.InferenceSession
    input_size: int = INPUT_SIZE
    variant: ServedVariant = "fp32"

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        version: str,
        labels: list[str],
        variant: ServedVariant = "fp32",
        providers: list[str] | None = None,
        threads: int = 1,
    ) -> Predictor:
        """Open ``path`` with ``threads`` intra-op threads (blocking; seconds for a big model).

        Several threads may call ``predict`` at once; with ``threads=1`` each call runs on
        its caller's thread, so N callers use N cores and no pool spins beside the decoders.
        """
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=providers or choose_providers(None)
        )
        shape = session.get_inputs()[0].shape
        size = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else INPUT_SIZE
        return cls(
            version=version,
            labels=list(labels),
            session=session,
            input_size=size,
            variant=variant,
        )

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def provider(self) -> str:
        """The provider doing the work: "CUDA" or "CPU"."""
        return self.providers[0].removesuffix("ExecutionProvider")

    def decode(self, data: bytes, *, max_pixels: int) -> np.ndarray:
        """Encoded image → this model's uint8 input (raises ``InvalidImage`` with the reason)."""
        return decode_model_input(data, max_pixels=max_pixels, size=self.input_size)

    def decode_all(
        self, payloads: Sequence[bytes], *, max_pixels: int
    ) -> tuple[np.ndarray, list[InvalidImage | None]]:
        """The payloads that decode, stacked in order, and for each payload why it did not."""
        pixels: list[np.ndarray] = []
        errors: list[InvalidImage | None] = []
        for data in payloads:
            try:
                pixels.append(self.decode(data, max_pixels=max_pixels))
                errors.append(None)
            except InvalidImage as exc:
                errors.append(exc)
        if not pixels:
            return np.empty((0, self.input_size, self.input_size, 3), dtype=np.uint8), errors
        return np.stack(pixels), errors

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for uint8 NHWC images (blocking: call from a thread)."""
        (outputs,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: images})
        probabilities = np.asarray(outputs, dtype=np.float32)
        if probabilities.shape != (len(images), len(self.labels)):
            raise RuntimeError(
                f"model {self.version} returned shape {probabilities.shape} for "
                f"{len(images)} images and {len(self.labels)} labels"
            )
        return probabilities

    def top_k(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely genres of one row of ``predict``, best first."""
        order = np.argsort(probabilities)[::-1][:k]
        return [(self.labels[i], float(probabilities[i])) for i in order]
