"""A first `sleeve run` on a fresh data folder trains, registers and serves a model by itself.

Real processes, as `make run` starts them (the API, the workers, the bootstrap coordinator in
`sleeve run` itself), on real covers and the real MobileNetV2 weights of the kit; training is
kept tiny (a few covers per genre, one epoch) so each start takes well under a minute.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from scraper.fakes import FakeCdn, FakeItunes, serve
from support import BASE_WEIGHTS, DISCOGS5

pytestmark = pytest.mark.slow

GENRES = ("Country", "HipHop", "Rock")
PER_GENRE = 6
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(deadline_s: float, probe: Callable[[], T | None], what: str) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


class Stack:
    """One `sleeve run` in its own process group, its console in a file."""

    def __init__(self, folder: Path, env: dict[str, str], name: str) -> None:
        self.base = f"http://127.0.0.1:{env['SLEEVE_PORT']}"
        self.log = folder / f"{name}.log"
        with self.log.open("w") as console:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sleeve_common", "run"],
                cwd=folder,
                env=env,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def console(self) -> str:
        return self.log.read_text()

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.base + path, timeout=5)
        except httpx.TransportError:
            return None

    def ready(self) -> dict[str, Any] | None:
        answer = self.get("/readyz")
        return answer.json() if answer is not None and answer.status_code == 200 else None

    def first_model(self) -> dict[str, Any] | None:
        """``first_model`` of /readyz once the API answers (None before)."""
        answer = self.get("/readyz")
        if answer is None or answer.status_code != 503:
            return None
        first: dict[str, Any] | None = answer.json()["first_model"]
        return first

    def predict(self, cover: Path) -> httpx.Response:
        return httpx.post(
            self.base + "/v1/predict",
            files={"files": (cover.name, cover.read_bytes(), "image/jpeg")},
            timeout=30,
        )

    def stop(self) -> str:
        """Ctrl-C, as a terminal sends it to the whole group; the console afterwards."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"`sleeve run` did not stop on Ctrl-C:\n{self.console}") from None
        assert self.proc.returncode in (0, 130), self.console
        return self.console

    def kill(self) -> None:
        """A crash: SIGKILL to `sleeve run` and every child at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    """Stacks a test starts; any still running at the end is killed."""
    started: list[Stack] = []
    yield started
    for stack in started:
        if stack.proc.poll() is None:
            stack.kill()


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A fresh embedded stack under ``tmp_path``: its own database, store, caches and port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEVE_")}
    return env | {
        "SLEEVE_PORT": str(_free_port()),
        "SLEEVE_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'sleeve.db'}",
        "SLEEVE_STORE_URL": f"file://{tmp_path / 'var' / 'store'}",
        "SLEEVE_DATA_DIR": str(tmp_path / "var"),
        "SLEEVE_BASE_WEIGHTS": str(BASE_WEIGHTS),
        "SLEEVE_WORKER_POLL_SECONDS": "0.2",
        "SLEEVE_BOOTSTRAP_PER_GENRE": str(PER_GENRE),
        "SLEEVE_BOOTSTRAP_EPOCHS": "1",
        "SLEEVE_TRAIN_BATCH_SIZE": "16",
        **settings,
    }


def _jobs(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "var" / "sleeve.db") as db:
        return list(db.execute("SELECT kind, status FROM jobs ORDER BY id"))


def _training_runs(tmp_path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(tmp_path / "var" / "sleeve.db") as db:
        rows = db.execute("SELECT status, error FROM training_runs ORDER BY id")
        return [(status, error and error.split(":")[0]) for status, error in rows]


def _quiet(console: str) -> None:
    """No traceback and none of TensorFlow's start-up chatter reached the console."""
    for noise in ("Traceback", "cudart_stub", "absl::InitializeLog", "cuInit", "tf2onnx"):
        assert noise not in console, console


@pytest.fixture
def covers(tmp_path: Path) -> tuple[Path, list[Path]]:
    """DIR/<genre>/ with PER_GENRE distinct real covers each, and one held-back cover per genre."""
    folder = tmp_path / "covers"
    seen: set[str] = set()
    held_back = []
    for genre in GENRES:
        (folder / genre).mkdir(parents=True)
        files = sorted((DISCOGS5 / genre).glob("*.jpg"))
        picked = 0
        for source in files:
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
            if digest in seen:
                continue  # the kit has byte-identical covers in two genres
            seen.add(digest)
            shutil.copy(source, folder / genre / source.name)
            picked += 1
            if picked == PER_GENRE:
                break
        held_back.append(files[-1])
    return folder, held_back


def test_first_start_trains_and_serves_a_model_a_crash_mid_training_included(
    tmp_path: Path, covers: tuple[Path, list[Path]], stacks: list[Stack]
) -> None:
    folder, held_back = covers
    # A short lease: after the crash, the next start takes the work up within seconds.
    env = _env(tmp_path, SLEEVE_BOOTSTRAP_SOURCE=str(folder), SLEEVE_JOB_LEASE_SECONDS="10")

    first = Stack(tmp_path, env, "first")
    stacks.append(first)
    training = _until(
        120,
        lambda: (f := first.first_model()) and (f["detail"] or "").startswith("training run") and f,
        "the bootstrap's training run to start",
    )
    assert (training["state"], training["step"], training["steps"]) == ("running", 3, 4)
    assert training["stage"] == "training the model"
    message = first.get("/readyz").json()["checks"]["model"]  # type: ignore[union-attr]
    assert message.startswith("training the first model: step 3 of 4, training the model, ")
    refused = first.predict(held_back[0])
    assert refused.status_code == 503
    assert refused.json()["error"]["message"].startswith("training the first model: step 3 of 4")
    assert first.get("/").status_code == 200  # type: ignore[union-attr]
    first.kill()  # mid-training: the bootstrap, its train job and training run left "running"

    second = Stack(tmp_path, env, "second")
    stacks.append(second)
    _until(180, second.ready, "the API to serve the first model after the crash")
    for cover in held_back:
        answer = second.predict(cover)
        assert answer.status_code == 200, answer.text
        genres = answer.json()["predictions"][0]["genres"]
        assert {g["genre"] for g in genres} == {g.lower() for g in GENRES}
    models = second.get("/v1/models").json()  # type: ignore[union-attr]
    assert [(m["version"], m["stage"]) for m in models] == [("v1", "production")], models
    console = second.stop()
    assert "continuing the first model's training" in console
    assert "first model v1 is ready" in console
    _quiet(console)
    assert _jobs(tmp_path) == [
        ("bootstrap", "succeeded"),
        ("scrape", "succeeded"),
        ("train", "succeeded"),
    ]
    assert _training_runs(tmp_path) == [("interrupted", "interrupted"), ("succeeded", None)]

    # A start with a model registered serves it at once and trains nothing.
    third = Stack(tmp_path, env, "third")
    stacks.append(third)
    _until(90, third.ready, "the API to serve the registered model")
    assert third.predict(held_back[0]).status_code == 200
    console = third.stop()
    assert "first model" not in console
    assert len(_jobs(tmp_path)) == 3  # nothing new queued


def test_the_itunes_default_against_a_local_itunes_stopped_and_started_again(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    with serve(FakeCdn()) as cdn, serve(FakeItunes(cdn)) as itunes:
        # The default genres' feeds (Apple's ids: country, electronic, hip-hop, jazz, metal).
        for genre_id in ("6", "7", "18", "11", "1153"):
            itunes.feeds[genre_id] = [itunes.album(genre_id, f"Album {n}") for n in range(6)]
        env = _env(
            tmp_path,
            SLEEVE_ITUNES_BASE_URL=itunes.base_url,
            SLEEVE_ITUNES_RATE="1000",
            SLEEVE_DOWNLOAD_RATE="1000",
        )
        first = Stack(tmp_path, env, "itunes-first")
        stacks.append(first)
        _until(
            150,
            # Any phase of the training run: mid-training, the stop must requeue it.
            lambda: (f := first.first_model()) and "training run" in (f["detail"] or ""),
            "the bootstrap to train on the iTunes covers",
        )
        stopping = time.monotonic()
        console = first.stop()  # Ctrl-C mid-training: every job goes back to the queue
        assert time.monotonic() - stopping < 20, "a child had to be killed: see the console"
        assert "collecting covers from iTunes (country, electronic, hiphop, jazz, metal;" in console
        assert _jobs(tmp_path) == [
            ("bootstrap", "queued"),
            ("scrape", "succeeded"),
            ("train", "queued"),
        ]
        _quiet(console)

        second = Stack(tmp_path, env, "itunes-second")
        stacks.append(second)
        _until(180, second.ready, "the API to serve a model trained on iTunes covers")
        answer = second.predict(sorted((DISCOGS5 / "Pop").glob("*.jpg"))[-1])
        assert answer.status_code == 200, answer.text
        genres = {g["genre"] for g in answer.json()["predictions"][0]["genres"]}
        assert genres == {"country", "electronic", "hiphop", "jazz", "metal"}
        _quiet(second.stop())
    feeds = {path.rsplit("/genre=", 1)[1] for path in itunes.paths("/us/rss/")}
    assert feeds >= {"6/json", "7/json", "18/json", "11/json", "1153/json"}
    assert [kind for kind, _ in _jobs(tmp_path)] == ["bootstrap", "scrape", "train"]


def test_an_unreachable_source_says_why_and_the_api_stays_up(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    env = _env(
        tmp_path,
        SLEEVE_ITUNES_BASE_URL=f"http://127.0.0.1:{_free_port()}",  # nothing listens there
        SLEEVE_SCRAPE_RETRY_ATTEMPTS="1",
    )
    stack = Stack(tmp_path, env, "offline")
    stacks.append(stack)
    failed = _until(
        120,
        lambda: (f := stack.first_model()) and f["state"] == "failed" and f,
        "the bootstrap to fail",
    )
    assert failed["error"].startswith("collecting covers failed: Unreachable: connection failed")
    assert "SLEEVE_ITUNES_BASE_URL" in failed["fix"]
    assert "SLEEVE_BOOTSTRAP_SOURCE to a folder" in failed["fix"]
    message = stack.get("/readyz").json()["checks"]["model"]  # type: ignore[union-attr]
    assert message == (
        f"the first model could not be trained: {failed['error']}. To fix it: {failed['fix']}"
    )
    refused = httpx.post(
        stack.base + "/v1/predict", files={"files": ("c.jpg", b"x", "image/jpeg")}, timeout=10
    )
    assert (refused.status_code, refused.json()["error"]["message"]) == (503, message)
    assert stack.get("/healthz").status_code == 200  # type: ignore[union-attr]
    assert stack.get("/docs").status_code == 200  # type: ignore[union-attr]
    console = stack.stop()
    assert f"sleeve: the first model could not be trained: {failed['error']}" in console
    assert f"sleeve: to fix it: {failed['fix']}" in console
    _quiet(console)
