"""Fixtures of the bulk-scoring tests: a runtime with the tiny colour model, real covers,
a real HTTP server for URL manifests."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import DISCOGS5, make_settings, serve_folder

from sleeve_common.runtime import Runtime, open_runtime
from sleeve_common.settings import Settings

from ..harness import Registered, image_bytes, register_model

RED = (255, 0, 0)
GREEN = (0, 200, 0)
BLUE = (0, 0, 255)


def real_covers(count: int) -> list[Path]:
    """``count`` real covers from the kit, a few of each genre, always the same ones."""
    genres = sorted(p for p in DISCOGS5.iterdir() if p.is_dir())
    per_genre = [sorted(g.glob("*.jpg")) for g in genres]
    picked: list[Path] = []
    for index in range(count):
        picked.append(per_genre[index % len(per_genre)][index // len(per_genre)])
    return picked


def make_cover_folder(root: Path, count: int = 5) -> Path:
    """A folder of real covers (some in a subfolder), three solid colours and a text file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir()
    for index, cover in enumerate(real_covers(count)):
        target = root / ("sub" if index % 2 else ".") / f"cover{index}.jpg"
        shutil.copyfile(cover, target)
    (root / "red.png").write_bytes(image_bytes(RED))
    (root / "green.png").write_bytes(image_bytes(GREEN))
    (root / "sub" / "blue.png").write_bytes(image_bytes(BLUE))
    (root / "notes.txt").write_text("not a cover")
    return root


@pytest.fixture
def scoring_settings(tmp_path: Path, database_url: str) -> Settings:
    """Two compute threads, small batches and chunks' worth of limits, 127.0.0.1 reachable."""
    return make_settings(
        tmp_path,
        database_url,
        url_fetch_allowed_networks="127.0.0.1/32",
        url_fetch_timeout_s=5,
        cpu_threads=2,
        batch_max_size=3,
    )


@pytest.fixture
async def scoring_runtime(scoring_settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(scoring_settings) as runtime:
        yield runtime


@pytest.fixture
async def colour_model(scoring_runtime: Runtime) -> Registered:
    """The tiny colour model (red → country, green → rock, blue → pop), registered as v1."""
    return await register_model(scoring_runtime.db, scoring_runtime.store)


@pytest.fixture
def covers(tmp_path: Path) -> Path:
    return make_cover_folder(tmp_path / "covers")


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cover_folder(tmp_path_factory.mktemp("www"), count=3)


@pytest.fixture(scope="module")
def cover_server(web_root: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``web_root``; its base URL."""
    with serve_folder(web_root) as url:
        yield url
