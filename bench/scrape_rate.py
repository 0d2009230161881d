"""Scraper rate limit: the share of an API's allowed rate a real scrape uses, the API's limit
violations, and the scraper's memory over a run of 5,000 covers.

Run with `make bench-scrape` (or `python bench/scrape_rate.py --help`; `--covers 300` for a
quick look). It starts `bench/deezer_fake.py` in its own process: a local Deezer (the test
suite's fake, tests/scraper/fakes) whose answers all come `--latency-ms` late and which
refuses, with Deezer's own "Quota limit exceeded" answer, any request past `--rate` in any
sliding second, counting each as a violation. Its covers come from a separate image host, as
Deezer's `cover_xl` do, which does not count against the API's quota. The catalogue holds
`--covers` albums over five genre charts, each with a distinct real JPEG from
../shared/datasets/discogs5.

Then `sleeve scrape --source deezer` (`python -m sleeve_common scrape`) runs in a child process
against it, on a fresh SQLite database (`sleeve db upgrade` first) and a temporary data folder
and store, with SLEEVE_DEEZER_RATE=`--rate` and SLEEVE_DOWNLOAD_RATE=`--download-rate` (the
image host's, set above the API's so that the API is what paces the run). The benchmark
samples the child's RSS every 0.5 s. Per album the source asks `/album/{id}` for its genres
and downloads its cover, so the API requests grow with the covers: 5,000 covers take about
5,050 requests, at least 4.2 minutes at 20 requests/s.

Figures: requests the fake saw, the wall time, the achieved rate over the span from the first
API request to the last against the allowed rate (target ≥ 0.95), violations (target 0),
covers stored, and RSS as the run passes each fifth of the covers (target: flat, the peak at
the end within 10 % of the peak after the first fifth). Where a shortfall comes from: the
gaps between API requests, the fake's time per answer, how many requests overlapped, and the
scraper's own time from one answer to its next request.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit import free_port, machine, say, server

ROOT = Path(__file__).resolve().parents[1]
_FAKE = ROOT / "bench" / "deezer_fake.py"
_GENRES = "jazz,metal,pop,rock,hiphop"  # one chart each in the fake (deezer_fake.CHARTS)
_SAMPLE_S = 0.5
_TARGET_SHARE = 0.95
_TARGET_GROWTH = 0.10
_STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Sample:
    """One look at the scraper: seconds since its start, covers served so far, RSS and peak."""

    at: float
    covers: int
    rss_kb: int
    peak_kb: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--covers", type=int, default=5000, help="albums in the catalogue")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="API requests/s allowed (at least 1)"
    )
    parser.add_argument("--latency-ms", type=float, default=50.0, help="of every answer")
    parser.add_argument(
        "--download-rate",
        type=float,
        default=50.0,
        help="SLEEVE_DOWNLOAD_RATE: covers/s from the image host, outside the API's quota",
    )
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="for the scrape")
    args = parser.parse_args()
    if args.rate < 1 or args.covers < 1:
        parser.error("--rate must be at least 1 and --covers at least 1")
    say(*machine())
    limit = math.floor(args.rate)
    say(
        f"fake Deezer: {args.covers} albums over the charts of {_GENRES}, "
        f"{args.latency_ms:g} ms per answer, at most {limit} API requests in any sliding second; "
        f"covers from a separate image host (not counted against the API's quota)"
    )
    with tempfile.TemporaryDirectory(prefix="sleeve-scrape-bench-") as tmp:
        state = Path(tmp)
        api_port, cdn_port = free_port(), free_port()
        cdn = f"http://127.0.0.1:{cdn_port}"
        fake_env = os.environ | {"PYTHONPATH": str(ROOT / "tests")}
        command = [
            sys.executable,
            str(_FAKE),
            f"--api-port={api_port}",
            f"--cdn-port={cdn_port}",
            f"--covers={args.covers}",
            f"--limit={limit}",
            f"--latency-ms={args.latency_ms}",
        ]
        with server(
            command, ready_url=f"{cdn}/_bench/progress", log=state / "fake.log", env=fake_env
        ):
            env = _settings(state, api_port, args.rate, args.download_rate)
            upgrade = [sys.executable, "-m", "sleeve_common", "db", "upgrade"]
            done = subprocess.run(upgrade, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"sleeve db upgrade failed:\n{done.stdout}{done.stderr}")
            per_genre = math.ceil(args.covers / len(_GENRES.split(",")))
            wall_s, samples, summary = scrape(state, env, cdn, per_genre, args.timeout_s)
            stats = _get(f"{cdn}/_bench/stats")
        report(args, wall_s, samples, summary, stats, _stored(state / "sleeve.db"))


def _settings(state: Path, api_port: int, rate: float, download_rate: float) -> dict[str, str]:
    """The scrape's environment: a fresh database, store and data folder; the fake's URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEVE_")}
    return env | {
        "SLEEVE_DATABASE_URL": f"sqlite:///{state / 'sleeve.db'}",
        "SLEEVE_STORE_URL": f"file://{state / 'store'}",
        "SLEEVE_DATA_DIR": str(state / "var"),
        "SLEEVE_LOG_LEVEL": "WARNING",
        "SLEEVE_DEEZER_BASE_URL": f"http://127.0.0.1:{api_port}",
        "SLEEVE_DEEZER_RATE": str(rate),
        "SLEEVE_DOWNLOAD_RATE": str(download_rate),
    }


def scrape(
    state: Path, env: dict[str, str], cdn: str, per_genre: int, timeout_s: float
) -> tuple[float, list[Sample], str]:
    """Run `sleeve scrape --source deezer` to its end, sampling it: wall time, samples, summary."""
    command = [sys.executable, "-m", "sleeve_common", "scrape", "--source", "deezer"]
    command += ["--genres", _GENRES, "--per-genre", str(per_genre)]
    out, log = state / "scrape.out", state / "scrape.log"
    samples: list[Sample] = []
    with out.open("wb") as stdout, log.open("wb") as stderr:
        started = time.monotonic()
        child = subprocess.Popen(
            command, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
    try:
        while True:
            try:
                child.wait(timeout=_SAMPLE_S)
                break
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - started
            if elapsed > timeout_s:
                raise RuntimeError(f"the scrape ran past {timeout_s:.0f} s:\n{_tail(log)}")
            memory = _memory_kb(child.pid)
            if memory is not None:
                covers = int(_get(f"{cdn}/_bench/progress")["covers_served"])
                samples.append(Sample(elapsed, covers, *memory))
        wall_s = time.monotonic() - started
    finally:
        _stop(child)
    if child.returncode != 0:
        raise RuntimeError(f"the scrape exited with {child.returncode}:\n{_tail(log)}")
    return wall_s, samples, out.read_text().strip()


def report(
    args: argparse.Namespace,
    wall_s: float,
    samples: list[Sample],
    summary: str,
    stats: dict[str, Any],
    stored: dict[str, int],
) -> None:
    arrivals: list[float] = stats["api_arrivals"]
    requests = len(arrivals)
    span = arrivals[-1] - arrivals[0] if requests > 1 else float("nan")
    achieved = (requests - 1) / span if requests > 1 else float("nan")
    share = achieved / args.rate
    violations = int(stats["violations"])
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(stats["api_kinds"].items()))
    say(
        "",
        f"scrape: {summary}",
        f"albums stored: {stored.get('accepted', 0)} accepted, "
        f"{stored.get('rejected', 0)} rejected; covers served by the image host: "
        f"{stats['covers_served']}",
        f"API requests: {requests} ({kinds}); wall time of `sleeve scrape` {wall_s:.1f} s "
        f"(first to last API request {span:.1f} s; at {args.rate:g}/s they need at least "
        f"{(requests - 1) / args.rate:.1f} s)",
        f"achieved rate: {achieved:.2f} requests/s over that span = {share:.3f} of the allowed "
        f"{args.rate:g}/s; {requests / wall_s:.2f}/s over the whole wall time",
        f"max API requests in any sliding 1 s: {_densest(arrivals)}; violations seen by the fake: "
        f"{violations}",
    )
    _gaps(arrivals, args.rate)
    _turnaround(stats["api_answered"])
    growth = _memory(samples, args.covers)
    say(
        "",
        f"target share >= {_TARGET_SHARE:.2f}: {share:.3f} -> "
        f"{'met' if share >= _TARGET_SHARE else 'MISSED'}",
        f"target violations = 0: {violations} -> {'met' if violations == 0 else 'MISSED'}",
        f"target memory flat (peak growth after the first fifth < {_TARGET_GROWTH:.0%}): "
        + (
            f"{growth:+.1%} -> {'met' if growth < _TARGET_GROWTH else 'MISSED'}"
            if growth is not None
            else "too few samples"
        ),
    )


def _gaps(arrivals: list[float], rate: float) -> None:
    """Where the time between API requests went: the limiter's spacing or something slower."""
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    if len(gaps) < 2:
        return
    spacing = 1 / rate
    cuts = statistics.quantiles(gaps, n=100)
    lost = sum(max(0.0, gap - spacing) for gap in gaps)
    say(
        f"gaps between API requests (the limiter spaces them {spacing * 1000:.0f} ms): "
        f"min {min(gaps) * 1000:.1f} ms, median {cuts[49] * 1000:.1f}, p90 {cuts[89] * 1000:.1f}, "
        f"p99 {cuts[98] * 1000:.1f}, max {max(gaps) * 1000:.0f} ms; "
        f"time beyond the spacing {lost:.1f} s of {sum(gaps):.1f} s",
    )


def _turnaround(answered: list[list[float]]) -> None:
    """The time the fake took per API answer; the scraper took from one to its next request."""
    if len(answered) < 2:
        return
    served = [done - at for at, done in answered]
    turns = [later[0] - earlier[1] for earlier, later in itertools.pairwise(answered)]
    overlapped = sum(turn < 0 for turn in turns)
    serial = [turn for turn in turns if turn >= 0] or [0.0]
    say(
        f"the fake's time per API answer (latency included): median "
        f"{statistics.median(served) * 1000:.1f} ms; API requests sent while another was in "
        f"flight: {overlapped} of {len(turns)}; the scraper's time from an answer to its next "
        f"API request: median {statistics.median(serial) * 1000:.1f} ms, p90 "
        f"{statistics.quantiles(serial, n=10)[-1] * 1000:.1f} ms",
    )


def _memory(samples: list[Sample], covers: int) -> float | None:
    """RSS as the run passes each fifth of the covers; the peak's growth after the first fifth."""
    if not samples:
        say("memory: no samples (the scrape ended within 0.5 s)")
        return None
    say("", "scraper memory (RSS of `sleeve scrape`, sampled every 0.5 s):")
    peaks: list[int] = []
    for fifth in range(1, 6):
        mark = math.ceil(covers * fifth / 5)
        at = next((s for s in samples if s.covers >= mark), samples[-1])
        peaks.append(at.peak_kb)
        say(
            f"  {mark:>6} covers served ({at.at:6.1f} s): RSS {at.rss_kb / 1024:6.1f} MB, "
            f"peak so far {at.peak_kb / 1024:6.1f} MB"
        )
    say(f"  last sample ({samples[-1].at:.1f} s): peak {samples[-1].peak_kb / 1024:.1f} MB")
    return samples[-1].peak_kb / peaks[0] - 1


def _densest(arrivals: list[float]) -> int:
    """The most requests that arrived within any 1 s."""
    best, first = 0, 0
    for last, at in enumerate(arrivals):
        while at - arrivals[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


def _memory_kb(pid: int) -> tuple[int, int] | None:
    """``VmRSS`` and ``VmHWM`` (peak) of ``pid`` in kB, or None once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    values = {
        key: int(rest.split()[0])
        for key, _, rest in (line.partition(":") for line in lines)
        if key in ("VmRSS", "VmHWM")
    }
    if len(values) < 2:  # a zombie has no memory lines
        return None
    return values["VmRSS"], values["VmHWM"]


def _stored(db: Path) -> dict[str, int]:
    """Album rows by status, read once the scrape has ended."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT status, count(*) FROM albums GROUP BY status").fetchall()
    return {str(status): int(count) for status, count in rows}


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        doc: dict[str, Any] = json.loads(response.read())
    return doc


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
            child.wait(timeout=_STOP_GRACE_S)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


if __name__ == "__main__":
    main()
