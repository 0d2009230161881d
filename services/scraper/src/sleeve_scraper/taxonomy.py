"""Each source's genres mapped onto Sleeve's: the shipped ``taxonomy.toml`` or the user's file.

The file has one table per source and one entry per Sleeve genre (see the comments in
``taxonomy.toml``). ``SLEEVE_SCRAPE_TAXONOMY`` names a file of the same shape whose source
tables replace the shipped ones.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sleeve_common.exceptions import ConfigError
from sleeve_common.genres import normalize_genre
from sleeve_scraper.exceptions import SourceError

__all__ = ["SourceTaxonomy", "load_taxonomy"]

_SHIPPED = "taxonomy.toml"
_KEYS = {"ids", "names", "term"}


@dataclass(frozen=True)
class _Entry:
    ids: tuple[str, ...]
    term: str


class SourceTaxonomy:
    """One source's mapping: which of its genre ids to list, and what its genre names mean."""

    def __init__(
        self, source: str, entries: Mapping[str, _Entry], names: Mapping[str, str]
    ) -> None:
        self.source = source
        self._entries = dict(entries)
        self._by_id = {i: genre for genre, entry in entries.items() for i in entry.ids}
        self._names = dict(names)

    @property
    def genres(self) -> tuple[str, ...]:
        """The Sleeve genres this source can list, sorted."""
        return tuple(sorted(self._entries))

    def ids(self, genre: str) -> tuple[str, ...]:
        """The source's genre ids listed for Sleeve ``genre``."""
        return self._entries[genre].ids

    def term(self, genre: str) -> str:
        """The search term for Sleeve ``genre``."""
        return self._entries[genre].term

    def genre_of_id(self, genre_id: object) -> str | None:
        """The Sleeve genre of one of the source's genre ids, if it is one."""
        return self._by_id.get(str(genre_id))

    def genre_of_name(self, name: str) -> str | None:
        """The Sleeve genre a source genre name means, if any (``"Hip-Hop/Rap"`` → hiphop)."""
        try:
            slug = normalize_genre(name)
        except ValueError:
            return None
        return self._names.get(slug) or (slug if slug in self._entries else None)

    def resolve(self, requested: Iterable[str] | None) -> tuple[str, ...]:
        """The asked genres normalised, in the order given (all genres when None)."""
        if requested is None:
            return self.genres
        genres = tuple(dict.fromkeys(normalize_genre(g) for g in requested))
        unknown = [g for g in genres if g not in self._entries]
        if unknown:
            raise SourceError(
                f"the {self.source} source has no genre {', '.join(map(repr, unknown))}; "
                f"it knows {', '.join(self.genres)} (SLEEVE_SCRAPE_TAXONOMY adds more)"
            )
        return genres


def load_taxonomy(source: str, override: Path | None) -> SourceTaxonomy:
    """``source``'s table from the user's file when it has one, else from the shipped file."""
    shipped = resources.files("sleeve_scraper").joinpath(_SHIPPED)
    tables = _parse_toml(shipped.read_text(encoding="utf-8"), where=f"the shipped {_SHIPPED}")
    where = f"the shipped {_SHIPPED}"
    if override is not None:
        try:
            text = override.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"SLEEVE_SCRAPE_TAXONOMY: cannot read {override}: {exc.strerror or exc}"
            ) from None
        user = _parse_toml(text, where=f"SLEEVE_SCRAPE_TAXONOMY: {override}")
        if source in user:
            tables, where = user, f"SLEEVE_SCRAPE_TAXONOMY: {override}"
    if source not in tables:
        raise SourceError(f"no genre table for the {source} source in {where}")
    return _parse_table(source, tables[source], where)


def _parse_toml(text: str, *, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None


def _parse_table(source: str, table: object, where: str) -> SourceTaxonomy:
    def bad(message: str) -> ConfigError:
        return ConfigError(f"{where}: [{source}] {message}")

    if not isinstance(table, dict) or not table:
        raise bad('must be a table of genres, e.g. jazz = { ids = ["11"] }')
    entries: dict[str, _Entry] = {}
    owner: dict[str, str] = {}  # source genre id -> Sleeve genre
    names: dict[str, str] = {}
    for genre, entry in table.items():
        try:
            slug = normalize_genre(genre)
        except ValueError:
            raise bad(f"{genre!r} is not a genre name") from None
        if slug != genre:
            raise bad(f"write the genre {genre!r} as {slug!r}")
        if not isinstance(entry, dict):
            raise bad(f'{genre} must be a table, e.g. {genre} = {{ ids = ["11"] }}')
        if unknown := sorted(set(entry) - _KEYS):
            raise bad(f"{genre} has unknown keys {unknown} (allowed: ids, names, term)")
        ids = _strings(entry.get("ids"), f"{genre}.ids", bad, allow_int=True)
        if not ids:
            raise bad(f"{genre} needs ids: a list of the source's genre ids")
        for genre_id in ids:
            if owner.setdefault(genre_id, genre) != genre:
                raise bad(f"id {genre_id} is under both {owner[genre_id]} and {genre}")
        for name in _strings(entry.get("names"), f"{genre}.names", bad, allow_int=False):
            try:
                name_slug = normalize_genre(name)
            except ValueError:
                raise bad(f"{genre}: {name!r} is not a genre name") from None
            if names.setdefault(name_slug, genre) != genre:
                raise bad(f"name {name!r} is under both {names[name_slug]} and {genre}")
        term = entry.get("term", genre)
        if not isinstance(term, str) or not term.strip():
            raise bad(f"{genre}: term must be a non-empty string")
        entries[genre] = _Entry(ids=ids, term=term.strip())
    for name_slug, genre in names.items():
        if name_slug in entries and name_slug != genre:
            raise bad(f"a name under {genre} means the genre {name_slug}")
    return SourceTaxonomy(source, entries, names)


def _strings(
    value: object, what: str, bad: Callable[[str], ConfigError], *, allow_int: bool
) -> tuple[str, ...]:
    """A list of non-empty strings (and whole numbers, for ids) as stripped strings."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad(f"{what} must be a list, got {value!r}")
    out: list[str] = []
    for item in value:
        if isinstance(item, str) and item.strip():
            out.append(item.strip())
        elif allow_int and isinstance(item, int) and not isinstance(item, bool):
            out.append(str(item))
        else:
            raise bad(f"{what}: {item!r} is not a {'genre id' if allow_int else 'genre name'}")
    return tuple(out)
