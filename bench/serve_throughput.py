"""Serving benchmark: POST /v1/predict under load, as a fraction of this machine's limit.

Run with `make bench` (or `python bench/serve_throughput.py --help`). Everything is measured
in one run, on the same covers and the same cores, each server alone:

1. raw onnxruntime on decoded covers at batch 1/4/8/16/32 (every core, no decoding), and
   Sleeve's preprocessing alone on one thread;
2. the in-process limit: threads that decode real covers and run one shared session at the
   best batch, no HTTP; the best of "one thread per core, one onnxruntime thread each",
   "one thread, onnxruntime on every core" and "one thread per core, onnxruntime on every core";
3. Sleeve: `sleeve serve` in its own process on a temporary SQLite database and file store
   that hold the model, loaded by bench/loadgen.py (another process) at several concurrencies;
4. the naive server (bench/naive_server.py): one `session.run` per request, no batching;
5. LitServe (bench/litserve_server.py) with its own batching: the peer;
6. latency at a fixed arrival rate (open loop): Sleeve at 50%, 90% and 200% of its peak
   (past the peak the excess should get 503 at once), LitServe at 50% and 90% of its own, and
   Sleeve at LitServe's 90% rate (the p99 comparison at equal load).

The model is a MobileNetV2 exported by the trainer (ImageNet base, untrained 5-class head: its
speed does not depend on the head's weights) unless `--onnx FILE` is given. Covers are read
from ../shared/datasets/discogs5 (never copied). Servers bind 127.0.0.1 on free ports and are
stopped when the run ends, however it ends. The output is the machine, a line per measurement,
then a table of every figure against the in-process limit and the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from benchkit import (
    COVERS,
    export_model,
    free_port,
    machine,
    model_input,
    open_session,
    post,
    read_covers,
    register_model,
    request_body,
    say,
    server,
    usable_cores,
)

BENCH = Path(__file__).resolve().parent
_LOADGEN_DRAIN_S = 10.0  # loadgen.py's default --drain
_LOADGEN_SLACK_S = 60.0
_TARGET_SERVED = 0.85
_TARGET_PEER = 1.2


@dataclass
class Row:
    """One line of the final table."""

    name: str
    images_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    """Every row of the run, printed as it comes; the limit once it is known."""

    header: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    limit: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        ratio = f"{row.images_per_s / self.limit:5.2f}x limit" if self.limit else ""
        latency = (
            f"  p50 {row.p50_ms:7.1f} ms  p99 {row.p99_ms:7.1f} ms"
            if row.p99_ms is not None
            else ""
        )
        say(f"{row.name:<44} {row.images_per_s:8.1f} img/s {ratio}{latency}  {row.note}".rstrip())
        return row


# --- the model and the in-process measurements -------------------------------------------


def bench_raw(
    onnx: Path,
    providers: Sequence[str],
    images: list[np.ndarray],
    batches: Sequence[int],
    *,
    seconds: float,
    results: Results,
) -> int:
    """onnxruntime alone on decoded covers; returns the batch size with the best images/s."""
    session = open_session(onnx, providers)
    name = session.get_inputs()[0].name
    best: tuple[float, int] = (0.0, batches[0])
    for batch in batches:
        x = np.stack([images[i % len(images)] for i in range(batch)])
        session.run(None, {name: x})  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, {name: x})
            done += batch
        rate = done / (time.perf_counter() - start)
        results.add(Row(f"raw onnxruntime, batch {batch}", rate))
        best = max(best, (rate, batch))
    return best[1]


def bench_decode(covers: list[bytes], *, seconds: float, results: Results) -> None:
    """Sleeve's preprocessing alone, on one thread: what one core decodes."""
    done, start = 0, time.perf_counter()
    for data in itertools.cycle(covers):
        model_input(data)
        done += 1
        if (elapsed := time.perf_counter() - start) >= seconds:
            break
    results.add(Row("decode only (Sleeve's preprocessing), 1 thread", done / elapsed))


def bench_limit(
    onnx: Path,
    providers: Sequence[str],
    covers: list[bytes],
    batches: Sequence[int],
    raw_best: int,
    *,
    seconds: float,
    results: Results,
) -> float:
    """The in-process limit: decode + infer in threads, no HTTP.

    Three layouts of threads at onnxruntime's best batch, then the best layout at the other
    batch sizes (one onnxruntime thread may prefer another batch than every core does).
    """
    cores = usable_cores()
    layouts = list(dict.fromkeys([(cores, 1), (1, cores), (cores, cores)]))  # (threads, intra)
    points = [(threads, intra, raw_best) for threads, intra in layouts]
    best = (0.0, points[0])
    for point in points:
        best = max(best, (_limit_point(onnx, providers, covers, point, seconds, results), point))
    threads, intra, _ = best[1]
    for batch in batches:
        if batch != raw_best:
            point = (threads, intra, batch)
            best = max(
                best, (_limit_point(onnx, providers, covers, point, seconds, results), point)
            )
    return best[0]


def _limit_point(
    onnx: Path,
    providers: Sequence[str],
    covers: list[bytes],
    point: tuple[int, int, int],
    seconds: float,
    results: Results,
) -> float:
    threads, intra, batch = point
    rate = _decode_and_infer(
        onnx, providers, covers, batch, threads=threads, intra=intra, seconds=seconds
    )
    results.add(Row(f"in-process: {threads} thr x {intra} ort thr, batch {batch}", rate))
    return rate


def _decode_and_infer(
    onnx: Path,
    providers: Sequence[str],
    covers: list[bytes],
    batch: int,
    *,
    threads: int,
    intra: int,
    seconds: float,
) -> float:
    session = open_session(onnx, providers, intra_threads=intra)
    name = session.get_inputs()[0].name
    start_line = threading.Barrier(threads, timeout=60)

    def work(offset: int) -> float:
        stream = itertools.cycle(covers[offset:] + covers[:offset])

        def next_batch() -> np.ndarray:
            return np.stack([model_input(next(stream)) for _ in range(batch)])

        session.run(None, {name: next_batch()})  # warm-up, untimed
        start_line.wait()
        done, start = 0, time.perf_counter()
        while (now := time.perf_counter()) - start < seconds:
            session.run(None, {name: next_batch()})
            done += batch
        # Each thread's rate over its own span: no batch cut short at the end is lost.
        return done / (now - start)

    with ThreadPoolExecutor(threads) as pool:
        offsets = range(0, len(covers), max(1, len(covers) // threads))
        return sum(pool.map(work, offsets[:threads]))


# --- servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def sleeve_server(onnx: Path, tmp: Path, providers: Sequence[str]) -> Iterator[str]:
    """`sleeve serve` on a fresh SQLite database and file store holding the model; its URL."""
    port = free_port()
    state = tmp / f"sleeve-{port}"
    env = {
        **os.environ,
        "SLEEVE_DATABASE_URL": f"sqlite:///{state}/bench.db",
        "SLEEVE_STORE_URL": f"file://{state}/store",
        "SLEEVE_DATA_DIR": str(state / "var"),
        "SLEEVE_HOST": "127.0.0.1",
        "SLEEVE_PORT": str(port),
        "SLEEVE_LOG_LEVEL": "WARNING",
        "SLEEVE_ORT_PROVIDERS": ",".join(providers),
    }
    env.pop("SLEEVE_MODEL_VERSION", None)
    state.mkdir()
    sleeve = str(Path(sys.executable).with_name("sleeve"))
    upgrade = subprocess.run(
        [sleeve, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if upgrade.returncode != 0:
        raise RuntimeError(f"sleeve db upgrade failed: {upgrade.stdout}{upgrade.stderr}")
    from sleeve_common.settings import Settings

    asyncio.run(
        register_model(
            onnx,
            Settings(
                database_url=env["SLEEVE_DATABASE_URL"],
                store_url=env["SLEEVE_STORE_URL"],
                data_dir=Path(env["SLEEVE_DATA_DIR"]),
            ),
        )
    )
    base = f"http://127.0.0.1:{port}"
    with server([sleeve, "serve"], ready_url=f"{base}/readyz", log=state / "server.log", env=env):
        yield f"{base}/v1/predict"


@contextlib.contextmanager
def bench_server(script: str, onnx: Path, tmp: Path, extra: Sequence[str]) -> Iterator[str]:
    """One of this folder's servers (naive, LitServe) on a free port; its predict URL."""
    port = free_port()
    command = [sys.executable, str(BENCH / script), "--onnx", str(onnx), "--port", str(port)]
    health = "/health" if script.startswith("litserve") else "/healthz"
    base = f"http://127.0.0.1:{port}"
    log = tmp / f"{Path(script).stem}-{port}.log"
    with server([*command, *extra], ready_url=base + health, log=log):
        yield f"{base}/v1/predict"


# --- load ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """How every server is loaded in this run: bench/loadgen.py's arguments, the request form."""

    args: argparse.Namespace
    body: str
    images: int
    results: Results

    def sweep(self, name: str, url: str) -> Row:
        """Closed loop at each concurrency; the best row (the server's peak)."""
        rows = [
            self.results.add(_row(f"{name}, {c} in flight", self._run(url, concurrency=c)))
            for c in self.args.concurrency
        ]
        return max(rows, key=lambda row: row.images_per_s)

    def at_rate(self, name: str, url: str, images_per_s: float) -> Row:
        """Open loop: requests at a fixed rate carrying ``images_per_s`` images a second."""
        rate = round(images_per_s / self.images, 1)
        return self.results.add(_row(name, self._run(url, rate=rate)))

    def _run(self, url: str, **load: float) -> dict[str, Any]:
        """bench/loadgen.py in its own process; its JSON."""
        a = self.args
        options = {
            "url": url,
            "body": self.body,
            "images": self.images,
            "seconds": a.seconds,
            "warmup": a.warmup,
            "covers": a.covers,
            "count": a.count,
            **load,
        }
        command = [sys.executable, str(BENCH / "loadgen.py")]
        for key, value in options.items():
            command += [f"--{key}", str(value)]
        timeout = a.warmup + a.seconds + _LOADGEN_DRAIN_S + _LOADGEN_SLACK_S
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result


def _row(name: str, result: dict[str, Any]) -> Row:
    ok = result["latency_ms"].get("200", {})
    return Row(
        name, result["images_per_s"], ok.get("p50"), ok.get("p99"), _outcomes(result), result
    )


def _outcomes(result: dict[str, Any]) -> str:
    """Status counts, transport failures, 503 latency and the loadgen's own CPU, in one line."""
    parts = [f"{code}: {count}" for code, count in result["status"].items()]
    parts += [
        f"{key}: {result[key]}" for key in ("errors", "not_sent", "unfinished") if result[key]
    ]
    if "503" in result["latency_ms"]:
        parts.append(f"503 p99 {result['latency_ms']['503']['p99']:.1f} ms")
    parts.append(f"loadgen {result['loadgen_cpu']:.0%} of a core")
    return ", ".join(parts)


def choose_body(url: str, args: argparse.Namespace, cover: bytes) -> str:
    """``--body auto``: one image as the raw body when the server takes it, else multipart."""
    if args.body != "auto":
        return str(args.body)
    if args.images > 1:
        return "multipart"
    status, _ = post(url, *request_body([cover], "raw"))
    return "raw" if status == 200 else "multipart"


# --- the run ------------------------------------------------------------------------------


@dataclass
class Peaks:
    """The rows the issue's targets are read from."""

    sleeve: Row
    naive: Row
    peer: Row
    peer_at_90: Row
    sleeve_at_peer_90: Row
    overload: Row


def run(args: argparse.Namespace, tmp: Path) -> Results:
    providers = args.providers.split(",")
    results = Results(header=[*machine(providers), _sleeve_settings()])
    say(*results.header)
    onnx = args.onnx or export_model(tmp / "model.onnx")
    covers = read_covers(args.covers, args.count)
    say(
        f"model:   {onnx} ({onnx.stat().st_size / 1e6:.1f} MB); {len(covers)} covers "
        f"from {args.covers}; {args.seconds:g} s per point after {args.warmup:g} s warm-up",
        "",
    )
    decoded = [model_input(data) for data in covers[:32]]
    batch = bench_raw(onnx, providers, decoded, args.batches, seconds=args.seconds, results=results)
    bench_decode(covers, seconds=args.seconds, results=results)
    results.limit = bench_limit(
        onnx, providers, covers, args.batches, batch, seconds=args.seconds, results=results
    )
    say(f"{'in-process limit (the best above)':<44} {results.limit:8.1f} img/s", "")
    _summary(results, measure_servers(args, onnx, tmp, covers[0], results))
    return results


def measure_servers(
    args: argparse.Namespace, onnx: Path, tmp: Path, probe: bytes, results: Results
) -> Peaks:
    """Each server alone: Sleeve, the naive server, LitServe, then Sleeve's latency ladder."""
    providers = args.providers.split(",")
    with sleeve_server(onnx, tmp, providers) as url:
        body = choose_body(url, args, probe)
        load = Load(args, body, 1 if body == "raw" else args.images, results)
        say(f"request body: {body}, {load.images} image(s) per request")
        sleeve = load.sweep("Sleeve", url)
    with bench_server("naive_server.py", onnx, tmp, ["--providers", args.providers]) as url:
        naive = load.sweep("naive server", url)
    litserve = {
        "providers": args.providers,
        "body": body,
        "max-batch-size": args.litserve_batch,
        "batch-timeout": args.litserve_timeout,
        "workers": args.litserve_workers,
    }
    options = [part for key, value in litserve.items() for part in (f"--{key}", str(value))]
    with bench_server("litserve_server.py", onnx, tmp, options) as url:
        peer = load.sweep("LitServe", url)
        load.at_rate("LitServe, open loop at 50% of its peak", url, 0.5 * peer.images_per_s)
        peer_at_90 = load.at_rate(
            "LitServe, open loop at 90% of its peak", url, 0.9 * peer.images_per_s
        )
    say("")
    with sleeve_server(onnx, tmp, providers) as url:
        for fraction in (0.5, 0.9):
            name = f"Sleeve, open loop at {fraction:.0%} of its peak"
            load.at_rate(name, url, fraction * sleeve.images_per_s)
        overload = load.at_rate(
            "Sleeve, open loop at 200% of its peak", url, 2 * sleeve.images_per_s
        )
        same_load = load.at_rate(
            "Sleeve, open loop at LitServe's 90% rate", url, 0.9 * peer.images_per_s
        )
    return Peaks(sleeve, naive, peer, peer_at_90, same_load, overload)


def _sleeve_settings() -> str:
    tuned = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("SLEEVE_"))
    return f"sleeve:  {' '.join(tuned) if tuned else 'default settings (no SLEEVE_* set)'}"


def _summary(results: Results, peaks: Peaks) -> None:
    """The table of every figure against the limit, then the issue's targets."""
    limit = results.limit
    say(
        "",
        "| measurement | images/s | x limit | p50 ms | p99 ms (200s) | notes |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    )
    for row in results.rows:
        cells = [
            row.name,
            f"{row.images_per_s:.1f}",
            f"{_ratio(row.images_per_s, limit):.2f}",
            "" if row.p50_ms is None else f"{row.p50_ms:.1f}",
            "" if row.p99_ms is None else f"{row.p99_ms:.1f}",
            row.note,
        ]
        say(f"| {' | '.join(cells)} |")
    sleeve, peer = peaks.sleeve.images_per_s, peaks.peer.images_per_s
    mine, theirs = peaks.sleeve_at_peer_90.p99_ms, peaks.peer_at_90.p99_ms
    say(
        "",
        f"in-process limit: {limit:.1f} img/s",
        _verdict("Sleeve peak / limit", _ratio(sleeve, limit), _TARGET_SERVED),
        f"naive peak / limit: {_ratio(peaks.naive.images_per_s, limit):.2f}; "
        f"Sleeve / naive: {_ratio(sleeve, peaks.naive.images_per_s):.2f}x",
        _verdict("Sleeve peak / LitServe peak", _ratio(sleeve, peer), _TARGET_PEER),
        f"p99 at LitServe's 90% rate: Sleeve {_ms(mine)}, LitServe {_ms(theirs)} (target: Sleeve "
        f"equal or lower: {_met(mine is not None and theirs is not None and mine <= theirs)})",
        _overload_line(peaks.overload),
    )


def _overload_line(row: Row) -> str:
    """Past the peak: what was admitted and how fast, what was refused and how fast."""
    result = row.raw
    status, latency = result["status"], result["latency_ms"]
    refused = latency.get("503", {})
    line = (
        f"at 200% of Sleeve's peak ({result['rate']:g} requests/s offered): "
        f"{status.get('200', 0)} admitted, p50 {_ms(row.p50_ms)}, p99 {_ms(row.p99_ms)}; "
        f"{status.get('503', 0)} refused with 503, p50 {_ms(refused.get('p50'))}, "
        f"p99 {_ms(refused.get('p99'))}"
    )
    other = [f"{code}: {n}" for code, n in status.items() if code not in ("200", "503")]
    other += [
        f"{key}: {result[key]}" for key in ("errors", "not_sent", "unfinished") if result[key]
    ]
    return line + (f"; also {', '.join(other)}" if other else "")


def _ratio(value: float, base: float) -> float:
    return value / base if base else math.nan


def _verdict(what: str, ratio: float, target: float) -> str:
    return f"{what}: {ratio:.2f} (target >= {target}: {_met(ratio >= target)})"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, help="an exported Sleeve model (default: export one)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="load before each point")
    parser.add_argument("--covers", default=COVERS, help="glob of cover files")
    parser.add_argument("--count", type=int, default=256, help="covers used")
    parser.add_argument("--batches", type=_ints, default=[1, 4, 8, 16, 32])
    parser.add_argument(
        "--concurrency",
        type=_ints,
        default=[1, 4, 16, 64],
        help="closed-loop points for each server",
    )
    parser.add_argument("--body", choices=("auto", "raw", "multipart"), default="auto")
    parser.add_argument("--images", type=int, default=1, help="per request, multipart only")
    parser.add_argument(
        "--providers",
        default="CPUExecutionProvider",
        help="onnxruntime providers for every measurement and server",
    )
    parser.add_argument("--litserve-batch", type=int, default=8, help="its max_batch_size")
    parser.add_argument("--litserve-timeout", type=float, default=0.002, help="batch_timeout s")
    parser.add_argument(
        "--litserve-workers",
        type=int,
        default=usable_cores(),
        help="its workers_per_device, each with cores/workers onnxruntime threads (default: "
        "one per core, its fastest layout here)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    # A plain SIGTERM would skip every `finally`: turn it into an exit that stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="sleeve-bench-") as tmp:
            results = run(args, Path(tmp))
    except KeyboardInterrupt:
        raise SystemExit("interrupted; every server this run started is stopped") from None
    if args.json:
        every = {"arguments": vars(args), **asdict(results)}
        args.json.write_text(json.dumps(every, indent=2, default=str))


if __name__ == "__main__":
    main()
