"""Bandcamp covers from the label file of the bandcamp-deep-learning dataset.

Each line is ``URL<TAB>genre/file.jpg``: a cover on Bandcamp's image host
(``http://f1.bcbits.com/img/a4267850305_2.jpg``) and the file the dataset saved it as, under
its genre's folder (ambient, dubstep, folk, hiphop_rap, jazz, metal, pop, punk, rock, soul;
mapped onto Sleeve genres by the taxonomy's ``[bandcamp-tsv]`` table). The album's id is the
file's name without extension, unique across the dataset; covers are downloaded from the URLs
as given by the shared step, at ``SLEEVE_DOWNLOAD_RATE`` for the image host.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from sleeve_scraper.sources.base import SourceContext
from sleeve_scraper.sources.labelfile import LabelFileSource, Row

__all__ = ["BandcampTsvSource", "bandcamp_tsv_source"]


def bandcamp_tsv_source(context: SourceContext) -> BandcampTsvSource:
    """The Bandcamp links file named by ``--path``, limited to the asked genres."""
    return BandcampTsvSource(context)


class BandcampTsvSource(LabelFileSource):
    """``URL<TAB>genre/file.jpg`` lines; blank lines are allowed, anything else is refused.

    A file listed under two genre folders is one album with two labels (or dropped, by
    ``SLEEVE_SCRAPE_MULTI_GENRE``); a line repeated within a genre counts once.
    """

    name = "bandcamp-tsv"
    kind = "TSV file"

    def _rows(self, lines: list[str]) -> list[Row]:
        rows: list[Row] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) != 2:
                raise self._bad_line(number, "expected URL<TAB>genre/file.jpg")
            url, saved_as = (field.strip() for field in fields)
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise self._bad_line(number, f"{url!r} is not an http(s) URL")
            path = PurePosixPath(saved_as)
            if len(path.parts) != 2 or not path.stem:
                raise self._bad_line(number, f"{saved_as!r} is not genre/file.jpg")
            genre, source_id = path.parts[0], path.stem
            rows.append(
                Row(
                    source_id=source_id,
                    raw_genre=genre,
                    provenance=f"{self.name}:{saved_as}",
                    cover_url=url,
                )
            )
        return rows
