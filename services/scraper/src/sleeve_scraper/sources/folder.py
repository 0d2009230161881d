"""A local folder of covers labelled by sub-folder: ``DIR/<genre>/**/<file>``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from sleeve_common.genres import normalize_genre
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.sources.base import Candidate, Found, Label, SourceContext

__all__ = ["FolderSource", "folder_source"]


def folder_source(context: SourceContext) -> FolderSource:
    """The folder named by ``--path``, limited to the asked genres."""
    request = context.request
    if not request.path:
        raise SourceError("the folder source needs a path (--path DIR)")
    genres = {normalize_genre(g) for g in request.genres} if request.genres else None
    return FolderSource(
        Path(request.path),
        genres=genres,
        per_genre=request.per_genre,
        max_bytes=context.settings.max_cover_bytes,
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
    ) -> None:
        if not root.exists():
            raise SourceError(f"folder {root} does not exist")
        if not root.is_dir():
            raise SourceError(f"{root} is not a folder")
        self._root = root.resolve()
        self._max_bytes = max_bytes
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
            files = sorted(
                p for p in folder.rglob("*") if not p.name.startswith(".") and _is_file(p)
            )
            label = Label(genre=genre, raw_genre=folder.name)
            listed.extend((label, p) for p in files[:per_genre])
        if genres is not None and not listed:
            raise SourceError(f"no sub-folder of {self._root} matches the genres {sorted(genres)}")
        return listed

    async def total(self) -> int | None:
        return len(self._files)

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
            data, failure = await asyncio.to_thread(self._read, path)
            yield Found(
                candidate=candidate,
                data=data,
                failure=failure,
                cursor={"files_done": index + 1},
                place=f"{label.raw_genre} (file {index + 1}/{len(self._files)})",
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
