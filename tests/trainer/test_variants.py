"""The fp16 and int8 variants of a model: the model signature kept, probabilities close to fp32
(fp16) or the same top genre (int8), every file scored, timed and stored beside the fp32 one.

The fast tests convert the tiny colour model of the API tests (``inference.harness``) and run
it on colour covers; the slow one trains a real model with variants, then reads their records
through the API and gets its answers from the int8 file (on SQLite only). Serving a variant is
tested in ``tests/inference/test_model_variants.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from inference.harness import LABELS, build_onnx_model, image_bytes, serve
from support import make_settings

from sleeve_common.model_files import ModelVariant
from sleeve_common.model_signature import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from sleeve_common.payloads import TrainRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime, open_runtime
from sleeve_trainer.datasets import dataset_members
from sleeve_trainer.variants import build_variants, store_variants

from .colours import GENRE_COLOURS, add_colour_covers, colour_dataset

MODEL = build_onnx_model()
ONNX_KEY = "models/run-1/model.onnx"
# Four shades of each genre's colour, in the model's label order.
SHADES = [
    (genre, tuple(min(255, c + 12 * shade) for c in GENRE_COLOURS[genre]))
    for shade in range(4)
    for genre in LABELS
]
COVERS = [image_bytes(colour) for _, colour in SHADES]
TARGETS = np.array([LABELS.index(genre) for genre, _ in SHADES])


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[bytes, ModelVariant]]:
    return build_variants(
        MODEL,
        ["fp16", "int8"],
        onnx_key=ONNX_KEY,
        labels=LABELS,
        test_covers=COVERS,
        test_targets=TARGETS,
        calibration_covers=COVERS[::2],
        measure_s=0.01,
    )


def _pixels(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, *INPUT_SHAPE), dtype=np.uint8)


def _producer(model: bytes, tensor: str) -> onnx.NodeProto:
    return next(n for n in onnx.load_from_string(model).graph.node if tensor in n.output)


@pytest.mark.parametrize("name", ["fp32", "fp16", "int8"])
def test_every_file_keeps_the_model_signature(
    built: dict[str, tuple[bytes, ModelVariant]], name: str
) -> None:
    session = ort.InferenceSession(built[name][0], providers=["CPUExecutionProvider"])

    [image] = session.get_inputs()
    assert (image.name, image.type) == (INPUT_NAME, "tensor(uint8)")
    assert not isinstance(image.shape[0], int) and tuple(image.shape[1:]) == INPUT_SHAPE
    [output] = session.get_outputs()
    assert (output.name, output.type) == (OUTPUT_NAME, "tensor(float)")
    for batch in (1, 5):
        (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: _pixels(batch)})
        assert probabilities.dtype == np.float32
        assert probabilities.shape == (batch, len(LABELS))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # The probabilities come straight from an fp32 softmax, quantized or half nowhere.
    assert _producer(built[name][0], OUTPUT_NAME).op_type == "Softmax"


def test_fp16_holds_its_weights_in_half_and_answers_close_to_fp32(
    built: dict[str, tuple[bytes, ModelVariant]],
) -> None:
    weights = onnx.load_from_string(built["fp16"][0]).graph.initializer
    assert {w.data_type for w in weights} == {onnx.TensorProto.FLOAT16}
    pixels = _pixels(8)
    fp32, fp16 = (
        ort.InferenceSession(built[name][0], providers=["CPUExecutionProvider"]).run(
            [OUTPUT_NAME], {INPUT_NAME: pixels}
        )[0]
        for name in ("fp32", "fp16")
    )

    np.testing.assert_allclose(fp16, fp32, atol=1e-3)


def test_int8_is_quantized_and_gives_the_same_top_genre(
    built: dict[str, tuple[bytes, ModelVariant]],
) -> None:
    ops = {n.op_type for n in onnx.load_from_string(built["int8"][0]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    record = built["int8"][1]

    assert record.agreement == 1.0  # every colour cover: its top genre is fp32's
    assert record.accuracy == 1.0
    assert 0 < record.max_abs_diff < 0.05


def test_each_file_is_recorded_with_its_scores_and_speed(
    built: dict[str, tuple[bytes, ModelVariant]],
) -> None:
    assert list(built) == ["fp32", "fp16", "int8"]
    keys = {name: record.key for name, (_, record) in built.items()}
    assert keys == {
        "fp32": ONNX_KEY,
        "fp16": "models/run-1/model-fp16.onnx",
        "int8": "models/run-1/model-int8.onnx",
    }
    assert built["fp32"][0] == MODEL
    for data, record in built.values():
        assert (record.sha256, record.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
        assert (record.accuracy, record.macro_f1) == (1.0, 1.0)
        assert record.images_per_second_batch_1 > 0 and record.images_per_second_batch_32 > 0
        assert "threads, onnxruntime" in record.measured_on
    assert (built["fp32"][1].agreement, built["fp32"][1].max_abs_diff) == (1.0, 0.0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_run_stores_the_files_it_was_asked_for_beside_its_model(runtime: Runtime) -> None:
    await add_colour_covers(runtime)
    dataset = await colour_dataset(runtime)
    _, members = await dataset_members(db=runtime.db, name=dataset.name)
    covers = {m.content_sha256: await runtime.store.get(m.cover_key) for m in members}
    arguments = {
        "model": MODEL,
        "onnx_key": "models/run-9/model.onnx",
        "labels": LABELS,
        "members": members,
        "covers": covers,
        "seed": 0,
    }

    assert await store_variants(runtime.store, (), **arguments) == {}
    assert await runtime.store.list("models/") == []
    records = await store_variants(runtime.store, ("int8",), **arguments)

    assert list(records) == ["fp32", "int8"]
    assert await runtime.store.list("models/") == ["models/run-9/model-int8.onnx"]
    stored = await runtime.store.get(records["int8"].key)
    assert hashlib.sha256(stored).hexdigest() == records["int8"].sha256
    # Scored on the dataset's test covers: 2 per genre, all right.
    assert (records["int8"].accuracy, records["fp32"].accuracy) == (1.0, 1.0)


# --- a real training run -----------------------------------------------------------------------


@pytest.mark.slow
# PostgreSQL's JSON column is read back in tests/inference/test_model_variants.py: one real
# training run is enough here.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_trained_model_registers_its_variants_and_serves_the_int8_one(
    tmp_path: Path, database_url: str
) -> None:
    from sleeve_inference.app import create_app
    from sleeve_trainer.training import run_training

    settings = make_settings(tmp_path, database_url)
    async with open_runtime(settings) as runtime:
        await add_colour_covers(runtime)
        await colour_dataset(runtime)
        options = TrainRequest(
            dataset="colours",
            epochs=10,
            fine_tune_epochs=0,
            batch_size=16,
            augment=False,
            variants=("fp16", "int8"),
        )

        trained = await run_training(runtime, options, on_progress=silent_progress)

        run_files = await runtime.store.list(f"models/run-{trained.run_id}/")
    serving = make_settings(tmp_path, database_url, model_variant="int8")
    async with serve(create_app(serving)) as api:
        detail = (await api.get(f"/v1/models/{trained.version}")).json()
        card = (await api.get(detail["card_url"])).json()
        answer = await api.post(
            "/v1/predict", files=[("files", ("red.png", image_bytes((230, 30, 30)), "image/png"))]
        )

    variants = detail["variants"]
    prefix = f"models/run-{trained.run_id}"
    assert {name: v["key"] for name, v in variants.items()} == {
        "fp32": f"{prefix}/model.onnx",
        "fp16": f"{prefix}/model-fp16.onnx",
        "int8": f"{prefix}/model-int8.onnx",
    }
    assert {f"{prefix}/model-fp16.onnx", f"{prefix}/model-int8.onnx"} <= set(run_files)
    assert variants["fp32"]["sha256"] == detail["onnx_sha256"]
    # MobileNetV2: half the file in fp16, under a third in int8.
    assert variants["fp16"]["size_bytes"] < 0.6 * detail["onnx_bytes"]
    assert variants["int8"]["size_bytes"] < 0.4 * detail["onnx_bytes"]
    # The fp32 file scores as the Keras model it was verified against did.
    assert variants["fp32"]["accuracy"] == pytest.approx(detail["metrics"]["accuracy"])
    assert variants["fp16"]["agreement"] == 1.0
    assert variants["fp16"]["max_abs_diff"] < 0.05  # after some 60 layers in half precision
    assert variants["int8"]["agreement"] >= 0.5, variants["int8"]
    for v in variants.values():
        assert v["images_per_second_batch_1"] > 0 and v["images_per_second_batch_32"] > 0
    assert card["variants"] == variants
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_version"], body["model_variant"]) == (trained.version, "int8")
    assert body["predictions"][0]["top_genre"] in GENRE_COLOURS
