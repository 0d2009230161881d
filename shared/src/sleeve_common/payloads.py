"""Work requests shared by the CLI, the API and the workers: one validated shape each."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sleeve_common.genres import normalize_genre
from sleeve_common.models import MAX_ROW_ID

__all__ = ["IMPLEMENTED_SOURCES", "SOURCES", "ScrapeRequest", "Source", "TrainRequest"]

Source = Literal["itunes", "deezer", "musicbrainz", "spotify", "bandcamp-tsv", "mumu-csv", "folder"]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]
# The scraper's registry (``sleeve_scraper.sources.names()``), repeated here so the API can
# validate requests without importing the scraper; a scraper test keeps the two equal.
IMPLEMENTED_SOURCES: tuple[str, ...] = ("deezer", "folder", "itunes")

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
        if self.source in ("folder", "bandcamp-tsv", "mumu-csv") and not self.path:
            raise ValueError(f"the {self.source} source needs a path")
        return self


class TrainRequest(BaseModel):
    """A training run's dataset and options (``sleeve train`` / ``POST /v1/training-runs``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(pattern=_NAME_PATTERN)
    epochs: int = Field(default=10, ge=1, le=1000)
    fine_tune_epochs: int = Field(default=0, ge=0, le=1000, description="phase 2; slow on a CPU")
    learning_rate: float = Field(default=1e-3, gt=0, le=0.5)
    fine_tune_learning_rate: float = Field(default=1e-5, gt=0, le=0.1)
    unfreeze_blocks: int = Field(default=2, ge=1, le=16)
    dropout: float = Field(default=0.2, ge=0, lt=0.95)
    batch_size: int = Field(default=32, ge=1, le=1024)
    flip_augment: bool = True
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
