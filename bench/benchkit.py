"""What the serving benchmark's scripts share: covers, preprocessing, the model, the machine,
and servers run as subprocesses that are always stopped.

Only the standard library is imported at the top: ``loadgen.py`` imports this module too and
must start light. The scripts run as ``python bench/NAME.py``, so this folder is first on
``sys.path`` and ``import benchkit`` finds this file.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import platform
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sleeve_common.cpus import available_cpus

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime as ort

    from sleeve_common.settings import Settings

__all__ = [
    "COVERS",
    "LABELS",
    "ROOT",
    "WEIGHTS",
    "export_model",
    "free_port",
    "machine",
    "model_input",
    "open_session",
    "post",
    "predictions",
    "read_covers",
    "register_model",
    "request_body",
    "say",
    "select_covers",
    "server",
    "usable_cores",
]

ROOT = Path(__file__).resolve().parents[1]
COVERS = str(ROOT.parent / "shared" / "datasets" / "discogs5" / "*" / "*.jpg")
WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"
LABELS = ["country", "electronic", "hiphop", "pop", "rock"]

_STOP_GRACE_S = 10.0
_POLL_S = 0.1
_BOUNDARY = b"sleeve-bench-7d1f0c2a9e"


def say(*lines: str) -> None:
    """The benchmark's output: every figure goes through here, to stdout, at once."""
    for line in lines:
        print(line, flush=True)  # noqa: T201


def select_covers(pattern: str, count: int) -> list[str]:
    """``count`` covers spread evenly over the sorted matches (so over every genre folder)."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no covers match {pattern}")
    step = max(1, len(files) // count)
    return files[::step][:count]


def read_covers(pattern: str, count: int) -> list[bytes]:
    return [Path(path).read_bytes() for path in select_covers(pattern, count)]


def model_input(data: bytes) -> np.ndarray:
    """Sleeve's preprocessing, the one the server runs: encoded cover → uint8 (224, 224, 3)."""
    from sleeve_common.images import decode_model_input

    return decode_model_input(data)


def export_model(path: Path) -> Path:
    """A MobileNetV2 exported by the trainer: ImageNet base, untrained 5-class head (its speed
    does not depend on the head's weights)."""
    from sleeve_trainer.export import export_onnx
    from sleeve_trainer.model import build_classifier, build_head, load_base

    # `make` points SLEEVE_BASE_WEIGHTS at the kit's file when it is there.
    base = load_base(os.environ.get("SLEEVE_BASE_WEIGHTS", str(WEIGHTS)))
    path.write_bytes(export_onnx(build_classifier(base, build_head(len(LABELS), dropout=0.0))))
    return path


async def register_model(onnx: Path, settings: Settings) -> None:
    """Put ``onnx`` in the settings' store and register it (the first version: production)."""
    from sleeve_common.registry import register_model_version
    from sleeve_common.runtime import open_runtime

    data = onnx.read_bytes()
    async with open_runtime(settings) as runtime:
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


def usable_cores() -> int:
    """Cores this process may run on, counted exactly as the server sizes its runners."""
    return available_cpus()


def machine(providers: Sequence[str] | None = None) -> list[str]:
    """Lines that say where the figures were taken; onnxruntime's only when given ``providers``."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        f"machine: {cpu}, {os.cpu_count()} logical CPUs, affinity "
        f"{sorted(os.sched_getaffinity(0))} and cgroup quota -> {usable_cores()} usable cores",
        f"python:  {platform.python_version()} ({platform.platform()})",
    ]
    if providers is not None:
        import onnxruntime as ort

        lines.append(
            f"onnxruntime {ort.__version__}: available "
            f"{', '.join(ort.get_available_providers())}; using {', '.join(providers)}"
        )
    return [*lines, f"date:    {time.strftime('%Y-%m-%d %H:%M %Z')}"]


def open_session(
    onnx: Path, providers: Sequence[str], *, intra_threads: int = 0
) -> ort.InferenceSession:
    """An onnxruntime session; ``intra_threads=0`` lets onnxruntime use every core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    return ort.InferenceSession(str(onnx), sess_options=options, providers=list(providers))


def predictions(probabilities: np.ndarray) -> dict[str, Any]:
    """The answer the bench's own servers give: every genre per image, best first."""
    rows = []
    for row in probabilities:
        order = sorted(range(len(LABELS)), key=lambda i: -float(row[i]))
        genres = [{"genre": LABELS[i], "probability": round(float(row[i]), 6)} for i in order]
        rows.append({"top_genre": genres[0]["genre"], "genres": genres})
    return {"predictions": rows}


def request_body(images: Sequence[bytes], body: str) -> tuple[bytes, str]:
    """One request's body and Content-Type: ``raw`` (one cover) or ``multipart`` ``files``."""
    if body == "raw":
        if len(images) != 1:
            raise ValueError("a raw body carries exactly one image")
        return images[0], "image/jpeg"
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="files"; filename="%d.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n%s\r\n" % (_BOUNDARY, index, data)
        for index, data in enumerate(images)
    ]
    body_bytes = b"".join(parts) + b"--%s--\r\n" % _BOUNDARY
    return body_bytes, f"multipart/form-data; boundary={_BOUNDARY.decode()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(
    command: Sequence[str],
    *,
    ready_url: str,
    log: Path,
    env: dict[str, str] | None = None,
    start_timeout_s: float = 120.0,
) -> Iterator[None]:
    """Run a server in its own process group until the block ends, however it ends.

    Ready when ``ready_url`` answers 200 (polled until ``start_timeout_s``). On the way out
    the whole group (a server's forked workers too) gets SIGTERM, then SIGKILL.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(process, ready_url, log, start_timeout_s)
        yield
    finally:
        _stop_group(process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log)}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(_POLL_S)
    raise RuntimeError(f"server not ready at {url} after {timeout_s:.0f} s:\n{_tail(log)}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, _STOP_GRACE_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait_s)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def post(url: str, body: bytes, content_type: str, timeout_s: float = 30.0) -> tuple[int, Any]:
    """One request with the standard library (probes, not load): status and decoded JSON."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
