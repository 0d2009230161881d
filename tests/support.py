"""What tests share besides fixtures: where the kit lives, and settings for a test."""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import uvicorn

from sleeve_common.settings import Settings

__all__ = [
    "BASE_WEIGHTS",
    "DISCOGS5",
    "KIT",
    "REPO_ROOT",
    "ThreadedUvicorn",
    "make_settings",
    "serve_folder",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
KIT = REPO_ROOT.parent / "shared"  # read-only, beside the checkout (CI has it there too)
DISCOGS5 = KIT / "datasets" / "discogs5"
BASE_WEIGHTS = KIT / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"


def make_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    """Settings for a test: its own database, local store and data folder."""
    values: dict[str, object] = {
        "database_url": database_url,
        "store_url": f"file://{tmp_path / 'store'}",
        "data_dir": tmp_path / "var",
        "base_weights": str(BASE_WEIGHTS),
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class ThreadedUvicorn(uvicorn.Server):
    """uvicorn for a server thread: signals when its startup has finished, well or not."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.startup_done.set()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A real static HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
