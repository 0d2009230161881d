"""ONNX Runtime in the trainer: an exported model opened on the CPU and run over uint8 covers.

The export check and the automatic promotion run models this way. ONNX Runtime's own error
types share no base below ``Exception``; ``ORT_ERRORS`` lists them once for every caller.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from sleeve_common.model_signature import INPUT_NAME, OUTPUT_NAME

__all__ = ["ORT_ERRORS", "open_cpu_session", "predict_probabilities"]

ORT_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)


def open_cpu_session(onnx: bytes) -> ort.InferenceSession:
    """A session over the serialised model on the CPU provider (raises one of ``ORT_ERRORS``)."""
    return ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])


def predict_probabilities(
    session: ort.InferenceSession, images: np.ndarray, *, batch_size: int = 32
) -> np.ndarray:
    """Probabilities (N, classes) for a non-empty uint8 NHWC batch, ``batch_size`` at a time."""
    batches = []
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size])
        (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        batches.append(np.asarray(probabilities, dtype=np.float32))
    return np.concatenate(batches)
