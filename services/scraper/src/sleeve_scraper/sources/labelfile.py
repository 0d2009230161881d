"""What the sources that read a public dataset's label file share (Bandcamp TSV, MuMu CSV).

The file is read once when the source is built and every line checked, so a malformed file
fails before the run starts, naming the line. Each row gives an album id, the dataset's own
genre name and where its cover is; the taxonomy maps that genre name (its ``ids``) onto a
Sleeve genre, and rows of genres it does not map are skipped (they are no Sleeve genre). The
asked genres are then walked like an API's (``walk_genres``): each genre's rows in file order,
``--per-genre`` of them when given, all of them otherwise.
"""

from __future__ import annotations

import abc
import logging
from collections import Counter
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.sources.base import Candidate, GenreSource, Label, SourceContext, choose_labels

__all__ = ["LabelFileSource", "Row"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One album of a label file."""

    source_id: str
    raw_genre: str  # the dataset's own genre name
    provenance: str
    cover_url: str | None
    failure: str | None = None  # known unusable before any request (a malformed id)


class LabelFileSource(GenreSource):
    """A label file named by ``--path``; a subclass parses its lines (``_rows``)."""

    kind: str  # "TSV file", for messages

    def __init__(self, context: SourceContext) -> None:
        super().__init__(context, per_genre_default=None)
        if not context.request.path:
            raise SourceError(f"the {self.name} source needs a path (--path FILE)")
        self._path = Path(context.request.path)
        self._by_genre: dict[str, list[Row]] = {}
        self._labels: dict[str, list[Label]] = {}  # every Sleeve genre the file gives an id
        skipped: Counter[str] = Counter()
        for row in self._rows(self._read()):
            genre = self._taxonomy.genre_of_id(row.raw_genre)
            if genre is None:
                skipped[row.raw_genre] += 1
                continue
            self._by_genre.setdefault(genre, []).append(row)
            labels = self._labels.setdefault(row.source_id, [])
            if all(label.genre != genre for label in labels):
                labels.append(Label(genre, row.raw_genre))
        if skipped:
            logger.info(
                "%s: skipped the rows of genres the taxonomy does not map: %s",
                self._path,
                ", ".join(f"{name} ({n})" for name, n in sorted(skipped.items())),
            )

    def _read(self) -> list[str]:
        try:
            return self._path.read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise SourceError(
                f"the {self.name} source's {self.kind} {self._path} does not exist"
            ) from None
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self._path} is not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise SourceError(f"cannot read {self._path}: {exc.strerror or exc}") from None

    @abc.abstractmethod
    def _rows(self, lines: list[str]) -> list[Row]:
        """Every album of the file, in file order; a malformed line raises ``SourceError``."""

    def _bad_line(self, number: int, problem: str) -> SourceError:
        return SourceError(f"{self._path}, line {number}: {problem}")

    async def plan(self) -> dict[str, int | None]:
        plan: dict[str, int | None] = {}
        for genre in self._genres:
            rows = len(self._by_genre.get(genre, []))
            plan[genre] = min(rows, self._per_genre) if self._per_genre else rows
        return plan

    async def _albums(self, genre: str) -> AsyncGenerator[Row, None]:
        for row in self._by_genre.get(genre, []):
            yield row

    async def _describe(self, row: Row, genre: str) -> tuple[Candidate, str | None]:
        listed_as = Label(genre, row.raw_genre)
        # Ambiguity is judged on every row of the id; the label recorded is this row's own, so
        # each label's provenance is the line that gives it (a kept album's other genres come
        # with their own rows).
        _, dropped = choose_labels(
            listed_as, self._labels.get(row.source_id, []), keep_multi=self._keep_multi
        )
        candidate = Candidate(
            source=self.name,
            source_id=row.source_id,
            labels=(listed_as,),
            provenance=row.provenance,
            cover_url=row.cover_url,
        )
        return candidate, row.failure or dropped
