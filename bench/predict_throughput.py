"""Throughput of the served model: raw onnxruntime (the ceiling) against POST /v1/predict.

Run with `make bench`. It exports a MobileNetV2 classifier (ImageNet base, untrained 5-class
head: speed does not depend on the head's weights) unless `--onnx FILE` is given, then times:

1. onnxruntime.InferenceSession.run on pre-decoded uint8 batches (the limit of this machine);
2. decode + resize of real covers (Pillow, the server's preprocessing);
3. the real server (uvicorn on loopback) answering multipart uploads of real covers.

It prints the machine and one line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COVERS = ROOT.parent / "shared" / "datasets" / "discogs5"
WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"
LABELS = ["country", "electronic", "hiphop", "pop", "rock"]


def machine() -> str:
    import onnxruntime as ort

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})"
    )


def export_model(path: Path) -> None:
    from sleeve_trainer.export import export_onnx
    from sleeve_trainer.model import build_classifier, build_head, load_base

    base = load_base(str(WEIGHTS))
    path.write_bytes(export_onnx(build_classifier(base, build_head(len(LABELS), dropout=0.0))))


def cover_bytes(count: int) -> list[bytes]:
    files = sorted(COVERS.glob("*/*.jpg"))[:count]
    return [f.read_bytes() for f in files]


def rate(images: int, seconds: float) -> str:
    return f"{images / seconds:8.1f} img/s"


def bench_raw(onnx: Path, batches: list[int], seconds: float) -> None:
    import onnxruntime as ort

    from sleeve_inference.predictor import choose_providers

    session = ort.InferenceSession(str(onnx), providers=choose_providers(None))
    rng = np.random.default_rng(0)
    for batch in batches:
        x = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
        session.run(None, {"image": x})  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, {"image": x})
            done += batch
        print(f"raw onnxruntime     batch {batch:>3}: {rate(done, time.perf_counter() - start)}")  # noqa: T201


def bench_decode(covers: list[bytes]) -> None:
    from sleeve_common.images import decode_model_input

    start = time.perf_counter()
    for data in covers:
        decode_model_input(data)
    print(f"decode + resize (Pillow, 1 core)  : {rate(len(covers), time.perf_counter() - start)}")  # noqa: T201


async def bench_http(
    onnx: Path, covers: list[bytes], per_request: list[int], seconds: float
) -> None:
    import httpx
    import uvicorn

    from sleeve_common.db import upgrade_database
    from sleeve_common.registry import register_model_version
    from sleeve_common.runtime import open_runtime
    from sleeve_common.settings import Settings
    from sleeve_inference.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings = Settings(
            database_url=f"sqlite:///{tmp}/bench.db",
            store_url=f"file://{tmp}/store",
            data_dir=Path(tmp) / "var",
            port=port,
            log_level="WARNING",
        )
        await asyncio.to_thread(upgrade_database, settings.database_url)
        data = onnx.read_bytes()
        async with open_runtime(settings) as runtime:
            import hashlib

            await runtime.store.put("models/bench/model.onnx", data)
            await register_model_version(
                db=runtime.db,
                training_run_id=None,
                labels=LABELS,
                input_spec={},
                metrics={},
                onnx_key="models/bench/model.onnx",
                onnx_sha256=hashlib.sha256(data).hexdigest(),
                onnx_bytes=len(data),
                report_keys={},
            )
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for n in per_request:
                files = [
                    ("files", (f"{i}.jpg", covers[i % len(covers)], "image/jpeg")) for i in range(n)
                ]
                await client.post("/v1/predict", files=files)  # warm-up
                latencies, done, start = [], 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    t = time.perf_counter()
                    response = await client.post("/v1/predict", files=files)
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - t)
                    done += n
                p50 = statistics.median(latencies) * 1000
                p95 = sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000
                print(  # noqa: T201
                    f"HTTP /v1/predict {n:>3} per request: "
                    f"{rate(done, time.perf_counter() - start)}"
                    f"   p50 {p50:7.1f} ms   p95 {p95:7.1f} ms"
                )
        server.should_exit = True
        await serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, help="an exported Sleeve model (default: export one)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    args = parser.parse_args()
    print(f"machine: {machine()}")  # noqa: T201
    print(f"date:    {time.strftime('%Y-%m-%d %H:%M %Z')}")  # noqa: T201
    with tempfile.TemporaryDirectory() as tmp:
        onnx = args.onnx or Path(tmp) / "model.onnx"
        if args.onnx is None:
            export_model(onnx)
        covers = cover_bytes(64)
        bench_raw(onnx, [1, 8, 32], args.seconds)
        bench_decode(covers)
        asyncio.run(bench_http(onnx, covers, [1, 8, 32], args.seconds))


if __name__ == "__main__":
    main()
