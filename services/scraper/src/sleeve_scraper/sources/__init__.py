"""Where covers come from: a name → factory registry of the sources.

``sleeve_common.payloads.Source`` names them for the API, which must not import the
scraper; a test keeps the two equal.
"""

from __future__ import annotations

from sleeve_common.payloads import check_scrape_request
from sleeve_scraper.sources.bandcamp import bandcamp_tsv_source
from sleeve_scraper.sources.base import Found, Source, SourceContext, SourceFactory
from sleeve_scraper.sources.deezer import deezer_source
from sleeve_scraper.sources.folder import folder_source
from sleeve_scraper.sources.itunes import itunes_source
from sleeve_scraper.sources.mumu import mumu_csv_source
from sleeve_scraper.sources.musicbrainz import musicbrainz_source
from sleeve_scraper.sources.spotify import spotify_source

__all__ = ["Found", "Source", "SourceContext", "build_source", "names"]

_FACTORIES: dict[str, SourceFactory] = {
    "bandcamp-tsv": bandcamp_tsv_source,
    "deezer": deezer_source,
    "folder": folder_source,
    "itunes": itunes_source,
    "mumu-csv": mumu_csv_source,
    "musicbrainz": musicbrainz_source,
    "spotify": spotify_source,
}


def names() -> tuple[str, ...]:
    """The sources, sorted."""
    return tuple(sorted(_FACTORIES))


def build_source(context: SourceContext) -> Source:
    """The source the request names, after the checks the API makes up front
    (``check_scrape_request``: credentials, files)."""
    check_scrape_request(context.request, context.settings)
    return _FACTORIES[context.request.source](context)
