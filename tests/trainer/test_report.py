"""Evaluation metrics on hand-made predictions, and the report's PNG figures."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sleeve_trainer.report import (
    combine_histories,
    evaluate,
    plot_confusion_matrix,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = ["Country", "Electronic", "Rock"]

# Predictions 0, 1, 1, 1, 2, 0 for truths 0, 0, 1, 1, 2, 2; second choices make
# sample 1 a top-2 hit and sample 5 a top-2 miss.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
PROBABILITIES = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.3, 0.6, 0.1],
        [0.1, 0.7, 0.2],
        [0.2, 0.5, 0.3],
        [0.1, 0.2, 0.7],
        [0.5, 0.4, 0.1],
    ]
)


def _decode_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_evaluate_known_answers() -> None:
    result = evaluate(Y_TRUE, PROBABILITIES, LABELS)

    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["top2_accuracy"] == pytest.approx(5 / 6)
    assert result["per_class"]["Country"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert result["per_class"]["Electronic"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert result["per_class"]["Rock"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert result["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # The report is stored as JSON: only plain Python values.
    assert json.loads(json.dumps(result)) == result


def test_evaluate_perfect_predictions() -> None:
    result = evaluate(np.array([0, 1, 2]), np.eye(3), LABELS)

    assert result["accuracy"] == result["macro_f1"] == result["top2_accuracy"] == 1.0
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_evaluate_absent_class_scores_zero_without_nan() -> None:
    result = evaluate(np.array([0, 1]), np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]), LABELS)

    assert result["per_class"]["Rock"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["macro_f1"] == pytest.approx(2 / 3)
    assert not any(
        math.isnan(v) for scores in result["per_class"].values() for v in scores.values()
    )


@pytest.mark.parametrize(
    ("y_true", "probabilities"),
    [
        (np.array([0, 1]), np.ones((2, 2))),  # two columns for three labels
        (np.array([0, 1, 2]), np.ones((2, 3))),  # more truths than rows
        (np.array([0, 3]), np.ones((2, 3))),  # label out of range
        (np.zeros(0, dtype=int), np.ones((0, 3))),  # nothing to evaluate
    ],
)
def test_evaluate_rejects_inconsistent_input(y_true: np.ndarray, probabilities: np.ndarray) -> None:
    with pytest.raises(ValueError):
        evaluate(y_true, probabilities, LABELS)


def test_confusion_matrix_png() -> None:
    matrix = evaluate(Y_TRUE, PROBABILITIES, LABELS)["confusion_matrix"]

    image = _decode_png(plot_confusion_matrix(matrix, LABELS))

    assert image.format == "PNG"
    assert image.width > 200 and image.height > 200


def test_confusion_matrix_png_survives_an_empty_row() -> None:
    image = _decode_png(plot_confusion_matrix([[2, 0, 0], [0, 0, 0], [1, 0, 3]], LABELS))

    assert image.format == "PNG"


def test_confusion_matrix_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError):
        plot_confusion_matrix([[1, 0], [0, 1]], LABELS)


def test_combine_histories_marks_phases() -> None:
    phase1 = {"loss": [1.0, 0.8], "accuracy": [0.4, 0.5], "val_loss": [1.1, 0.9]}
    phase2 = {"loss": [0.7], "accuracy": [0.6], "val_loss": [0.85]}

    combined = combine_histories(phase1, phase2)

    assert combined["phase"] == [1.0, 1.0, 2.0]
    assert combined["loss"] == [1.0, 0.8, 0.7]
    assert combined["val_loss"] == [1.1, 0.9, 0.85]


def test_training_curves_png_with_phases() -> None:
    history = combine_histories(
        {
            "loss": [1.2, 0.9],
            "accuracy": [0.3, 0.5],
            "val_loss": [1.3, 1.0],
            "val_accuracy": [0.2, 0.4],
        },
        {
            "loss": [0.8, 0.7],
            "accuracy": [0.6, 0.7],
            "val_loss": [0.9, 0.9],
            "val_accuracy": [0.5, 0.5],
        },
    )

    image = _decode_png(plot_training_curves(history))

    assert image.format == "PNG"
    assert image.width > image.height


def test_training_curves_png_single_phase_single_epoch() -> None:
    image = _decode_png(plot_training_curves({"loss": [0.5], "val_loss": [0.6]}))

    assert image.format == "PNG"


def test_training_curves_rejects_empty_history() -> None:
    with pytest.raises(ValueError):
        plot_training_curves({})


def test_report_does_not_import_tensorflow() -> None:
    # The report runs wherever metrics are shown; it must not drag TensorFlow in.
    code = "import sys, sleeve_trainer.report; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == "False"
