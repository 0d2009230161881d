"""The import root: the one folder whose files a scrape queued over the API may read.

``sleeve scrape --path`` reads whatever the person at the shell names: they have the files
already. A scrape queued with ``POST /v1/scrape-runs`` comes from whoever holds the API key,
so its folder, manifest or label file, and every file a manifest row or a symlink in the
folder leads to, must lie inside ``SLEEVE_IMPORT_ROOT`` (unset: the API refuses those
sources). Paths are compared after ``..`` and symlinks are resolved, so neither escapes.
"""

from __future__ import annotations

from pathlib import Path

from sleeve_common.exceptions import ConfigError, InvalidRequest

__all__ = ["open_root", "resolve_inside"]


def open_root(configured: Path) -> Path:
    """``SLEEVE_IMPORT_ROOT`` resolved; ``ConfigError`` unless it is a folder."""
    try:
        root = configured.resolve(strict=True)
        if root.is_dir():
            return root
    except (OSError, RuntimeError):
        pass
    raise ConfigError(f"SLEEVE_IMPORT_ROOT {configured} is not a folder")


def resolve_inside(path: Path, root: Path) -> Path:
    """``path`` with ``..`` and symlinks resolved (a relative one taken from ``root``, which is
    resolved already); ``InvalidRequest`` when it leads outside ``root`` or cannot be resolved.
    """
    try:
        resolved = (root / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidRequest(f"cannot resolve the path {str(path)[:200]!r}: {reason}") from None
    if not resolved.is_relative_to(root):
        raise InvalidRequest(
            f"{str(path)[:200]} leads outside the import root {root} (SLEEVE_IMPORT_ROOT)"
        )
    return resolved
