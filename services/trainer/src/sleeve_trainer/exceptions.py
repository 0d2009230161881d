"""Errors of the trainer; the job runner decides what each one means for the job.

SleeveError                (sleeve_common)
 └── TrainerError          training cannot go on: bad base weights, bad inputs
      ├── ExportMismatch   the ONNX graph does not reproduce the Keras model
      └── DatasetTooSmall  too few covers (or a class with none) to train or evaluate
"""

from __future__ import annotations

from sleeve_common.exceptions import SleeveError

__all__ = ["DatasetTooSmall", "ExportMismatch", "TrainerError"]


class TrainerError(SleeveError):
    """Training cannot go on; the message says why."""


class ExportMismatch(TrainerError):
    """The exported ONNX graph breaks its contract or disagrees with the Keras model."""


class DatasetTooSmall(TrainerError):
    """Too few examples to train, validate or weight the classes."""
