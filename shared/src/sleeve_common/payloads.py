"""Work requests shared by the CLI, the API and the workers: one validated shape each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sleeve_common.exceptions import ConfigError, InvalidRequest
from sleeve_common.genres import normalize_genre
from sleeve_common.models import MAX_ROW_ID

if TYPE_CHECKING:
    from sleeve_common.settings import Settings

__all__ = [
    "SOURCES",
    "DatasetBuild",
    "ScrapeRequest",
    "Source",
    "TrainRequest",
    "check_scrape_request",
]

Source = Literal["itunes", "deezer", "musicbrainz", "spotify", "bandcamp-tsv", "mumu-csv", "folder"]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]
# Sources that read a label file named by ``path`` (the folder source takes a folder or one).
_FILE_SOURCES = {"bandcamp-tsv": "TSV file", "mumu-csv": "CSV file"}

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class ScrapeRequest(BaseModel):
    """What to scrape (``sleeve scrape`` / ``POST /v1/scrape-runs``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Source
    path: str | None = Field(default=None, max_length=4096, description="folder or label file")
    genres: tuple[str, ...] | None = Field(default=None, max_length=100)
    per_genre: int | None = Field(default=None, ge=1, le=1_000_000)
    resume: int | None = Field(
        default=None, ge=1, le=MAX_ROW_ID, description="scrape run to continue"
    )

    @field_validator("genres")
    @classmethod
    def _non_empty_genres(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        for genre in value:
            if len(genre) > 64:
                raise ValueError(f"genre names are at most 64 characters, got {len(genre)}")
            normalize_genre(genre)  # raises for names without letters or digits
        return value

    @model_validator(mode="after")
    def _path_for_files(self) -> ScrapeRequest:
        if self.source in ("folder", *_FILE_SOURCES) and not self.path:
            raise ValueError(f"the {self.source} source needs a path")
        return self


def check_scrape_request(request: ScrapeRequest, settings: Settings) -> None:
    """Refuse up front what a worker could not do with these settings.

    A source without its credentials raises ``ConfigError`` (naming the variables); a path
    that is missing or of the wrong kind ``InvalidRequest``. The API answers each with 422
    instead of queuing a job bound to fail, the CLI with one line; the scraper checks again
    before it builds the source. Paths are checked on this machine's filesystem, which is
    the worker's in ``sleeve run``.
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
    build``'s options; the first-run bootstrap uses it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    genres: tuple[str, ...] | None = Field(
        default=None, max_length=100, description="unset: every genre with enough covers"
    )
    min_per_genre: int = Field(default=10, ge=1, le=1_000_000)
    max_per_genre: int | None = Field(default=None, ge=1, le=1_000_000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class TrainRequest(BaseModel):
    """A training run's dataset and options (``sleeve train`` / ``POST /v1/training-runs``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(pattern=_NAME_PATTERN)
    build_dataset: DatasetBuild | None = Field(
        default=None,
        description="build the dataset from the stored covers first, if it does not exist yet",
    )
    epochs: int = Field(default=10, ge=1, le=1000)
    fine_tune_epochs: int = Field(default=0, ge=0, le=1000, description="phase 2; slow on a CPU")
    learning_rate: float = Field(default=1e-3, gt=0, le=0.5)
    fine_tune_learning_rate: float = Field(default=1e-5, gt=0, le=0.1)
    unfreeze_blocks: int = Field(default=2, ge=1, le=16)
    dropout: float = Field(default=0.2, ge=0, lt=0.95)
    batch_size: int = Field(default=32, ge=1, le=1024)
    flip_augment: bool = True
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
