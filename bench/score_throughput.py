"""Bulk-scoring benchmark: the local engine's images/s against the in-process limit, its memory
at 5,000 and at 50,000 items, and the Ray engine's images/s, in one run on the same cores.

Run with `make bench-score` (or `python bench/score_throughput.py --help`):

1. the in-process limit, measured exactly as the serving benchmark measures it (threads that
   decode real covers and run one shared session; the best layout and batch);
2. the covers put once into a local directory store and into a real S3 server (SeaweedFS on
   loopback, the one the tests start), each with a fresh SQLite database holding the model;
3. `sleeve score`'s code (create the job, run it with the default settings, write a JSONL
   export) in a child process per run, which reports its images/s and its peak RSS: the
   local engine on `store:covers/` in each store, then a CSV manifest of the same covers
   and one of 50,000 items (the covers repeated under new ids) for the memory comparison,
   then the Ray engine on the local store.

The model is a MobileNetV2 exported by the trainer (ImageNet base, untrained head). Covers are
read from ../shared/datasets/discogs5 (never copied into the project).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import COVERS, export_model, machine, register_model, say, select_covers
from serve_throughput import Results, Row, bench_limit

ROOT = Path(__file__).resolve().parents[1]
_TARGET_RATIO = 0.9
_TARGET_MEMORY = 0.2


def _settings(state: Path, extra: dict[str, str]) -> dict[str, str]:
    """Environment of one store's runs: a fresh SQLite database and data dir under ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEVE_")}
    return env | {
        "SLEEVE_DATABASE_URL": f"sqlite:///{state}/bench.db",
        "SLEEVE_DATA_DIR": str(state / "var"),
        "SLEEVE_LOG_LEVEL": "WARNING",
        **extra,
    }


def prepare_store(env: dict[str, str], onnx: Path, covers: list[str]) -> None:
    """Migrate the database, register the model and put the covers under ``covers/``."""
    subprocess.run([sys.executable, "-m", "sleeve_common", "db", "upgrade"], env=env, check=True)
    asyncio.run(_fill(env, onnx, covers))


async def _fill(env: dict[str, str], onnx: Path, covers: list[str]) -> None:
    from sleeve_common.runtime import open_runtime
    from sleeve_common.settings import load_settings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    await register_model(onnx, settings)
    async with open_runtime(settings) as runtime:
        for index, path in enumerate(covers):
            await runtime.store.put(f"covers/{index:06d}.jpg", Path(path).read_bytes())


def write_manifest(path: Path, covers: list[str], items: int) -> Path:
    """A CSV manifest of ``items`` ids whose ``path`` cycles over the covers."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path"])
        for index in range(items):
            writer.writerow([f"item-{index:07d}", covers[index % len(covers)]])
    return path


def score_in_child(env: dict[str, str], text: str, engine: str, tmp: Path) -> dict[str, Any]:
    """One scoring run in a fresh child process (this script with ``--child``): its figures."""
    output = tmp / f"out-{time.monotonic_ns()}.jsonl"
    command = [sys.executable, __file__, "--child", text, "--engine", engine, str(output)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scoring {text} failed:\n{done.stdout}{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


async def child(text: str, engine: str, output: Path) -> dict[str, Any]:
    """Create and run a scoring job as `sleeve score` does; images/s and peak RSS."""
    from sleeve_common.runtime import open_runtime
    from sleeve_common.settings import load_settings
    from sleeve_inference.scoring.exports import write_export
    from sleeve_inference.scoring.jobs import create_scoring_job, run_scoring

    settings = load_settings()
    async with open_runtime(settings) as runtime:
        job = await create_scoring_job(runtime=runtime, input=text, output=output, engine=engine)
        summary = await run_scoring(runtime, job.id)
        await write_export(db=runtime.db, scoring_job_id=job.id, path=output)
    return {
        "items": summary.total,
        "scored": summary.done,
        "failed": summary.failed,
        "images_per_s": summary.images_per_second,
        "elapsed_s": summary.elapsed_s,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run(args: argparse.Namespace, tmp: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import seaweedfs_s3  # the S3 server the tests start, on loopback

    providers = ["CPUExecutionProvider"]
    results = Results(header=machine(providers))
    say(*results.header)
    onnx = args.onnx or export_model(tmp / "model.onnx")
    covers = select_covers(args.covers, args.count)
    say(f"model: {onnx}; {len(covers)} covers from {args.covers}", "")

    payloads = [Path(p).read_bytes() for p in covers[: args.limit_covers]]
    results.limit = bench_limit(
        onnx,
        providers,
        payloads,
        args.batches,
        args.batches[0],
        seconds=args.seconds,
        results=results,
    )
    say(f"{'in-process limit (the best above)':<44} {results.limit:8.1f} img/s", "")

    local = _settings(tmp / "local", {"SLEEVE_STORE_URL": f"file://{tmp}/local/store"})
    prepare_store(local, onnx, covers)
    figures: dict[str, dict[str, Any]] = {}

    def measure(name: str, env: dict[str, str], text: str, engine: str = "local") -> None:
        found = score_in_child(env, text, engine, tmp)
        figures[name] = found
        note = f"{found['items']} items, peak RSS {found['peak_rss_mb']:.0f} MB"
        results.add(Row(name, found["images_per_s"], note=note))

    measure("local engine, store:covers/ (local directory)", local, "store:covers/")
    with seaweedfs_s3() as s3:
        remote = _settings(
            tmp / "s3",
            {
                "SLEEVE_STORE_URL": f"s3://{s3.bucket}/bench",
                "SLEEVE_S3_ENDPOINT": s3.endpoint,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            },
        )
        prepare_store(remote, onnx, covers)
        measure("local engine, store:covers/ (S3 server)", remote, "store:covers/")
    small = write_manifest(tmp / "small.csv", covers, len(covers))
    big = write_manifest(tmp / "big.csv", covers, args.big)
    measure(f"local engine, manifest of {len(covers)} paths", local, str(small))
    measure(f"local engine, manifest of {args.big} paths", local, str(big))
    if not args.skip_ray:
        measure("ray engine, store:covers/ (local directory)", local, "store:covers/", "ray")
    _summary(results, figures, len(covers), args.big)


def _summary(results: Results, figures: dict[str, dict[str, Any]], small: int, big: int) -> None:
    limit = results.limit
    say("", "| measurement | images/s | x limit | items | peak RSS MB |", "|---|---|---|---|---|")
    say(f"| in-process limit | {limit:.1f} | 1.00 | | |")
    for name, found in figures.items():
        say(
            f"| {name} | {found['images_per_s']:.1f} | {found['images_per_s'] / limit:.2f} | "
            f"{found['items']} | {found['peak_rss_mb']:.0f} |"
        )
    local = figures["local engine, store:covers/ (local directory)"]["images_per_s"] / limit
    s3 = figures["local engine, store:covers/ (S3 server)"]["images_per_s"] / limit
    memory_small = figures[f"local engine, manifest of {small} paths"]["peak_rss_mb"]
    memory_big = figures[f"local engine, manifest of {big} paths"]["peak_rss_mb"]
    growth = memory_big / memory_small - 1
    say(
        "",
        f"target: local engine >= {_TARGET_RATIO} x limit: local store {local:.2f}, "
        f"S3 {s3:.2f} -> {'met' if min(local, s3) >= _TARGET_RATIO else 'NOT met'}",
        f"target: peak RSS at {big} within {_TARGET_MEMORY:.0%} of {small}: "
        f"{memory_big:.0f} vs {memory_small:.0f} MB ({growth:+.0%}) -> "
        f"{'met' if abs(growth) <= _TARGET_MEMORY else 'NOT met'}",
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, help="an exported Sleeve model (default: export one)")
    parser.add_argument("--covers", default=COVERS, help="glob of cover files")
    parser.add_argument("--count", type=int, default=5000, help="covers in the catalog")
    parser.add_argument("--big", type=int, default=50_000, help="items of the memory run")
    parser.add_argument("--seconds", type=float, default=5.0, help="per in-process point")
    parser.add_argument("--limit-covers", type=int, default=256, help="covers the limit cycles")
    parser.add_argument(
        "--batches",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[8, 1, 32],
        help="batch sizes of the limit (first: the best raw)",
    )
    parser.add_argument("--skip-ray", action="store_true", help="leave out the Ray engine")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    parser.add_argument("output", nargs="?", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.engine, args.output))))  # noqa: T201
        return
    with tempfile.TemporaryDirectory(prefix="sleeve-score-bench-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
