"""Fixtures of the scraper tests: fake APIs and image host on loopback, a recording sleep.

The fake servers start once per session; each test gets them reset (no hits, no queued
faults) and stocked with their default catalogue.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import make_settings

from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings

from .fakes import (
    CLIENT_ID,
    CLIENT_SECRET,
    FakeCdn,
    FakeCoverArtArchive,
    FakeDeezer,
    FakeEcho,
    FakeItunes,
    FakeMusicBrainz,
    FakeSpotify,
    serve,
)

CONTACT = "covers@example.org"


def with_settings(runtime: Runtime, **overrides: object) -> Runtime:
    """The same database and store with some settings changed (validated as at start-up)."""
    settings = Settings.model_validate({**runtime.settings.model_dump(), **overrides})
    return dataclasses.replace(runtime, settings=settings)


class Sleeps:
    """Stands in for the HTTP edge's sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture(scope="session")
def cdn_server() -> Iterator[FakeCdn]:
    with serve(FakeCdn()) as server:
        yield server


@pytest.fixture(scope="session")
def itunes_server(cdn_server: FakeCdn) -> Iterator[FakeItunes]:
    with serve(FakeItunes(cdn_server)) as server:
        yield server


@pytest.fixture(scope="session")
def deezer_server(cdn_server: FakeCdn) -> Iterator[FakeDeezer]:
    with serve(FakeDeezer(cdn_server)) as server:
        yield server


@pytest.fixture(scope="session")
def coverart_server(cdn_server: FakeCdn) -> Iterator[FakeCoverArtArchive]:
    with serve(FakeCoverArtArchive(cdn_server)) as server:
        yield server


@pytest.fixture(scope="session")
def musicbrainz_server(coverart_server: FakeCoverArtArchive) -> Iterator[FakeMusicBrainz]:
    with serve(FakeMusicBrainz(coverart_server)) as server:
        yield server


@pytest.fixture(scope="session")
def spotify_server(cdn_server: FakeCdn) -> Iterator[FakeSpotify]:
    with serve(FakeSpotify(cdn_server)) as server:
        yield server


@pytest.fixture(scope="session")
def echo_server() -> Iterator[FakeEcho]:
    with serve(FakeEcho()) as server:
        yield server


@pytest.fixture
def cdn(cdn_server: FakeCdn) -> FakeCdn:
    cdn_server.reset()
    return cdn_server


@pytest.fixture
def itunes(itunes_server: FakeItunes, cdn: FakeCdn) -> FakeItunes:
    itunes_server.reset()
    itunes_server.stock()
    return itunes_server


@pytest.fixture
def deezer(deezer_server: FakeDeezer, cdn: FakeCdn) -> FakeDeezer:
    deezer_server.reset()
    deezer_server.stock()
    return deezer_server


@pytest.fixture
def coverart(coverart_server: FakeCoverArtArchive, cdn: FakeCdn) -> FakeCoverArtArchive:
    coverart_server.reset()
    return coverart_server


@pytest.fixture
def musicbrainz(
    musicbrainz_server: FakeMusicBrainz, coverart: FakeCoverArtArchive
) -> FakeMusicBrainz:
    musicbrainz_server.reset()
    musicbrainz_server.stock()
    return musicbrainz_server


@pytest.fixture
def spotify(spotify_server: FakeSpotify, cdn: FakeCdn) -> FakeSpotify:
    spotify_server.reset()
    spotify_server.stock()
    return spotify_server


@pytest.fixture
def echo(echo_server: FakeEcho) -> FakeEcho:
    echo_server.reset()
    return echo_server


@pytest.fixture
def api_runtime(
    runtime: Runtime,
    tmp_path: Path,
    itunes: FakeItunes,
    deezer: FakeDeezer,
    musicbrainz: FakeMusicBrainz,
    spotify: FakeSpotify,
) -> Runtime:
    """The test's database and store, with every API source pointed at its fake and given
    the credentials it needs (Spotify's client id and secret, a MusicBrainz contact).

    Rates are high so tests run fast; pacing itself is proven in test_http.py (and against
    MusicBrainz's window in test_musicbrainz.py).
    """
    settings = make_settings(
        tmp_path,
        runtime.settings.database_url,
        itunes_base_url=itunes.base_url,
        deezer_base_url=deezer.base_url,
        musicbrainz_base_url=f"{musicbrainz.base_url}/ws/2",
        coverartarchive_base_url=musicbrainz.coverart.base_url,
        spotify_api_base_url=f"{spotify.base_url}/v1",
        spotify_auth_url=f"{spotify.base_url}/api/token",
        spotify_client_id=CLIENT_ID,
        spotify_client_secret=CLIENT_SECRET,
        musicbrainz_contact=CONTACT,
        itunes_rate=1000,
        deezer_rate=1000,
        musicbrainz_rate=1000,
        coverartarchive_rate=1000,
        spotify_rate=1000,
        download_rate=1000,
        scrape_timeout_s=5,
        scrape_download_concurrency=4,
    )
    return dataclasses.replace(runtime, settings=settings)
