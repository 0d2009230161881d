"""First run: wall time of `make run` on a fresh data folder until `/v1/predict` answers 200.

    PYTHONPATH=tests .venv/bin/python bench/first_run.py               # the kit's covers
    PYTHONPATH=tests .venv/bin/python bench/first_run.py --itunes-fake # iTunes at its polite rate

It runs `make -o install run` (the `run` recipe as typed, the one-off `uv sync` of `install`
skipped) from the repository root, with the database, store and caches in a new temporary
folder, so nothing is cached: no covers, no embeddings, no model. With `--itunes-fake` the
bootstrap source is `itunes` and its base URL a local fake of Apple's feed and Search API
(tests/scraper/fakes) serving kit covers from a fake image host: 300 albums for each default
genre (200 in the feed, the rest found by search), at the product's default polite rates
(SLEEVE_ITUNES_RATE 0.3 requests/s, SLEEVE_DOWNLOAD_RATE 10 covers/s). Every second it posts
a kit cover to `/v1/predict`; the first 200 ends the clock. Prints the machine, its load
before and after, the console's step lines with their times, and the wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from benchkit import free_port, say

ROOT = Path(__file__).resolve().parents[1]
COVERS = ROOT.parent / "shared" / "datasets" / "discogs5"
PER_GENRE = 300
# Apple's genre ids of the bootstrap's default genres, and the Search API term of each.
ITUNES_GENRES = {"6": "country", "7": "electronic", "18": "hip hop", "11": "jazz", "1153": "metal"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--itunes-fake", action="store_true", help="bootstrap from a local iTunes")
    parser.add_argument("--timeout-s", type=float, default=900)
    args = parser.parse_args()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    say(f"machine: {cpu}, {os.cpu_count()} cores; {when}")
    cover = sorted((COVERS / "Rock").glob("*.jpg"))[-1]
    with (
        tempfile.TemporaryDirectory(prefix="sleeve-first-run-") as tmp,
        _source(args.itunes_fake) as source_env,
    ):
        state = Path(tmp)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEVE_")}
        env |= {
            "SLEEVE_PORT": str(port),
            "SLEEVE_DATABASE_URL": f"sqlite:///{state / 'sleeve.db'}",
            "SLEEVE_STORE_URL": f"file://{state / 'store'}",
            "SLEEVE_DATA_DIR": str(state / "var"),
            **source_env,
        }
        say(f"load average before: {_load()}")
        console = state / "console.log"
        started = time.monotonic()
        with console.open("w") as out:
            stack = subprocess.Popen(
                ["make", "-o", "install", "run"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            elapsed = _until_predicted(f"http://127.0.0.1:{port}", cover, started, args.timeout_s)
        finally:
            os.killpg(stack.pid, signal.SIGINT)
            try:
                stack.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
        say(f"load average after: {_load()}")
        for line in console.read_text().splitlines():
            if line.startswith("sleeve: ") or " succeeded" in line or " claimed" in line:
                say(f"  {line}")
        say(f"first prediction {elapsed:.0f} s after `make run` started")


@contextlib.contextmanager
def _source(itunes_fake: bool) -> Iterator[dict[str, str]]:
    """The bootstrap source's settings: the Makefile's (the kit folder), or a local iTunes."""
    if not itunes_fake:
        yield {}
        return
    from scraper.fakes import FakeCdn, FakeItunes, ItunesAlbum, serve, unique_covers

    covers = iter(unique_covers(PER_GENRE * len(ITUNES_GENRES)))
    with serve(FakeCdn()) as cdn, serve(FakeItunes(cdn)) as itunes:
        number = 1_500_000_000
        for genre_id, term in ITUNES_GENRES.items():
            albums = []
            for n in range(PER_GENRE):
                number += 1
                cdn.add(f"it{number}", next(covers))
                albums.append(
                    ItunesAlbum(number, f"{term} record {n}", "Artist", genre_id, f"it{number}")
                )
            itunes.feeds[genre_id] = albums[:200]
            itunes.searchable.extend(albums[200:])
        yield {"SLEEVE_BOOTSTRAP_SOURCE": "itunes", "SLEEVE_ITUNES_BASE_URL": itunes.base_url}


def _until_predicted(base: str, cover: Path, started: float, timeout_s: float) -> float:
    files = {"files": (cover.name, cover.read_bytes(), "image/jpeg")}
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(httpx.TransportError):
            if httpx.post(f"{base}/v1/predict", files=files, timeout=10).status_code == 200:
                return time.monotonic() - started
        time.sleep(1)
    raise SystemExit(f"no prediction within {timeout_s:.0f} s")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
