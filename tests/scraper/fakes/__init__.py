"""Local fakes of the music APIs and image hosts the scraper talks to (real loopback sockets)."""

from .cdn import FakeCdn, unique_covers
from .coverart import FakeCoverArtArchive
from .deezer import NO_DATA, QUOTA_EXCEEDED, DeezerAlbum, FakeDeezer
from .echo import FakeEcho
from .itunes import FakeItunes, ItunesAlbum
from .labelfiles import (
    BANDCAMP_LINKS,
    MUMU_CSV,
    BandcampLine,
    MumuAlbum,
    write_bandcamp_tsv,
    write_mumu_csv,
)
from .musicbrainz import GENERIC_AGENTS, RATE_EXCEEDED, FakeMusicBrainz, ReleaseGroup
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
from .spotify import CLIENT_ID, CLIENT_SECRET, FakeSpotify, SpotifyAlbum, SpotifyArtist

__all__ = [
    "BANDCAMP_LINKS",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "GENERIC_AGENTS",
    "MUMU_CSV",
    "NO_DATA",
    "QUOTA_EXCEEDED",
    "RATE_EXCEEDED",
    "BandcampLine",
    "DeezerAlbum",
    "FakeCdn",
    "FakeCoverArtArchive",
    "FakeDeezer",
    "FakeEcho",
    "FakeItunes",
    "FakeMusicBrainz",
    "FakeServer",
    "FakeSpotify",
    "Hit",
    "ItunesAlbum",
    "MumuAlbum",
    "ReleaseGroup",
    "SpotifyAlbum",
    "SpotifyArtist",
    "empty",
    "http_date",
    "json_body",
    "malformed",
    "serve",
    "slow",
    "status",
    "unique_covers",
    "write_bandcamp_tsv",
    "write_mumu_csv",
]
