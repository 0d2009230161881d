"""The fp16 and int8 variants against the fp32 model: file size, test scores, speed on this CPU.

    python bench/variants.py [--covers 1000] [--measure-s 3] [--model PATH]

Runs the trainer's own ``build_variants`` (what ``sleeve train --variants fp16,int8`` runs)
on a MobileNetV2-sized model: by default the ImageNet base with a softmax head fitted here on
the embeddings of 60% of ``--covers`` discogs5 covers (so that the scores mean something),
exported as the trainer exports; or any exported model given with ``--model`` (its labels in
benchkit's order). The other 40% are the test covers; the int8 calibration reads a sample of
the training ones. Speeds are images/s at batch 1 and 32, every core to one session, each the
median call over ``--measure-s`` seconds, all three files measured the same way in this run.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from benchkit import (
    COVERS,
    LABELS,
    WEIGHTS,
    machine,
    model_input,
    say,
    select_covers,
    usable_cores,
)


def _covers(count: int) -> tuple[list[bytes], np.ndarray]:
    """``count`` covers spread over the genre folders, shuffled, without the byte-identical
    files that sit in several folders; with their genre index into ``LABELS``."""
    paths = select_covers(COVERS, count)
    data = [Path(p).read_bytes() for p in paths]
    shas = [hashlib.sha256(d).hexdigest() for d in data]
    seen = Counter(shas)
    kept = [
        (d, LABELS.index(Path(p).parent.name.lower()))
        for p, d, s in zip(paths, data, shas, strict=True)
        if seen[s] == 1
    ]
    random.Random(0).shuffle(kept)
    return [d for d, _ in kept], np.array([t for _, t in kept])


def _trained_model(covers: list[bytes], targets: np.ndarray, folder: Path) -> bytes:
    """The trainer's classifier (ImageNet MobileNetV2, softmax head) with its head fitted on
    ``covers``, exported to ONNX as the trainer exports."""
    import keras

    from sleeve_trainer.export import export_onnx
    from sleeve_trainer.model import build_classifier, build_head, load_base

    keras.utils.set_random_seed(0)
    base = load_base(str(WEIGHTS))
    pixels = np.stack([model_input(c) for c in covers]).astype(np.float32) / 127.5 - 1.0
    started = time.perf_counter()
    embeddings = base.predict(pixels, batch_size=32, verbose=0)
    head = build_head(len(LABELS), dropout=0.2)
    head.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    head.fit(embeddings, targets, epochs=30, batch_size=32, verbose=0)
    say(f"head fitted on {len(covers)} covers in {time.perf_counter() - started:.0f} s")
    path = folder / "model.onnx"
    path.write_bytes(export_onnx(build_classifier(base, head)))
    return path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--covers", type=int, default=1000, help="discogs5 covers in all")
    parser.add_argument("--measure-s", type=float, default=3.0, help="per model and batch size")
    parser.add_argument("--model", type=Path, help="an exported model (default: fit one here)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("sleeve_trainer.variants").setLevel(logging.INFO)

    from sleeve_trainer.variants import CALIBRATION_COVERS, build_variants

    covers, targets = _covers(args.covers)
    split = int(len(covers) * 0.6)
    train, test = covers[:split], covers[split:]
    say(*machine(["CPUExecutionProvider"]), f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        if args.model is not None:
            model = args.model.read_bytes()
            say(f"model: {args.model}")
        else:
            model = _trained_model(train, targets[:split], Path(folder))
    calibration = random.Random(0).sample(train, min(CALIBRATION_COVERS, len(train)))
    say(f"covers: {len(train)} train ({len(calibration)} calibrate int8), {len(test)} test")
    started = time.perf_counter()
    built = build_variants(
        model,
        ["fp16", "int8"],
        onnx_key="bench/model.onnx",
        labels=LABELS,
        test_covers=test,
        test_targets=targets[split:],
        calibration_covers=calibration,
        measure_s=args.measure_s,
    )
    say(
        f"build_variants: {time.perf_counter() - started:.0f} s (conversions, scoring the "
        f"three files on {len(test)} covers, {args.measure_s:g} s of timing per file and batch)",
        "",
        "| file | size MB | top-1 | macro-F1 | same top genre as fp32 | max abs diff | "
        "images/s batch 1 | images/s batch 32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    )
    for name, (_, v) in built.items():
        say(
            f"| {name} | {v.size_bytes / 1e6:.1f} | {v.accuracy:.3f} | {v.macro_f1:.3f} | "
            f"{v.agreement:.3f} | {v.max_abs_diff:.3f} | {v.images_per_second_batch_1:.1f} | "
            f"{v.images_per_second_batch_32:.1f} |"
        )
    _exact_int8(built, test, targets[split:], args.measure_s)
    say(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine slows all rows)")


def _exact_int8(
    built: dict[str, tuple[bytes, Any]], test: list[bytes], truth: np.ndarray, measure_s: float
) -> None:
    """The int8 file once more, with ONNX Runtime's exact int8 products
    (``session.x64quantprecision``): what the file computes where the products cannot
    saturate (x86 with VNNI, ARM), at the speed of that mode on this CPU."""
    import onnxruntime as ort

    from sleeve_common.model_signature import INPUT_NAME, OUTPUT_NAME
    from sleeve_trainer.variants import images_per_second

    images = np.stack([model_input(c) for c in test])
    sessions = {}
    for name, exact in (("fp32", False), ("int8", True)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = usable_cores()
        if exact:
            options.add_session_config_entry("session.x64quantprecision", "1")
        sessions[name] = ort.InferenceSession(
            built[name][0], options, providers=["CPUExecutionProvider"]
        )
    fp32, int8 = (
        np.concatenate(
            [
                s.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + 32]})[0]
                for i in range(0, len(images), 32)
            ]
        )
        for s in sessions.values()
    )
    speed = {
        size: images_per_second(sessions, images, batch_size=size, measure_s=measure_s)
        for size in (1, 32)
    }
    say(
        "",
        f"int8 with exact products (session.x64quantprecision=1): top-1 "
        f"{np.mean(int8.argmax(1) == truth):.3f}, same top genre as fp32 "
        f"{np.mean(int8.argmax(1) == fp32.argmax(1)):.3f}, max abs diff "
        f"{np.max(np.abs(int8 - fp32)):.3f}, images/s {speed[1]['int8']:.1f} at batch 1, "
        f"{speed[32]['int8']:.1f} at batch 32 (fp32 beside it: {speed[1]['fp32']:.1f}, "
        f"{speed[32]['fp32']:.1f})",
    )


if __name__ == "__main__":
    main()
