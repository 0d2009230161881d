"""Local fakes of the music APIs and image hosts the scraper talks to (real loopback sockets)."""

from .cdn import FakeCdn, unique_covers
from .deezer import NO_DATA, QUOTA_EXCEEDED, DeezerAlbum, FakeDeezer
from .echo import FakeEcho
from .itunes import FakeItunes, ItunesAlbum
from .server import (
    FakeServer,
    Hit,
    empty,
    http_date,
    json_body,
    malformed,
    serve,
    slow,
    status,
)

__all__ = [
    "NO_DATA",
    "QUOTA_EXCEEDED",
    "DeezerAlbum",
    "FakeCdn",
    "FakeDeezer",
    "FakeEcho",
    "FakeItunes",
    "FakeServer",
    "Hit",
    "ItunesAlbum",
    "empty",
    "http_date",
    "json_body",
    "malformed",
    "serve",
    "slow",
    "status",
    "unique_covers",
]
