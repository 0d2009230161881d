"""Work requests shared by the CLI, the API and the workers: one validated shape each."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sleeve_common.exceptions import ConfigError, InvalidRequest
from sleeve_common.genres import normalize_genre
from sleeve_common.import_root import open_root, resolve_inside
from sleeve_common.model_files import EXPORT_VARIANTS, ExportVariant
from sleeve_common.models import MAX_ROW_ID
from sleeve_common.strict import JsonInt, JsonIntOrNone

if TYPE_CHECKING:
    from sleeve_common.settings import Settings

__all__ = [
    "SOURCES",
    "DatasetBuild",
    "ScrapeParams",
    "ScrapeRequest",
    "Source",
    "TrainRequest",
    "api_scrape_request",
    "check_scrape_request",
]

Source = Literal["itunes", "deezer", "musicbrainz", "spotify", "bandcamp-tsv", "mumu-csv", "folder"]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]
# Sources that read a label file named by ``path`` (the folder source takes a folder or one).
_FILE_SOURCES = {"bandcamp-tsv": "TSV file", "mumu-csv": "CSV file"}
_PATH_SOURCES = ("folder", *_FILE_SOURCES)

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_MAX_PATH = 4096


class ScrapeParams(BaseModel):
    """What to scrape, as ``sleeve scrape``'s options or ``POST /v1/scrape-runs``'s body say.

    Strict, as every request body of the API: ``"5"`` or ``true`` is no count (``5.0`` is).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    source: Source
    path: str | None = Field(
        default=None,
        max_length=_MAX_PATH,
        description="folder, CSV manifest or label file; over the API inside SLEEVE_IMPORT_ROOT "
        "(a relative path is taken from there)",
    )
    # Lax only to take a JSON array for the tuple; its items are still strict strings.
    genres: tuple[str, ...] | None = Field(default=None, max_length=100, strict=False)
    per_genre: JsonIntOrNone = Field(default=None, ge=1, le=1_000_000)
    resume: JsonIntOrNone = Field(
        default=None, ge=1, le=MAX_ROW_ID, description="scrape run to continue"
    )

    @field_validator("path")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("a path cannot contain a NUL character")
        return value

    @field_validator("genres")
    @classmethod
    def _non_empty_genres(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        for genre in value:
            if len(genre) > 64:
                raise ValueError(f"genre names are at most 64 characters, got {len(genre)}")
            if any(unicodedata.category(char) == "Cc" for char in genre):
                # Taken, "a\x00b" failed later: PostgreSQL stores no NUL in a raw genre.
                raise ValueError("genre names cannot hold control characters")
            normalize_genre(genre)  # raises for names without letters or digits
        return value

    @model_validator(mode="after")
    def _path_for_files(self) -> ScrapeParams:
        if self.source in _PATH_SOURCES and not self.path:
            raise ValueError(f"the {self.source} source needs a path")
        return self


class ScrapeRequest(ScrapeParams):
    """A scrape to run: its params, and the folder its files must stay in when it came over
    the API (``api_scrape_request``); None for ``sleeve scrape`` and the first-run bootstrap,
    whose paths are the operator's own."""

    import_root: str | None = None


def api_scrape_request(params: ScrapeParams, settings: Settings) -> ScrapeRequest:
    """The scrape ``POST /v1/scrape-runs`` queues for ``params``, checked as a worker would.

    A source that reads files (``folder``, ``bandcamp-tsv``, ``mumu-csv``) is confined to
    ``SLEEVE_IMPORT_ROOT``: its path, resolved (a relative one from the root), must lie inside,
    and so must every file the worker reads for it. With no root configured those sources are
    refused (``ConfigError`` naming the setting); a path outside raises ``InvalidRequest``.
    Then the checks of ``check_scrape_request``.
    """
    if params.source not in _PATH_SOURCES or params.path is None:
        request = ScrapeRequest(**params.model_dump())
    elif settings.import_root is None:
        raise ConfigError(
            f"the {params.source} source reads files on the server, which the API allows only "
            "inside SLEEVE_IMPORT_ROOT, and that is not set: set it to the folder API clients "
            "may import from (`sleeve scrape --path` on the server is not restricted)"
        )
    else:
        root = open_root(settings.import_root)
        path = resolve_inside(Path(params.path), root)
        if len(str(path)) > _MAX_PATH:
            raise InvalidRequest(f"path: inside the import root it is over {_MAX_PATH} characters")
        request = ScrapeRequest(
            **params.model_dump(exclude={"path"}), path=str(path), import_root=str(root)
        )
    check_scrape_request(request, settings)
    return request


def check_scrape_request(request: ScrapeRequest, settings: Settings) -> None:
    """Refuse up front what a worker could not do with these settings.

    A source without its credentials raises ``ConfigError`` (naming the variables); a path
    that is missing, of the wrong kind or outside the request's import root
    ``InvalidRequest``. The API answers each with 422 instead of queuing a job bound to fail,
    the CLI with one line; the scraper checks again before it builds the source. Paths are
    checked on this machine's filesystem, which is the worker's in ``sleeve run``.
    """
    source = request.source
    if source == "spotify":
        missing = [
            name
            for name, value in (
                ("SLEEVE_SPOTIFY_CLIENT_ID", settings.spotify_client_id),
                ("SLEEVE_SPOTIFY_CLIENT_SECRET", settings.spotify_client_secret),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(
                f"the spotify source needs {' and '.join(missing)}: the client credentials of a "
                "Spotify app (https://developer.spotify.com/dashboard)"
            )
    if source == "musicbrainz" and settings.musicbrainz_contact is None:
        raise ConfigError(
            "the musicbrainz source needs SLEEVE_MUSICBRAINZ_CONTACT: an e-mail address or URL "
            "that MusicBrainz can reach you at (it refuses clients that do not say who they are)"
        )
    if request.path is None:
        return
    path = Path(request.path)
    if request.import_root is not None:
        path = resolve_inside(path, Path(request.import_root))
    try:
        _check_path(source, path)
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidRequest(f"cannot use the path {str(path)[:200]!r}: {reason}") from None


def _check_path(source: str, path: Path) -> None:
    if source == "folder":
        if not path.exists():
            raise InvalidRequest(f"folder {path} does not exist")
        if not path.is_dir() and not (path.is_file() and path.suffix.lower() == ".csv"):
            raise InvalidRequest(f"{path} is not a folder (nor a .csv manifest)")
    elif source in _FILE_SOURCES:
        kind = _FILE_SOURCES[source]
        if not path.exists():
            raise InvalidRequest(f"the {source} source's {kind} {path} does not exist")
        if not path.is_file():
            raise InvalidRequest(f"{path} is not a file (the {source} source reads a {kind})")


class DatasetBuild(BaseModel):
    """How to build a training run's dataset when it does not exist yet (``sleeve dataset
    build``'s options; the first-run bootstrap uses it). Strict, as ``TrainRequest``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    genres: tuple[str, ...] | None = Field(
        default=None,
        max_length=100,
        strict=False,  # a JSON array for the tuple; its items are still strict strings
        description="unset: every genre with enough covers",
    )
    min_per_genre: JsonInt = Field(default=10, ge=1, le=1_000_000)
    max_per_genre: JsonIntOrNone = Field(default=None, ge=1, le=1_000_000)
    seed: JsonInt = Field(default=0, ge=0, le=2**31 - 1)


class TrainRequest(BaseModel):
    """A training run's dataset and options (``sleeve train`` / ``POST /v1/training-runs``).

    Strict, as every request body of the API: ``"10"`` or ``true`` is no number.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    dataset: str = Field(pattern=_NAME_PATTERN)
    build_dataset: DatasetBuild | None = Field(
        default=None,
        description="build the dataset from the stored covers first, if it does not exist yet",
    )
    epochs: JsonInt = Field(default=10, ge=1, le=1000)
    fine_tune_epochs: JsonInt = Field(
        default=8,
        ge=0,
        le=1000,
        description="phase 2: the top blocks of the base train with the head; 0 skips it",
    )
    learning_rate: float = Field(default=1e-3, gt=0, le=0.5)
    fine_tune_learning_rate: float = Field(default=1e-4, gt=0, le=0.1)
    unfreeze_blocks: JsonInt = Field(default=2, ge=1, le=4)
    dropout: float = Field(default=0.2, ge=0, lt=0.95)
    batch_size: JsonInt = Field(default=32, ge=1, le=1024)
    augment: bool = Field(
        default=True,
        description="train on 12 views of each cover (five crops, and mirror images) "
        "instead of the served view alone",
    )
    seed: JsonInt = Field(default=0, ge=0, le=2**31 - 1)
    # Lax only to take a JSON array for the tuple; its items are still strict strings.
    variants: tuple[ExportVariant, ...] = Field(
        default=(),
        max_length=len(EXPORT_VARIANTS),
        strict=False,
        description="also export these variants of the model, each scored on the test split "
        "and timed on the CPU: `fp16` (half the size, slower on a CPU), `int8` (static "
        "quantization calibrated on training covers: under a third of the size, faster on a CPU)",
    )

    @field_validator("variants")
    @classmethod
    def _distinct_variants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each variant can be asked for once")
        return value
