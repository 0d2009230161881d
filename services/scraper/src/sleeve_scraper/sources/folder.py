"""A local folder of covers labelled by sub-folder: ``DIR/<genre>/**/<file>``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sleeve_common.genres import normalize_genre
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.ingest import Candidate
from sleeve_scraper.sources import Found

__all__ = ["FolderSource"]


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
    ) -> None:
        if not root.exists():
            raise SourceError(f"folder {root} does not exist")
        if not root.is_dir():
            raise SourceError(f"{root} is not a folder")
        self._root = root.resolve()
        self._max_bytes = max_bytes
        self._files = self._list(genres, per_genre)

    def _list(self, genres: set[str] | None, per_genre: int | None) -> list[tuple[str, Path]]:
        folders = sorted(
            p for p in self._root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not folders:
            raise SourceError(
                f"{self._root} has no genre sub-folders (expected DIR/<genre>/<file>)"
            )
        listed: list[tuple[str, Path]] = []
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
            files = sorted(
                p for p in folder.rglob("*") if not p.name.startswith(".") and _is_file(p)
            )
            listed.extend((folder.name, p) for p in files[:per_genre])
        if genres is not None and not listed:
            raise SourceError(f"no sub-folder of {self._root} matches the genres {sorted(genres)}")
        return listed

    async def total(self) -> int | None:
        return len(self._files)

    async def found(self, cursor: dict[str, Any]) -> AsyncIterator[Found]:
        start = int(cursor.get("files_done", 0))
        for index in range(start, len(self._files)):
            genre, path = self._files[index]
            relative = path.relative_to(self._root).as_posix()
            candidate = Candidate(
                source=self.name,
                source_id=str(path),
                raw_genre=genre,
                provenance=f"folder:{relative}",
                title=path.stem,
            )
            data, failure = await asyncio.to_thread(self._read, path)
            yield Found(
                candidate=candidate, data=data, failure=failure, cursor={"files_done": index + 1}
            )

    def _read(self, path: Path) -> tuple[bytes | None, str | None]:
        try:
            size = path.stat().st_size
            if size > self._max_bytes:
                return None, f"file too large: {size} bytes (limit {self._max_bytes})"
            return path.read_bytes(), None
        except OSError as exc:
            return None, f"unreadable file: {exc.strerror or exc}"


def _is_file(path: Path) -> bool:
    """Regular files, symlinked ones included; broken links and sockets are not covers."""
    try:
        return path.is_file()
    except OSError:
        return False
