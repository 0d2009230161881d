"""Covers on this machine: a folder labelled by sub-folder (``DIR/<genre>/**/<file>``), or a
CSV manifest of ``path_or_url,genre`` rows.

A manifest (``--path FILE.csv``, told from a folder by its suffix) has two columns, the first
row being a header when its second cell reads "genre" (as in ``File_path,Genre``). Relative
paths are read from the manifest's folder; ``http(s)://`` URLs are downloaded by the shared
step, at ``SLEEVE_DOWNLOAD_RATE`` per host. Genre names are normalised as folder names are
(``Hip-Hop`` → ``hiphop``), with no taxonomy: the manifest's author chose them. A malformed
row fails before the run starts, naming its line; a file or URL that cannot be fetched is
recorded as rejected with the reason. The kit's ``discogs5-partial-index.csv`` names its files
``Album_Covers/<Genre>/<file>``: beside a folder (or link) of that name it reads as it is.

A scrape queued over the API carries an import root (``sleeve_common.import_root``): a genre
sub-folder that leads outside it fails the run before it starts, and a file of the folder or a
manifest row that leads outside it (``..``, an absolute path, a symlink) is recorded as
rejected, unread.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncGenerator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sleeve_common.exceptions import InvalidRequest
from sleeve_common.genres import normalize_genre
from sleeve_common.import_root import resolve_inside
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.sources.base import Candidate, Found, Label, Source, SourceContext

__all__ = ["FolderSource", "ManifestSource", "folder_source"]


def folder_source(context: SourceContext) -> Source:
    """The folder or manifest named by ``--path``, limited to the asked genres."""
    request = context.request
    if not request.path:
        raise SourceError("the folder source needs a path (--path DIR or --path FILE.csv)")
    genres = {normalize_genre(g) for g in request.genres} if request.genres else None
    path = Path(request.path)
    import_root = Path(request.import_root) if request.import_root is not None else None
    if path.is_file() and path.suffix.lower() == ".csv":
        return ManifestSource(
            path,
            genres=genres,
            per_genre=request.per_genre,
            max_bytes=context.settings.max_cover_bytes,
            import_root=import_root,
        )
    return FolderSource(
        path,
        genres=genres,
        per_genre=request.per_genre,
        max_bytes=context.settings.max_cover_bytes,
        import_root=import_root,
    )


class FolderSource:
    """Files in sorted order, so the cursor (a count of files done) is stable across runs."""

    name = "folder"

    def __init__(
        self,
        root: Path,
        *,
        genres: set[str] | None = None,
        per_genre: int | None = None,
        max_bytes: int,
        import_root: Path | None = None,
    ) -> None:
        if not root.exists():
            raise SourceError(f"folder {root} does not exist")
        if not root.is_dir():
            raise SourceError(f"{root} is not a folder")
        self._root = root.resolve()
        self._max_bytes = max_bytes
        self._import_root = import_root
        self._files = self._list(genres, per_genre)

    def _list(self, genres: set[str] | None, per_genre: int | None) -> list[tuple[Label, Path]]:
        folders = sorted(
            p for p in self._root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not folders:
            raise SourceError(
                f"{self._root} has no genre sub-folders (expected DIR/<genre>/<file>)"
            )
        listed: list[tuple[Label, Path]] = []
        for folder in folders:
            try:
                genre = normalize_genre(folder.name)
            except ValueError:
                raise SourceError(
                    f"sub-folder {folder.name!r} of {self._root} is not a genre name "
                    "(it needs letters or digits)"
                ) from None
            if genres is not None and genre not in genres:
                continue
            if self._import_root is not None:
                try:
                    resolve_inside(folder, self._import_root)
                except InvalidRequest as exc:
                    raise SourceError(f"sub-folder {folder.name!r}: {exc}") from None
            files = sorted(
                p for p in folder.rglob("*") if not p.name.startswith(".") and _is_file(p)
            )
            label = Label(genre=genre, raw_genre=folder.name)
            listed.extend((label, p) for p in files[:per_genre])
        if genres is not None and not listed:
            raise SourceError(f"no sub-folder of {self._root} matches the genres {sorted(genres)}")
        return listed

    async def plan(self) -> dict[str, int | None]:
        return _plan(label for label, _ in self._files)

    async def found(self, cursor: dict[str, Any]) -> AsyncGenerator[Found, None]:
        start = int(cursor.get("files_done", 0))
        for index in range(start, len(self._files)):
            label, path = self._files[index]
            relative = path.relative_to(self._root).as_posix()
            candidate = Candidate(
                source=self.name,
                source_id=str(path),
                labels=(label,),
                provenance=f"folder:{relative}",
                title=path.stem,
            )
            data: bytes | None = None
            failure = _refusal(path, self._import_root)
            if failure is None:
                data, failure = await asyncio.to_thread(_read, path, self._max_bytes)
            yield Found(
                candidate=candidate,
                data=data,
                failure=failure,
                cursor={"files_done": index + 1},
                place=f"{label.raw_genre} (file {index + 1}/{len(self._files)})",
                genre=label.genre,
            )


class ManifestSource:
    """Rows of a ``path_or_url,genre`` CSV in file order; the cursor is a count of rows done."""

    name = "folder"

    def __init__(
        self,
        manifest: Path,
        *,
        genres: set[str] | None = None,
        per_genre: int | None = None,
        max_bytes: int,
        import_root: Path | None = None,
    ) -> None:
        self._manifest = manifest.resolve()
        self._max_bytes = max_bytes
        self._import_root = import_root
        self._rows = self._list(genres, per_genre)

    def _list(self, genres: set[str] | None, per_genre: int | None) -> list[tuple[Label, str]]:
        try:
            text = self._manifest.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot read the manifest {self._manifest}: {exc}") from None
        rows: list[tuple[Label, str]] = []
        counts: dict[str, int] = {}
        for number, cells in enumerate(csv.reader(text.splitlines()), start=1):
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) < 2:
                raise self._bad(number, "expected path_or_url,genre")
            where, raw = cells[0].strip(), cells[1].strip()
            if number == 1 and raw.lower() == "genre":
                continue  # the header
            if not where:
                raise self._bad(number, "empty path_or_url")
            try:
                genre = normalize_genre(raw)
            except ValueError:
                raise self._bad(number, f"{raw!r} is not a genre name") from None
            if genres is not None and genre not in genres:
                continue
            counts[genre] = counts.get(genre, 0) + 1
            if per_genre is None or counts[genre] <= per_genre:
                rows.append((Label(genre=genre, raw_genre=raw), where))
        if not rows:
            wanted = f" of the genres {sorted(genres)}" if genres is not None else ""
            raise SourceError(f"the manifest {self._manifest} lists no covers{wanted}")
        return rows

    def _bad(self, number: int, problem: str) -> SourceError:
        return SourceError(f"{self._manifest}, line {number}: {problem}")

    async def plan(self) -> dict[str, int | None]:
        return _plan(label for label, _ in self._rows)

    async def found(self, cursor: dict[str, Any]) -> AsyncGenerator[Found, None]:
        start = int(cursor.get("rows_done", 0))
        for index in range(start, len(self._rows)):
            label, where = self._rows[index]
            place = f"{label.raw_genre} (row {index + 1}/{len(self._rows)})"
            after = {"rows_done": index + 1}
            if urlsplit(where).scheme in ("http", "https"):
                candidate = self._candidate(label, where, where, cover_url=where)
                yield Found(candidate=candidate, cursor=after, place=place, genre=label.genre)
                continue
            path = self._manifest.parent / where
            refused = _refusal(path, self._import_root)
            if refused:  # unresolved in its id: the row's text, not where a link leads
                candidate = self._candidate(label, str(path), where)
                yield Found(
                    candidate=candidate,
                    failure=refused,
                    cursor=after,
                    place=place,
                    genre=label.genre,
                )
                continue
            data, failure = await asyncio.to_thread(_read, path, self._max_bytes)
            candidate = self._candidate(label, str(path.resolve()), where)
            yield Found(
                candidate=candidate,
                data=data,
                failure=failure,
                cursor=after,
                place=place,
                genre=label.genre,
            )

    def _candidate(
        self, label: Label, source_id: str, where: str, *, cover_url: str | None = None
    ) -> Candidate:
        return Candidate(
            source=self.name,
            source_id=source_id,
            labels=(label,),
            provenance=f"folder:{self._manifest.name}:{where}",
            title=Path(urlsplit(where).path).stem or None,
            cover_url=cover_url,
        )


def _refusal(path: Path, import_root: Path | None) -> str | None:
    """Why ``path`` may not be read: it leads outside ``import_root`` (None: anywhere)."""
    if import_root is None:
        return None
    try:
        resolve_inside(path, import_root)
    except InvalidRequest as exc:
        return str(exc)
    return None


def _plan(labels: Iterable[Label]) -> dict[str, int | None]:
    """Items per genre, in the order they come."""
    counts: dict[str, int | None] = {}
    for label in labels:
        counts[label.genre] = (counts.get(label.genre) or 0) + 1
    return counts


def _read(path: Path, max_bytes: int) -> tuple[bytes | None, str | None]:
    """A local cover's bytes, or why there are none."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, f"file too large: {size} bytes (limit {max_bytes})"
        return path.read_bytes(), None
    except FileNotFoundError:
        return None, "file not found"
    except OSError as exc:
        return None, f"unreadable file: {exc.strerror or exc}"


def _is_file(path: Path) -> bool:
    """Regular files, symlinked ones included; broken links and sockets are not covers."""
    try:
        return path.is_file()
    except OSError:
        return False
