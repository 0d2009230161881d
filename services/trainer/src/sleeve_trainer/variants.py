"""The fp16 and int8 variants of an exported model (``TrainRequest.variants``).

Each variant is converted from the fp32 ONNX file, checked against the model signature (uint8
``image`` in, fp32 ``probabilities`` out), scored on the test split and timed on this CPU beside
the fp32 file, measured the same way in the same run; then stored beside it
(``models/run-<id>/model-fp16.onnx``) and registered with the version
(``sleeve_common.model_files``). A variant that cannot be built fails the run: it was asked for.

- fp16: onnxconverter-common's float16 conversion. The uint8 input and the final softmax stay
  fp32 (``keep_io_types``, softmax on the op block list), so clients still get fp32
  probabilities. ONNX Runtime has few fp16 kernels for a CPU, which then runs most of the graph
  through casts: half the file, slower on a CPU (docs/performance.md); it is meant for GPUs.
- int8: ONNX Runtime's static quantization, QDQ format, uint8 activations and per-channel int8
  weights, calibrated (min/max) on a seeded sample of the run's training covers decoded by the
  common decode path; the softmax stays fp32. A third of the file, faster on a CPU. On x86
  CPUs without VNNI (AVX2 only) ONNX Runtime's int8 products saturate and its answers drift
  further from fp32: the ``agreement`` measured on the trainer's CPU says by how much.

Speeds are measured on one session per file using the cores this process may use, the files
taking turns (docs/performance.md has the figures and ``bench/variants.py`` reproduces them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnxconverter_common import float16
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from sleeve_common.cpus import available_cpus
from sleeve_common.images import decode_model_input
from sleeve_common.model_files import ExportVariant, ModelVariant
from sleeve_common.model_signature import INPUT_NAME, OUTPUT_NAME
from sleeve_trainer.exceptions import ExportMismatch
from sleeve_trainer.onnx_session import (
    ORT_ERRORS,
    check_signature,
    open_cpu_session,
    predict_probabilities,
)
from sleeve_trainer.report import evaluate

if TYPE_CHECKING:
    from sleeve_common.store import ObjectStore
    from sleeve_trainer.datasets import DatasetMemberRow

__all__ = ["build_variants", "images_per_second", "store_variants", "to_fp16", "to_int8"]

logger = logging.getLogger(__name__)

CALIBRATION_COVERS = 128
"""Training covers the int8 calibration runs (a seeded sample): 10 to 25 s for MobileNetV2 on
two cores."""
_CALIBRATION_BATCH = 16
_MEASURE_S = 1.0  # per model and batch size, in _ROUNDS turns of at least one call each
_ROUNDS = 3
# Everything ONNX Runtime's static quantization would quantize, but the softmax: the
# probabilities stay fp32 (quantized, they would move in steps of 1/256).
_INT8_OPS = sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - {"Softmax"})


def to_fp16(model: bytes) -> bytes:
    """The fp16 variant of an fp32 ONNX model: weights and activations in fp16, the uint8 input
    and the softmax producing the probabilities still fp32."""
    proto = onnx.load_from_string(model)
    _name_nodes(proto.graph)
    # The converter retypes a Cast's output to fp16 but leaves its ``to`` attribute at fp32,
    # which ONNX Runtime refuses: each Cast (the uint8 input's into float) is kept as it is
    # and followed by a cast to fp16 instead.
    casts = [node.name for node in proto.graph.node if node.op_type == "Cast"]
    with warnings.catch_warnings():
        # It warns for every weight tensor with values below fp16's range, which it rounds to
        # the smallest it keeps (1e-7): expected; the variant's test-split scores show the
        # effect.
        warnings.filterwarnings("ignore", "the float32 number .* will be truncated", UserWarning)
        half = float16.convert_float_to_float16(
            proto,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Softmax"],
            node_block_list=casts,
        )
    _probabilities_in_fp32(half)
    return bytes(half.SerializeToString())


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Name the nodes that have no name (tf2onnx names all; hand-built graphs may not): the
    converter's block list and the casts it inserts go by node names."""
    taken = {node.name for node in graph.node}
    for index, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _probabilities_in_fp32(model: onnx.ModelProto) -> None:
    """Drop the cast to fp16 that the converter puts after a blocked softmax producing a graph
    output (``keep_io_types`` misses it: the output was retyped fp16 first), so that the
    softmax writes the fp32 probabilities itself."""
    graph = model.graph
    (output,) = (o for o in graph.output if o.name == OUTPUT_NAME)
    producer = next(node for node in graph.node if OUTPUT_NAME in node.output)
    to_fp16_cast = producer.op_type == "Cast" and any(
        a.name == "to" and a.i == TensorProto.FLOAT16 for a in producer.attribute
    )
    if to_fp16_cast:
        source = producer.input[0]
        softmax = next(node for node in graph.node if source in node.output)
        if softmax.op_type != "Softmax":
            raise ExportMismatch(
                f"fp16: {OUTPUT_NAME!r} comes from a {softmax.op_type}, not the softmax"
            )
        softmax.output[list(softmax.output).index(source)] = OUTPUT_NAME
        graph.node.remove(producer)
        for info in [v for v in graph.value_info if v.name == source]:
            graph.value_info.remove(info)
    output.type.tensor_type.elem_type = TensorProto.FLOAT


class _TrainingCovers(CalibrationDataReader):  # type: ignore[misc]  # no stubs
    """The calibration's batches: encoded covers decoded as the server decodes them."""

    def __init__(self, covers: Sequence[bytes]) -> None:
        self._batches: Iterator[Sequence[bytes]] = (
            covers[start : start + _CALIBRATION_BATCH]
            for start in range(0, len(covers), _CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        return {INPUT_NAME: np.stack([decode_model_input(cover) for cover in batch])}


def to_int8(model: bytes, calibration_covers: Sequence[bytes]) -> bytes:
    """The int8 variant of an fp32 ONNX model (QDQ), calibrated on ``calibration_covers``."""
    if not calibration_covers:
        raise ValueError("the int8 calibration needs at least one cover")
    with tempfile.TemporaryDirectory(prefix="sleeve-int8-") as folder:
        fp32, prepared, int8 = (Path(folder) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(model)
        # ONNX's shape inference and graph optimisation; the symbolic shape inference (sympy,
        # not installed) is for graphs with symbolic sizes beyond the batch, as transformers.
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            int8,
            _TrainingCovers(calibration_covers),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=_INT8_OPS,
            per_channel=True,
            # uint8 activations: x86 CPUs multiply u8 by s8 fastest. Full 8-bit weights, not
            # ONNX Runtime's 7-bit ``reduce_range``: MobileNetV2's weights lose too much in 7
            # bits on any CPU, while the saturation that 7 bits avoid happens only on x86 CPUs
            # without VNNI (docs/performance.md has both measured).
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return int8.read_bytes()


def images_per_second(
    sessions: dict[str, ort.InferenceSession],
    images: np.ndarray,
    *,
    batch_size: int,
    measure_s: float,
) -> dict[str, float]:
    """Each session's images per second at ``batch_size`` images per call: its median call
    after a warm-up, over at least ``measure_s`` seconds and ``_ROUNDS`` calls. The sessions
    take turns, a round each, so that a load coming and going on the machine weighs on all."""
    batch = np.ascontiguousarray(np.resize(images, (batch_size, *images.shape[1:])))
    feed = {INPUT_NAME: batch}
    calls: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        session.run([OUTPUT_NAME], feed)
    for _ in range(_ROUNDS):
        for name, session in sessions.items():
            round_started = time.perf_counter()
            while True:
                before = time.perf_counter()
                session.run([OUTPUT_NAME], feed)
                calls[name].append(time.perf_counter() - before)
                if time.perf_counter() - round_started >= measure_s / _ROUNDS:
                    break
    return {name: batch_size / statistics.median(times) for name, times in calls.items()}


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _variant_key(onnx_key: str, name: str) -> str:
    """``models/run-1/model.onnx`` → ``models/run-1/model-fp16.onnx``."""
    return f"{onnx_key.removesuffix('.onnx')}-{name}.onnx"


def build_variants(
    model: bytes,
    names: Sequence[ExportVariant],
    *,
    onnx_key: str,
    labels: list[str],
    test_covers: Sequence[bytes],
    test_targets: np.ndarray,
    calibration_covers: Sequence[bytes],
    measure_s: float = _MEASURE_S,
) -> dict[str, tuple[bytes, ModelVariant]]:
    """The fp32 ``model`` (stored at ``onnx_key``) and its ``names`` variants, each with its
    file and record: scores on the test covers (``test_targets`` index ``labels``), agreement
    with fp32, speed at batch 1 and 32 on one CPU session per file (blocking, CPU-bound)."""
    threads = available_cpus()
    measured_on = f"{_cpu_name()}, {threads} threads, onnxruntime {ort.__version__}"
    files: dict[str, bytes] = {"fp32": model}
    for variant in names:
        started = time.perf_counter()
        converted = to_fp16(model) if variant == "fp16" else to_int8(model, calibration_covers)
        files[variant] = converted
        logger.info("built the %s variant in %.1f s", variant, time.perf_counter() - started)
    images = np.stack([decode_model_input(cover) for cover in test_covers])
    sessions: dict[str, ort.InferenceSession] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, data in files.items():
        try:
            sessions[name] = open_cpu_session(data, threads=threads)
            check_signature(sessions[name], len(labels))
            outputs[name] = predict_probabilities(sessions[name], images)
        except ORT_ERRORS as exc:
            raise ExportMismatch(f"the {name} model does not run: {exc}") from exc
        except ExportMismatch as exc:
            raise ExportMismatch(f"the {name} model breaks the signature: {exc}") from exc
        if not np.all(np.isfinite(outputs[name])):
            raise ExportMismatch(f"the {name} model gives probabilities that are not finite")
    batch_1, batch_32 = (
        images_per_second(sessions, images, batch_size=size, measure_s=measure_s)
        for size in (1, 32)
    )
    reference = outputs["fp32"]
    built: dict[str, tuple[bytes, ModelVariant]] = {}
    for name, data in files.items():
        probabilities = outputs[name]
        scores = evaluate(test_targets, probabilities, labels)
        built[name] = (
            data,
            ModelVariant(
                key=onnx_key if name == "fp32" else _variant_key(onnx_key, name),
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                accuracy=scores["accuracy"],
                macro_f1=scores["macro_f1"],
                agreement=float(np.mean(probabilities.argmax(1) == reference.argmax(1))),
                max_abs_diff=float(np.max(np.abs(probabilities - reference))),
                images_per_second_batch_1=batch_1[name],
                images_per_second_batch_32=batch_32[name],
                measured_on=measured_on,
            ),
        )
    return built


async def store_variants(
    store: ObjectStore,
    names: Sequence[ExportVariant],
    *,
    model: bytes,
    onnx_key: str,
    labels: list[str],
    members: list[DatasetMemberRow],
    covers: dict[str, bytes],
    seed: int,
) -> dict[str, ModelVariant]:
    """Build a training run's ``names`` variants of ``model`` (none: nothing to do), store
    their files beside ``onnx_key``, and return every file's record, fp32 included, for the
    registry. Scored on the dataset's test covers, calibrated on a ``seed``-ed sample of its
    training covers (``covers`` by content sha256)."""
    if not names:
        return {}
    train = [m for m in members if m.split == "train"]
    test = [m for m in members if m.split == "test"]
    sample = random.Random(seed).sample(train, min(CALIBRATION_COVERS, len(train)))
    built = await asyncio.to_thread(
        build_variants,
        model,
        names,
        onnx_key=onnx_key,
        labels=labels,
        test_covers=[covers[m.content_sha256] for m in test],
        test_targets=np.array([labels.index(m.genre) for m in test]),
        calibration_covers=[covers[m.content_sha256] for m in sample],
    )
    for name, (data, record) in built.items():
        if name != "fp32":
            await store.put(record.key, data)
    return {name: record for name, (_, record) in built.items()}
