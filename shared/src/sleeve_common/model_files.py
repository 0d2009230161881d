"""A model version's ONNX files: the fp32 export every version has, and the fp16 and int8
variants a training run may add beside it (``TrainRequest.variants``).

Every file keeps the model signature (``model_signature``): uint8 ``image`` in, fp32
``probabilities`` out, so the server, bulk scoring and clients cannot tell them apart. A
version's ``variants`` (``model_versions.variants``, also in its model card) maps each
variant's name to a ``ModelVariant``: the file in the store, its scores on the version's test
split and its speed on the trainer's CPU. ``fp32`` is listed there too, the version's own file
measured the same way in the same run, so that the three compare; a version trained without
variants has none. The server runs the file ``SLEEVE_MODEL_VARIANT`` names (``served_file``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from sleeve_common.models import ModelVersion

__all__ = [
    "EXPORT_VARIANTS",
    "ExportVariant",
    "ModelVariant",
    "OnnxFile",
    "ServedVariant",
    "served_file",
]

ExportVariant = Literal["fp16", "int8"]
"""A variant a training run can export beside the fp32 model."""
EXPORT_VARIANTS: tuple[str, ...] = ExportVariant.__args__  # type: ignore[attr-defined]

ServedVariant = Literal["fp32", "fp16", "int8"]
"""A file the server can run: the version's own (``fp32``) or one of its variants."""


class OnnxFile(BaseModel):
    """An exported model file in the object store."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(examples=["models/run-1/model.onnx"])
    sha256: str
    size_bytes: int


class ModelVariant(OnnxFile):
    """One ONNX file of a version, scored on its test split and timed on the trainer's CPU
    in the same run as the others."""

    accuracy: float = Field(description="top-1 accuracy on the version's test split")
    macro_f1: float = Field(description="F1 averaged over genres, unweighted, on that split")
    agreement: float = Field(
        description="share of the test covers whose top genre is the fp32 model's"
    )
    max_abs_diff: float = Field(
        description="largest difference from the fp32 model's probabilities on the test covers"
    )
    images_per_second_batch_1: float = Field(description="one image per call")
    images_per_second_batch_32: float = Field(description="32 images per call")
    measured_on: str = Field(
        description="the CPU, onnxruntime threads and version the speeds were measured with",
        examples=["AMD EPYC, 2 threads, onnxruntime 1.23.0"],
    )


def served_file(row: ModelVersion, variant: ServedVariant) -> OnnxFile | None:
    """The file of ``row`` that serves ``variant``; None when the version has no such variant."""
    if variant == "fp32":
        return OnnxFile(key=row.onnx_key, sha256=row.onnx_sha256, size_bytes=row.onnx_bytes)
    recorded = (row.variants or {}).get(variant)
    return None if recorded is None else OnnxFile.model_validate(recorded)
