"""The ML core end to end on real covers: embeddings, head training, classifier, ONNX export.

Runs on a dozen covers from the shared discogs5 set with the offline ImageNet weights;
the base loads once per module because building MobileNetV2 dominates the cost.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import tf2onnx

from sleeve_common.images import decode_model_input
from sleeve_trainer.exceptions import DatasetTooSmall, ExportMismatch, TrainerError
from sleeve_trainer.export import export_onnx, verify_export
from sleeve_trainer.fit import class_weights, fine_tune, fit_head
from sleeve_trainer.model import (
    build_classifier,
    build_head,
    build_top,
    cut_layer,
    load_base,
)
from sleeve_trainer.trunk import ActivationCache, Trunk, trunk_activations, weights_id
from sleeve_trainer.views import VIEW_COUNT, cover_views

pytestmark = pytest.mark.slow

KIT = Path(__file__).resolve().parents[3] / "shared"
BASE_WEIGHTS = os.environ.get(
    "SLEEVE_TEST_BASE_WEIGHTS", str(KIT / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5")
)
DISCOGS5 = KIT / "datasets" / "discogs5"
COVERS_PER_GENRE = (3, 3, 2, 2, 2)
BATCH = 8


class Covers:
    """Real covers as model inputs, with their genre index and file sha256 as cache key."""

    def __init__(self) -> None:
        genres = sorted(path.name for path in DISCOGS5.iterdir() if path.is_dir())
        assert len(genres) == len(COVERS_PER_GENRE), genres
        images, labels, keys = [], [], []
        for label, (genre, count) in enumerate(zip(genres, COVERS_PER_GENRE, strict=True)):
            for path in sorted((DISCOGS5 / genre).glob("*.jpg"))[:count]:
                data = path.read_bytes()
                images.append(decode_model_input(data))
                labels.append(label)
                keys.append(hashlib.sha256(data).hexdigest())
        self.genres = genres
        self.images = np.stack(images)
        self.labels = np.array(labels)
        self.keys = keys

    def loader(self) -> Callable[[str], np.ndarray]:
        by_key = dict(zip(self.keys, self.images, strict=True))
        return by_key.__getitem__


@pytest.fixture(scope="module")
def covers() -> Covers:
    assert DISCOGS5.is_dir(), f"test covers missing: {DISCOGS5}"
    return Covers()


@pytest.fixture(scope="module")
def base() -> keras.Model:
    assert Path(BASE_WEIGHTS).is_file(), f"base weights missing: {BASE_WEIGHTS}"
    return load_base(BASE_WEIGHTS)


CUT = "block_14_add"  # two blocks may train


@pytest.fixture(scope="module")
def trunk(base: keras.Model, tmp_path_factory: pytest.TempPathFactory) -> Trunk:
    cache = ActivationCache(tmp_path_factory.mktemp("trunk"), weights_id(BASE_WEIGHTS), CUT)
    return Trunk(base, CUT, cache)


@pytest.fixture(scope="module")
def activations(trunk: Trunk, covers: Covers) -> np.ndarray:
    return trunk.run(covers.images)


@pytest.fixture(scope="module")
def embeddings(base: keras.Model, activations: np.ndarray) -> np.ndarray:
    return np.asarray(build_top(base, CUT).predict_on_batch(activations.astype(np.float32)))


@pytest.fixture(scope="module")
def head(embeddings: np.ndarray, covers: Covers) -> keras.Model:
    head = build_head(len(covers.genres), dropout=0.2)
    fit_head(
        head,
        embeddings,
        covers.labels,
        embeddings[::2],
        covers.labels[::2],
        epochs=2,
        learning_rate=1e-3,
        batch_size=4,
        class_weight=class_weights(covers.labels, len(covers.genres)),
        on_epoch=None,
    )
    return head


@pytest.fixture(scope="module")
def classifier(base: keras.Model, head: keras.Model) -> keras.Model:
    return build_classifier(base, head)


@pytest.fixture(scope="module")
def onnx_bytes(classifier: keras.Model) -> bytes:
    return export_onnx(classifier)


def test_trunk_then_top_is_the_whole_base(
    base: keras.Model, covers: Covers, activations: np.ndarray, embeddings: np.ndarray
) -> None:
    whole = base.predict_on_batch(covers.images.astype(np.float32) / 127.5 - 1.0)

    assert activations.shape == (len(covers.images), 7, 7, 160)
    assert activations.dtype == np.float16
    assert embeddings.shape == (len(covers.images), 1280) and embeddings.std() > 0
    # ONNX Runtime's float32 activations, stored as float16, then the top in Keras.
    np.testing.assert_allclose(embeddings, whole, rtol=2e-2, atol=2e-2)


def test_the_cut_is_the_last_layer_below_the_trained_blocks(base: keras.Model) -> None:
    assert cut_layer(base, 1) == "block_15_add"
    assert cut_layer(base, 2) == CUT
    assert cut_layer(base, 3) == "block_13_project_BN"  # block 13 halves the size: no add
    for blocks in (0, 16):
        with pytest.raises(ValueError, match="unfreeze_blocks"):
            cut_layer(base, blocks)


def test_views_are_the_served_input_crops_and_mirrors(covers: Covers) -> None:
    data = sorted((DISCOGS5 / covers.genres[0]).glob("*.jpg"))[0].read_bytes()

    views = cover_views(data)

    assert views.shape == (VIEW_COUNT, 224, 224, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[0], decode_model_input(data))  # what is served
    np.testing.assert_array_equal(views[6], views[0][:, ::-1])  # the mirrors follow
    assert len({view.tobytes() for view in views}) == VIEW_COUNT  # twelve different views
    np.testing.assert_array_equal(cover_views(data, augment=False), views[:1])


def test_cache_second_run_needs_no_images(
    trunk: Trunk, covers: Covers, activations: np.ndarray, tmp_path: Path
) -> None:
    cache = ActivationCache(tmp_path, weights_id(BASE_WEIGHTS), CUT)
    assert cache.get(covers.keys[0], 1) is None
    counted: list[int] = []

    def one_view(key: str) -> np.ndarray:
        return covers.loader()(key)[None]

    first = trunk_activations(trunk, cache, covers.keys, one_view, views=1, on_cover=counted.append)

    np.testing.assert_array_equal(np.concatenate(first), activations)
    assert counted == list(range(1, len(covers.keys) + 1))
    assert cache.get(covers.keys[0], VIEW_COUNT) is None  # another number of views: a miss

    def no_images(key: str) -> np.ndarray:
        raise AssertionError(f"cover {key} should have come from the cache")

    second = trunk_activations(trunk, cache, covers.keys, no_images, views=1)

    np.testing.assert_array_equal(np.concatenate(second), np.concatenate(first))


def test_cache_is_keyed_by_base_and_cut(
    covers: Covers, activations: np.ndarray, tmp_path: Path
) -> None:
    ActivationCache(tmp_path, "a" * 64, CUT).put(covers.keys[0], activations[:1])

    assert ActivationCache(tmp_path, "a" * 64, CUT).get(covers.keys[0], 1) is not None
    assert ActivationCache(tmp_path, "b" * 64, CUT).get(covers.keys[0], 1) is None
    assert ActivationCache(tmp_path, "a" * 64, "block_15_add").get(covers.keys[0], 1) is None


def test_cache_ignores_a_corrupt_entry(
    covers: Covers, activations: np.ndarray, tmp_path: Path
) -> None:
    cache = ActivationCache(tmp_path, "a" * 64, CUT)
    for key, row in zip(covers.keys[:2], activations[:2], strict=True):
        cache.put(key, row[None])
    (entry,) = tmp_path.rglob(f"{covers.keys[0]}-1.npy")
    entry.write_bytes(b"not an array")

    assert cache.get(covers.keys[0], 1) is None
    assert cache.get(covers.keys[1], 1) is not None


def test_cache_refuses_keys_and_names_that_could_reach_other_files(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path, "a" * 64, CUT)
    with pytest.raises(ValueError):
        cache.get("../../etc/passwd", 1)
    with pytest.raises(ValueError):
        ActivationCache(tmp_path, "a" * 64, "../up")


def test_fit_head_reports_history(embeddings: np.ndarray, covers: Covers) -> None:
    head = build_head(len(covers.genres), dropout=0.2)
    epochs: list[tuple[int, dict[str, float]]] = []

    history = fit_head(
        head,
        embeddings,
        covers.labels,
        embeddings[::3],
        covers.labels[::3],
        epochs=2,
        learning_rate=1e-3,
        batch_size=4,
        class_weight=None,
        on_epoch=lambda epoch, logs: epochs.append((epoch, logs)),
    )

    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 2, key
        assert all(np.isfinite(history[key]))
    assert [epoch for epoch, _ in epochs] == [1, 2]
    assert epochs[-1][1]["val_loss"] == pytest.approx(history["val_loss"][-1])


def test_fit_head_refuses_an_empty_split(embeddings: np.ndarray, covers: Covers) -> None:
    with pytest.raises(DatasetTooSmall):
        fit_head(
            build_head(len(covers.genres), dropout=0.0),
            embeddings,
            covers.labels,
            embeddings[:0],
            covers.labels[:0],
            epochs=1,
            learning_rate=1e-3,
            batch_size=4,
            class_weight=None,
            on_epoch=None,
        )


def test_class_weights_are_balanced() -> None:
    weights = class_weights(np.array([0, 0, 0, 1]), 2)

    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    with pytest.raises(DatasetTooSmall):
        class_weights(np.array([0, 0, 1]), 3)


def test_classifier_matches_head_on_embeddings(
    classifier: keras.Model, head: keras.Model, covers: Covers, embeddings: np.ndarray
) -> None:
    from_images = classifier.predict_on_batch(covers.images)
    from_embeddings = head.predict_on_batch(embeddings)

    assert from_images.shape == (len(covers.images), len(covers.genres))
    np.testing.assert_allclose(from_images.sum(axis=1), 1.0, atol=1e-5)
    # The embeddings are kept as float16: the head sees them rounded.
    np.testing.assert_allclose(from_images, from_embeddings, rtol=0, atol=1e-3)


def test_export_verifies_and_accepts_any_batch_size(
    onnx_bytes: bytes, classifier: keras.Model, covers: Covers
) -> None:
    difference = verify_export(onnx_bytes, classifier, covers.images)

    assert difference < 1e-4
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    for size in (1, 3):
        (probabilities,) = session.run(["probabilities"], {"image": covers.images[:size]})
        assert probabilities.shape == (size, len(covers.genres))


def _tiny_model(dtype: str, num_classes: int) -> keras.Model:
    images = keras.Input((224, 224, 3), dtype=dtype, name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.ops.cast(images, "float32") / 255.0)
    return keras.Model(images, keras.layers.Dense(num_classes, activation="softmax")(pooled))


def test_verify_refuses_another_models_export(classifier: keras.Model, covers: Covers) -> None:
    # Same contract (uint8 image in, five probabilities out), other weights.
    other = export_onnx(_tiny_model("uint8", len(covers.genres)))

    with pytest.raises(ExportMismatch, match="differ"):
        verify_export(other, classifier, covers.images[:2])


def test_verify_refuses_a_float_input(classifier: keras.Model, covers: Covers) -> None:
    other = _tiny_model("float32", len(covers.genres))
    spec = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": other(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)

    with pytest.raises(ExportMismatch, match="uint8"):
        verify_export(proto.SerializeToString(), classifier, covers.images[:2])


def test_load_base_refuses_missing_or_broken_weights(tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match=r"not found.*SLEEVE_BASE_WEIGHTS"):
        load_base(str(tmp_path / "missing.h5"))
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5 at all")
    with pytest.raises(TrainerError):
        load_base(str(broken))
    with pytest.raises(TrainerError):
        weights_id(str(tmp_path / "missing.h5"))


def test_a_failed_imagenet_download_names_the_setting_for_a_local_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def offline(*_args: object, **_kwargs: object) -> None:
        # What keras.utils.get_file raises without a network (no request is made here).
        raise Exception("URL fetch failure on https://storage.googleapis.com/…: None -- [Errno -3]")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(TrainerError) as caught:
        load_base("imagenet")
    assert "cannot download the ImageNet weights" in str(caught.value)
    assert "set SLEEVE_BASE_WEIGHTS to the path of a local copy of" in str(caught.value)


def test_fine_tune_trains_only_the_top_without_touching_bn(covers: Covers, tmp_path: Path) -> None:
    # Its own base: fine-tuning changes weights the module's other tests rely on.
    base = load_base(BASE_WEIGHTS)
    cut = cut_layer(base, 1)
    assert cut is not None
    activations = Trunk(base, cut, ActivationCache(tmp_path, "a" * 64, cut)).run(covers.images)
    head = build_head(len(covers.genres), dropout=0.2)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers}
    # Eight covers holding every genre (class weights need them all), the rest validate.
    train = np.array([0, 1, 3, 4, 6, 8, 10, 11])
    val = np.setdiff1d(np.arange(len(covers.images)), train)
    # Two views per training cover: as is and mirrored (one is drawn per epoch).
    mirrored = Trunk(base, cut, ActivationCache(tmp_path, "a" * 64, cut)).run(
        np.ascontiguousarray(covers.images[train, :, ::-1])
    )
    epochs: list[int] = []

    history = fine_tune(
        build_top(base, cut),
        head,
        base,
        [np.stack(pair) for pair in zip(activations[train], mirrored, strict=True)],
        covers.labels[train],
        activations[val],
        covers.labels[val],
        epochs=2,
        learning_rate=1e-4,
        unfreeze_blocks=1,
        batch_size=4,
        on_epoch=lambda epoch, _logs: epochs.append(epoch),
        class_weight=class_weights(covers.labels[train], len(covers.genres)),
    )

    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert epochs == list(range(1, len(history["loss"]) + 1))

    def changed(name: str) -> bool:
        after = base.get_layer(name).get_weights()
        return any(not np.array_equal(a, b) for a, b in zip(before[name], after, strict=True))

    assert changed("block_16_project") and changed("Conv_1")
    assert not changed("block_15_project")
    assert not changed("block_16_project_BN") and not changed("Conv_1_bn")
    assert not base.trainable
    # The exported classifier carries the fine-tuned weights (it shares the base's layers).
    classifier = build_classifier(base, head)
    expected = head.predict_on_batch(
        build_top(base, cut).predict_on_batch(activations[val].astype(np.float32))
    )
    np.testing.assert_allclose(
        classifier.predict_on_batch(covers.images[val]), expected, rtol=0, atol=2e-2
    )
