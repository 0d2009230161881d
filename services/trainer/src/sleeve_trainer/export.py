"""ONNX export of the classifier, and the check every export passes before registration.

The graph's contract, relied on by the inference service: one input ``image``,
uint8 NHWC (N, 224, 224, 3) with a dynamic batch dimension, and one output
``probabilities`` (N, num_classes). Scaling happens inside the graph.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf
import tf2onnx

from sleeve_common.model_signature import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from sleeve_trainer.exceptions import ExportMismatch
from sleeve_trainer.onnx_session import ORT_ERRORS, check_signature, open_cpu_session

__all__ = ["export_onnx", "verify_export"]

logger = logging.getLogger(__name__)

_VERIFY_BATCH = 32


def export_onnx(
    classifier: keras.Model, *, output_name: str = OUTPUT_NAME, opset: int = 17
) -> bytes:
    """Serialised ONNX model of ``classifier`` (uint8 ``image`` in, ``probabilities`` out, or
    ``output_name`` for another model on the same input, such as the training trunk)."""
    spec = (tf.TensorSpec((None, *INPUT_SHAPE), tf.uint8, name=INPUT_NAME),)

    @tf.function(input_signature=spec)  # type: ignore[misc]
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {output_name: classifier(image, training=False)}

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    data: bytes = model_proto.SerializeToString()
    logger.info("exported %s to ONNX opset %d: %d bytes", classifier.name, opset, len(data))
    return data


def verify_export(
    onnx_bytes: bytes,
    classifier: keras.Model,
    images: np.ndarray,
    *,
    tolerance: float = 1e-4,
) -> float:
    """Max abs difference of ONNX Runtime (CPU) and Keras probabilities on ``images``.

    Raises ``ExportMismatch`` if the graph breaks its contract or the difference
    exceeds ``tolerance``.
    """
    if images.dtype != np.uint8 or images.shape[1:] != INPUT_SHAPE or not len(images):
        raise ValueError(
            f"expected a non-empty uint8 batch (N, *{INPUT_SHAPE}), "
            f"got {images.dtype} {images.shape}"
        )
    try:
        session = open_cpu_session(onnx_bytes)
    except ORT_ERRORS as exc:
        raise ExportMismatch(f"ONNX Runtime cannot load the export: {exc}") from exc
    num_classes = int(classifier.output_shape[-1])
    check_signature(session, num_classes)
    worst = 0.0
    for start in range(0, len(images), _VERIFY_BATCH):
        batch = np.ascontiguousarray(images[start : start + _VERIFY_BATCH])
        expected = np.asarray(classifier.predict_on_batch(batch), dtype=np.float32)
        try:
            (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        except ORT_ERRORS as exc:
            raise ExportMismatch(f"ONNX Runtime failed on the check images: {exc}") from exc
        if actual.shape != expected.shape:
            raise ExportMismatch(f"ONNX output {actual.shape} but Keras output {expected.shape}")
        # NaN never compares greater than the tolerance, so it is caught explicitly.
        if not np.all(np.isfinite(actual)):
            raise ExportMismatch("ONNX output is not finite")
        worst = max(worst, float(np.max(np.abs(actual - expected))))
    if worst > tolerance:
        raise ExportMismatch(f"ONNX and Keras differ by {worst:.3g} (tolerance {tolerance:.3g})")
    logger.info("export verified on %d images: max abs difference %.3g", len(images), worst)
    return worst
