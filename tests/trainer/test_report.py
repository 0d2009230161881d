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

from sleeve_common.registry import REPORT_IMAGES
from sleeve_trainer.report import (
    CALIBRATION_BINS,
    combine_histories,
    draw_report_figures,
    evaluate,
    pick_covers,
    plot_confusion_matrix,
    plot_cover_grid,
    plot_reliability_diagram,
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


def _title(image: Image.Image) -> str:
    """The title drawn on the figure, which it also stores as the PNG's Title text."""
    return str(image.text["Title"])


def _pixels(count: int) -> np.ndarray:
    """``count`` tiny covers; the n-th is filled with n, so a test can tell which it got."""
    return np.stack([np.full((8, 8, 3), n, dtype=np.uint8) for n in range(count)])


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
    # The probabilities given to the true classes are 0.8, 0.3, 0.7, 0.5, 0.7 and 0.1.
    assert result["log_loss"] == pytest.approx(
        -(math.log(0.8) + math.log(0.3) + 2 * math.log(0.7) + math.log(0.5) + math.log(0.1)) / 6
    )
    assert result["log_loss"] == pytest.approx(0.856033, abs=1e-6)
    # The report is stored as JSON: only plain Python values.
    assert json.loads(json.dumps(result)) == result


def test_evaluate_perfect_predictions() -> None:
    result = evaluate(np.array([0, 1, 2]), np.eye(3), LABELS)

    assert result["accuracy"] == result["macro_f1"] == result["top2_accuracy"] == 1.0
    assert result["top3_accuracy"] == 1.0
    assert result["log_loss"] == pytest.approx(0.0)
    assert result["expected_calibration_error"] == pytest.approx(0.0)
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_top_k_accuracy_ranks_ties_by_class_index() -> None:
    probabilities = np.array(
        [
            [0.1, 0.2, 0.3, 0.4],  # true a: 4th
            [0.1, 0.2, 0.3, 0.4],  # true b: 3rd
            [0.1, 0.2, 0.3, 0.4],  # true c: 2nd
            [0.25, 0.25, 0.25, 0.25],  # true d: a tie, ranked after a, b and c: 4th
        ]
    )

    result = evaluate(np.array([0, 1, 2, 3]), probabilities, ["a", "b", "c", "d"])

    assert result["accuracy"] == 0.0
    assert result["top2_accuracy"] == pytest.approx(1 / 4)
    assert result["top3_accuracy"] == pytest.approx(2 / 4)


def test_log_loss_clips_a_zero_probability() -> None:
    result = evaluate(np.array([0]), np.array([[0.0, 1.0, 0.0]]), LABELS)

    assert result["log_loss"] == pytest.approx(-math.log(1e-15))  # about 34.5, not infinity


def test_expected_calibration_error_on_hand_made_bins() -> None:
    # Top probabilities 0.9 (right, wrong, right) fall in bin 13, (13/15, 14/15];
    # 0.45 (right, wrong) in bin 6, (6/15, 7/15].
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.9, 0.05, 0.05],
            [0.05, 0.9, 0.05],
            [0.35, 0.45, 0.2],
            [0.45, 0.35, 0.2],
        ]
    )

    result = evaluate(np.array([0, 1, 1, 1, 1]), probabilities, LABELS)

    # 3/5 * |2/3 - 0.9| + 2/5 * |1/2 - 0.45| = 0.14 + 0.02
    assert result["expected_calibration_error"] == pytest.approx(0.16)
    bins = result["calibration_bins"]
    assert len(bins) == CALIBRATION_BINS == 15
    assert bins[13] == pytest.approx(
        {"lower": 13 / 15, "upper": 14 / 15, "count": 3, "confidence": 0.9, "accuracy": 2 / 3}
    )
    assert bins[6] == pytest.approx(
        {"lower": 6 / 15, "upper": 7 / 15, "count": 2, "confidence": 0.45, "accuracy": 0.5}
    )
    empty = [b for i, b in enumerate(bins) if i not in (6, 13)]
    assert all(b["count"] == 0 and b["confidence"] is b["accuracy"] is None for b in empty)


def test_calibration_bins_are_closed_on_the_right() -> None:
    # 0.2 is the upper edge of bin 2, (2/15, 3/15]; 1.0 that of the last bin.
    probabilities = np.array([[0.2] * 5, [1.0, 0.0, 0.0, 0.0, 0.0]])

    result = evaluate(np.array([0, 0]), probabilities, ["a", "b", "c", "d", "e"])

    counts = [b["count"] for b in result["calibration_bins"]]
    assert counts[2] == counts[14] == 1
    assert sum(counts) == 2
    assert result["expected_calibration_error"] == pytest.approx((1 - 0.2) / 2)


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

    image = _decode_png(plot_confusion_matrix(matrix, LABELS, version="v3"))

    assert image.format == "PNG"
    assert image.width > 200 and image.height > 200
    assert _title(image) == "v3 — confusion matrix"


def test_confusion_matrix_png_survives_an_empty_row() -> None:
    matrix = [[2, 0, 0], [0, 0, 0], [1, 0, 3]]

    image = _decode_png(plot_confusion_matrix(matrix, LABELS, version="v1"))

    assert image.format == "PNG"


def test_confusion_matrix_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError):
        plot_confusion_matrix([[1, 0], [0, 1]], LABELS, version="v1")


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

    image = _decode_png(plot_training_curves(history, version="v12"))

    assert image.format == "PNG"
    assert image.width > image.height
    assert _title(image) == "v12 — training curves"


def test_training_curves_png_single_phase_single_epoch() -> None:
    image = _decode_png(plot_training_curves({"loss": [0.5], "val_loss": [0.6]}, version="v1"))

    assert image.format == "PNG"


def test_training_curves_take_the_stored_json_history() -> None:
    """NaN is stored as null: a history read back from JSON draws as well."""
    history = {"loss": [1.0, None, 0.7], "val_loss": [None, 0.9, 0.8]}

    image = _decode_png(plot_training_curves(history, version="v1"))

    assert image.format == "PNG"


def test_training_curves_rejects_empty_history() -> None:
    with pytest.raises(ValueError):
        plot_training_curves({}, version="v1")


def test_reliability_diagram_png() -> None:
    metrics = evaluate(Y_TRUE, PROBABILITIES, LABELS)

    image = _decode_png(
        plot_reliability_diagram(
            metrics["calibration_bins"], metrics["expected_calibration_error"], version="v3"
        )
    )

    assert image.format == "PNG"
    ece = metrics["expected_calibration_error"]
    assert _title(image) == f"v3 — reliability diagram (ECE {ece:.3f})"


def test_pick_covers_most_confident_right_per_genre_and_wrong() -> None:
    # Right: 0 (Country, 0.8), 2 (Electronic, 0.7), 3 (Electronic, 0.5), 4 (Rock, 0.7).
    # Wrong: 1 (0.6, Country taken for Electronic), 5 (0.5, Rock taken for Country).
    picks = pick_covers(_pixels(6), Y_TRUE, PROBABILITIES, LABELS, mistakes=10)

    assert [int(c.pixels[0, 0, 0]) for c in picks.correct] == [0, 2, 4]
    assert [c.true_label for c in picks.correct] == LABELS
    assert all(c.correct for c in picks.correct)
    assert [int(c.pixels[0, 0, 0]) for c in picks.mistakes] == [1, 5]
    first = picks.mistakes[0]
    assert (first.true_label, first.predicted_label) == ("Country", "Electronic")
    assert first.confidence == pytest.approx(0.6)
    assert not first.correct

    fewer = pick_covers(_pixels(6), Y_TRUE, PROBABILITIES, LABELS, mistakes=1)
    assert [int(c.pixels[0, 0, 0]) for c in fewer.mistakes] == [1]


def test_pick_covers_rejects_images_not_aligned_with_answers() -> None:
    with pytest.raises(ValueError):
        pick_covers(_pixels(5), Y_TRUE, PROBABILITIES, LABELS)


def test_cover_grid_png() -> None:
    picks = pick_covers(_pixels(6), Y_TRUE, PROBABILITIES, LABELS)

    image = _decode_png(plot_cover_grid(picks, version="v7"))

    assert image.format == "PNG"
    assert _title(image) == "v7 — test covers"


def test_cover_grid_png_without_mistakes() -> None:
    picks = pick_covers(_pixels(3), np.array([0, 1, 2]), np.eye(3), LABELS)
    assert picks.mistakes == []

    image = _decode_png(plot_cover_grid(picks, version="v1"))

    assert image.format == "PNG"


def test_draw_report_figures_draws_every_report_image_titled_with_the_version() -> None:
    metrics = evaluate(Y_TRUE, PROBABILITIES, LABELS)

    figures = draw_report_figures(
        version="v5",
        labels=LABELS,
        metrics=json.loads(json.dumps(metrics)),  # as stored
        history={"loss": [1.0, 0.8], "val_loss": [1.1, None]},
        covers=pick_covers(_pixels(6), Y_TRUE, PROBABILITIES, LABELS),
    )

    assert list(figures) == list(REPORT_IMAGES)
    for png in figures.values():
        assert _title(_decode_png(png)).startswith("v5 — ")


def test_report_does_not_import_tensorflow() -> None:
    # The report runs wherever metrics are shown; it must not drag TensorFlow in.
    code = "import sys, sleeve_trainer.report; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == "False"
