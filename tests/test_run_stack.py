"""`sleeve run` (what `make run` starts): the API and the workers as real processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from support import DISCOGS5

API_KEY = "run-stack-test-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(deadline_s: float, probe, what: str):  # type: ignore[no-untyped-def]
    """Poll ``probe`` until it returns a truthy value, or fail after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def test_run_serves_the_api_and_the_scraper_worker_takes_queued_jobs(tmp_path: Path) -> None:
    covers = tmp_path / "covers"
    for genre in ("Rock", "Pop"):
        (covers / genre).mkdir(parents=True)
        for source in sorted((DISCOGS5 / genre).glob("*.jpg"))[:3]:
            shutil.copy(source, covers / genre / source.name)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEVE_")}
    env |= {
        "SLEEVE_PORT": str(port),
        "SLEEVE_API_KEY": API_KEY,
        "SLEEVE_IMPORT_ROOT": str(tmp_path),  # the folder scrape below is queued over the API
        "SLEEVE_WORKER_POLL_SECONDS": "0.2",
        "SLEEVE_LOG_LEVEL": "WARNING",
        "SLEEVE_BOOTSTRAP": "false",  # the first-run training has tests of its own
    }
    base = f"http://127.0.0.1:{port}"
    stack = subprocess.Popen(
        [sys.executable, "-m", "sleeve_common", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _until(
            90,
            lambda: (r := _get(f"{base}/healthz")) is not None and r.status_code == 200,
            "/healthz",
        )
        assert httpx.get(f"{base}/docs").status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert "sleeve train --dataset NAME" in ready.json()["checks"]["model"]

        queued = httpx.post(
            f"{base}/v1/scrape-runs",
            json={"source": "folder", "path": str(covers)},
            headers={"X-API-Key": API_KEY},
        )
        assert queued.status_code == 202, queued.text
        done = _until(
            90,
            lambda: (j := httpx.get(queued.json()["url"]).json())["status"]
            in ("succeeded", "failed")
            and j,
            "the scrape job",
        )
        assert done["status"] == "succeeded", done
        assert done["result"]["summary"].startswith("6 seen: 6 added")
        assert done["progress"] == 1.0
        assert (tmp_path / "var" / "sleeve.db").is_file()
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        try:
            output, _ = stack.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            output, _ = stack.communicate()
    assert stack.returncode in (0, 130, -signal.SIGINT), output
    assert "Traceback" not in output, output
