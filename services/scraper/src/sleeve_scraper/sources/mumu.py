"""MuMu: the single-label CSV of the MuMu dataset, covers from the Cover Art Archive.

The file (``amazon_id,album_mbid,MSD_track_id,recording_mbid,artist_mbid,genres``) has one
row per track, so an album's rows repeat; the album is its ``album_mbid``, a MusicBrainz
release-group id, and its genre the ``genres`` column (Dance & Electronic, Rap & Hip-Hop, …,
mapped onto Sleeve genres by the taxonomy's ``[mumu-csv]`` table). The file carries no image
URL: the cover is the release group's front cover on the Cover Art Archive
(``sleeve_scraper.sources.coverart``, shared with the MusicBrainz source), 404 when it has
none. A row whose id is not a MusicBrainz id is recorded as rejected without a request (the
archive would answer 400).
"""

from __future__ import annotations

import csv

from sleeve_scraper.sources.base import SourceContext
from sleeve_scraper.sources.coverart import front_cover_url, is_mbid
from sleeve_scraper.sources.labelfile import LabelFileSource, Row

__all__ = ["MumuCsvSource", "mumu_csv_source"]

_ID, _GENRE, _AMAZON = "album_mbid", "genres", "amazon_id"


def mumu_csv_source(context: SourceContext) -> MumuCsvSource:
    """The MuMu CSV named by ``--path``, limited to the asked genres."""
    return MumuCsvSource(context)


class MumuCsvSource(LabelFileSource):
    """One album per ``album_mbid`` (its first row of each genre), in file order."""

    name = "mumu-csv"
    kind = "CSV file"

    def __init__(self, context: SourceContext) -> None:
        self._archive = context.settings.coverartarchive_base_url
        super().__init__(context)

    def _rows(self, lines: list[str]) -> list[Row]:
        reader = csv.reader(lines)
        header = [cell.strip() for cell in next(reader, [])]
        if _ID not in header or _GENRE not in header:
            raise self._bad_line(1, f"expected a header with {_ID} and {_GENRE}, got {header}")
        id_at, genre_at = header.index(_ID), header.index(_GENRE)
        amazon_at = header.index(_AMAZON) if _AMAZON in header else None
        rows: list[Row] = []
        seen: set[tuple[str, str]] = set()
        for number, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise self._bad_line(number, f"{len(cells)} columns, the header has {len(header)}")
            mbid, genre = cells[id_at].strip().lower(), cells[genre_at].strip()
            if not mbid or not genre:
                raise self._bad_line(number, f"empty {_ID if not mbid else _GENRE}")
            if (mbid, genre) in seen:
                continue  # another track of the same album
            seen.add((mbid, genre))
            amazon = cells[amazon_at].strip() if amazon_at is not None else ""
            valid = is_mbid(mbid)
            rows.append(
                Row(
                    source_id=mbid,
                    raw_genre=genre,
                    provenance=f"{self.name}:{amazon or mbid}",
                    cover_url=front_cover_url(self._archive, mbid) if valid else None,
                    failure=None if valid else f"not a MusicBrainz id: {mbid!r}",
                )
            )
        return rows
