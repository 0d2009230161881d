"""Small label files for the Bandcamp and MuMu sources, cut from the real ones in the kit.

Each helper copies real lines of ``../shared/fixtures`` (their exact format, ids and genre
names) into a small file under the test's folder, points the covers they need at the local
fakes, and says what it wrote. No URL in a written file leaves the machine.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from support import KIT

from .cdn import FakeCdn, unique_covers
from .coverart import FakeCoverArtArchive

__all__ = [
    "BANDCAMP_LINKS",
    "MUMU_CSV",
    "BandcampLine",
    "MumuAlbum",
    "write_bandcamp_tsv",
    "write_mumu_csv",
]

BANDCAMP_LINKS = KIT / "fixtures" / "bandcamp-dataset-links.tsv"
MUMU_CSV = KIT / "fixtures" / "mumu-single-label.csv"


@dataclass(frozen=True)
class BandcampLine:
    source_id: str  # the dataset's file name without extension
    genre: str  # the dataset's genre folder
    token: str  # the cover's name on the CDN (Bandcamp's image id)
    line: str  # as written


@dataclass(frozen=True)
class MumuAlbum:
    mbid: str
    genre: str  # the genres column
    tracks: int  # rows written for it


def write_bandcamp_tsv(
    path: Path, cdn: FakeCdn, per_genre: dict[str, int], *, covers: Iterator[Path] | None = None
) -> list[BandcampLine]:
    """The first ``per_genre[g]`` real lines of each dataset genre ``g``, in the real file's
    order, their URLs moved onto the fake CDN (same ``/img/<id>_2.jpg`` path), each with a
    kit cover."""
    covers = covers or iter(unique_covers(300)[180:210])
    taken: dict[str, int] = {}
    written: list[BandcampLine] = []
    for raw in BANDCAMP_LINKS.read_text(encoding="utf-8").splitlines():
        url, saved_as = raw.split("\t")
        genre = saved_as.split("/")[0]
        if taken.get(genre, 0) >= per_genre.get(genre, 0):
            continue
        taken[genre] = taken.get(genre, 0) + 1
        token = urlsplit(url).path.rsplit("/", 1)[1].removesuffix("_2.jpg")
        cdn.add(token, next(covers))
        line = f"{cdn.bandcamp_url(token)}\t{saved_as}"
        written.append(BandcampLine(Path(saved_as).stem, genre, token, line))
    path.write_text("".join(f"{w.line}\n" for w in written), encoding="utf-8")
    return written


def write_mumu_csv(
    path: Path,
    coverart: FakeCoverArtArchive,
    per_genre: dict[str, int],
    *,
    covers: Iterator[Path] | None = None,
) -> list[MumuAlbum]:
    """The header and every track row of the first ``per_genre[g]`` real albums of each
    MuMu genre ``g``, in the real file's order; each album has art at the fake archive."""
    covers = covers or iter(unique_covers(300)[210:240])
    releases = (f"{n:08x}-0000-4000-8000-{n:012x}" for n in itertools.count(0xA1B2C3))
    with MUMU_CSV.open(encoding="utf-8", newline="") as source:
        reader = csv.reader(source)
        header = next(reader)
        rows: list[list[str]] = []
        albums: dict[str, MumuAlbum] = {}
        taken: dict[str, int] = {}
        for row in reader:
            mbid, genre = row[1], row[5]
            if mbid not in albums:
                if taken.get(genre, 0) >= per_genre.get(genre, 0):
                    continue
                taken[genre] = taken.get(genre, 0) + 1
                release = next(releases)
                coverart.art[mbid] = release
                coverart.cdn.add(release, next(covers))
                albums[mbid] = MumuAlbum(mbid, genre, 0)
            albums[mbid] = MumuAlbum(mbid, genre, albums[mbid].tracks + 1)
            rows.append(row)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return list(albums.values())
