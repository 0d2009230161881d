"""The Cover Art Archive: a MusicBrainz release group's front cover, for the MusicBrainz and
MuMu sources.

``/release-group/{mbid}/front-500`` answers 307 to archive.org, which answers 302 to the data
node holding the file; the shared download step follows both within the HTTP edge's redirect
limit, paced at ``SLEEVE_COVERARTARCHIVE_RATE`` (the first host's). A group without art
answers 404 (the album is recorded as rejected, "cover download failed: HTTP 404"); a
malformed id answers 400, so ids are checked here first and never sent malformed.
"""

from __future__ import annotations

import re

__all__ = ["FRONT_SIZE", "front_cover_url", "is_mbid"]

FRONT_SIZE = 500
"""The thumbnail asked for: 500 px, larger than the 224 px the model reads, smaller than the
originals (often several MB)."""

_MBID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_mbid(value: str) -> bool:
    """Whether ``value`` is a MusicBrainz id (a lowercase UUID, as MusicBrainz writes them)."""
    return _MBID.fullmatch(value) is not None


def front_cover_url(base_url: str, mbid: str) -> str:
    """The release group's front cover at ``FRONT_SIZE`` px on the archive at ``base_url``."""
    return f"{base_url.rstrip('/')}/release-group/{mbid}/front-{FRONT_SIZE}"
