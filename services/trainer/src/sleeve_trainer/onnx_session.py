"""ONNX Runtime in the trainer: an exported model opened on the CPU and run over uint8 covers.

The export check, the variants and the automatic promotion run models this way, and check the
model signature here. ONNX Runtime's own error
types share no base below ``Exception``; ``ORT_ERRORS`` lists them once for every caller.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from sleeve_common.model_signature import INPUT_DTYPE, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from sleeve_trainer.exceptions import ExportMismatch

__all__ = ["ORT_ERRORS", "check_signature", "open_cpu_session", "predict_probabilities"]

ORT_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)


def open_cpu_session(onnx: bytes, *, threads: int | None = None) -> ort.InferenceSession:
    """A session over the serialised model on the CPU provider (raises one of ``ORT_ERRORS``);
    ``threads`` bounds its intra-op threads (default: ONNX Runtime's choice)."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def check_signature(session: ort.InferenceSession, num_classes: int) -> None:
    """``ExportMismatch`` unless the model keeps the signature (``model_signature``): one uint8
    ``image`` input of any batch size, fp32 ``probabilities`` for ``num_classes`` out."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ExportMismatch(f"expected one input, found {[i.name for i in inputs]}")
    (image,) = inputs
    if image.name != INPUT_NAME or image.type != f"tensor({INPUT_DTYPE})":
        raise ExportMismatch(
            f"expected {INPUT_DTYPE} input {INPUT_NAME!r}, found {image.type} {image.name!r}"
        )
    shape = list(image.shape)
    # A fixed integer batch dimension would refuse every other batch size at serving time.
    batch_is_dynamic = len(shape) == 4 and not isinstance(shape[0], int)
    if not batch_is_dynamic or tuple(shape[1:]) != INPUT_SHAPE:
        raise ExportMismatch(f"expected input shape [N, *{list(INPUT_SHAPE)}], got {shape}")
    outputs = {output.name: output for output in session.get_outputs()}
    if OUTPUT_NAME not in outputs:
        raise ExportMismatch(f"no output {OUTPUT_NAME!r} among {sorted(outputs)}")
    if outputs[OUTPUT_NAME].type != "tensor(float)":
        raise ExportMismatch(f"expected float32 {OUTPUT_NAME!r}, found {outputs[OUTPUT_NAME].type}")
    width = outputs[OUTPUT_NAME].shape[-1]
    if isinstance(width, int) and width != num_classes:
        raise ExportMismatch(f"ONNX gives {width} probabilities, the model {num_classes}")


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
