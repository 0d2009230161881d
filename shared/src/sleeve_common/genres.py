"""Genre names from many sources mapped onto one vocabulary (the raw name is kept too)."""

from __future__ import annotations

import re

__all__ = ["normalize_genre"]

_SYNONYMS = {
    "hiphop": "hiphop",
    "hiphoprap": "hiphop",
    "rap": "hiphop",
    "rapandhiphop": "hiphop",
    "hiphopandrap": "hiphop",
    "raphiphop": "hiphop",
    "electronic": "electronic",
    "electronica": "electronic",
    "danceandelectronic": "electronic",
    "dance": "electronic",
    "edm": "electronic",
    "randb": "rnb",
    "rnb": "rnb",
    "rhythmandblues": "rnb",
    "randbsoul": "rnb",
    "soul": "rnb",
    "soulandfunk": "rnb",
    "latino": "latin",
    "latinmusic": "latin",
    "rockandroll": "rock",
    "countryandwestern": "country",
    "heavymetal": "metal",
    "punkrock": "punk",
    "popmusic": "pop",
}


def normalize_genre(raw: str) -> str:
    """``"Hip-Hop/Rap"`` → ``"hiphop"``; unknown names become a lowercase alphanumeric slug."""
    slug = re.sub(r"[^a-z0-9]+", "", raw.lower().replace("&", "and"))
    if not slug:
        raise ValueError(f"genre {raw!r} has no letters or digits")
    return _SYNONYMS.get(slug, slug)[:64]
