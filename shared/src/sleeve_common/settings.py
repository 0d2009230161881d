"""Sleeve configuration: environment variables with the prefix ``SLEEVE_``.

Settings are built once in an entry point (``load_settings()``) and passed down,
never imported as a module-level object.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sleeve_common.db import asyncpg_url
from sleeve_common.exceptions import ConfigError
from sleeve_common.genres import normalize_genre
from sleeve_common.model_files import ServedVariant

__all__ = ["Settings", "load_settings"]

_PLACEHOLDER_SECRETS = {
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "password",
    "apikey",
    "api-key",
}
_MIN_API_KEY_LENGTH = 16
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

PositiveRate = Annotated[float, Field(gt=0, le=1000)]


class Settings(BaseSettings):
    """Every knob of the three services; see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="SLEEVE_", extra="ignore", frozen=True)

    # Where state lives.
    database_url: str = "sqlite+aiosqlite:///./var/sleeve.db"
    store_url: str = "file://./var/store"
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLEEVE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLEEVE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    data_dir: Path = Path("./var")

    # Security: guards every write/admin endpoint. Unset = those endpoints refuse.
    api_key: SecretStr | None = None
    # The folder scrapes queued over the API may read (import_root.py); unset = the API
    # refuses the folder and label-file sources. `sleeve scrape --path` is not bound by it.
    import_root: Path | None = None

    # Logging.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Job queue.
    job_lease_seconds: float = Field(default=60.0, gt=1, le=3600)
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    worker_poll_seconds: float = Field(default=2.0, gt=0, le=60)

    # Trainer.
    base_weights: str = "imagenet"
    train_batch_size: int = Field(default=32, ge=1, le=1024)
    # A newly registered candidate replaces production only if it scores a higher macro F1
    # on production's own test covers (sleeve_trainer/promotion.py); off = promote by hand.
    auto_promote: bool = False
    # A live training run writes its progress and touches its row this often; a running run
    # silent for three beats is reported interrupted (its process died). The API and the
    # trainers must agree on it.
    train_heartbeat_s: float = Field(default=10.0, gt=0, le=600)

    # First run: `sleeve run` trains a first model while the registry is empty (bootstrap.py).
    bootstrap: bool = True
    # An API source ("itunes", "deezer") or a folder DIR/<genre>/<file> (or a manifest file).
    bootstrap_source: str = Field(default="itunes", min_length=1, max_length=4096)
    # Comma-separated genres; unset = a handful of well-separated ones for an API source,
    # every sub-folder of a folder.
    bootstrap_genres: str | None = None
    bootstrap_per_genre: int = Field(default=300, ge=3, le=100_000)
    bootstrap_epochs: int = Field(default=10, ge=1, le=1000)

    # Inference API.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    model_version: str | None = None
    # Which file of that version to run: its own fp32 export or a variant its training run
    # exported (model_files.py); a version without it serves fp32 and says so in the log.
    model_variant: ServedVariant = "fp32"
    top_k: int = Field(default=5, ge=1, le=100)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024**3)
    max_images_per_request: int = Field(default=32, ge=1, le=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=10_000, le=500_000_000)
    max_request_pixels: int = Field(default=64_000_000, ge=10_000, le=2_000_000_000)
    ort_providers: str | None = None
    # Serving core: dynamic batching and admission control (see docs/configuration.md).
    batch_max_size: int = Field(default=8, ge=1, le=1024)
    batch_max_delay_ms: float = Field(default=2.0, ge=0, le=1000)
    queue_max_images: int = Field(default=32, ge=1, le=100_000)
    request_deadline_s: float = Field(default=10.0, gt=0, le=600)
    cpu_threads: int | None = Field(default=None, ge=1, le=1024)
    # URL predictions: the SSRF guard's limits and the private networks it may reach anyway.
    url_fetch_timeout_s: float = Field(default=10.0, gt=0, le=120)
    url_fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    url_fetch_allowed_networks: str = ""
    # Bulk scoring: how sure the model must be to flag an album's stored genre as wrong.
    scoring_disagree_confidence: float = Field(default=0.5, ge=0, le=1)
    # Items per chunk: one existence check, one fetch wave and one insert each; at most three
    # chunks are held at once, so this bounds memory, and a killed run loses at most these.
    scoring_chunk_size: int = Field(default=256, ge=1, le=100_000)
    # Bulk scoring on Ray (`--engine ray`): no address starts a local Ray for the run;
    # "ray://head:10001" (or "auto" on a cluster node) joins an existing cluster.
    ray_address: str | None = None
    ray_actors: int | None = Field(default=None, ge=1, le=100_000)

    # Scraper sources: base URLs (a mirror or a local fake) and polite rates (requests/s).
    itunes_base_url: str = "https://itunes.apple.com"
    deezer_base_url: str = "https://api.deezer.com"
    musicbrainz_base_url: str = "https://musicbrainz.org/ws/2"
    coverartarchive_base_url: str = "https://coverartarchive.org"
    spotify_api_base_url: str = "https://api.spotify.com/v1"
    spotify_auth_url: str = "https://accounts.spotify.com/api/token"
    spotify_client_id: str | None = None
    spotify_client_secret: SecretStr | None = None
    # MusicBrainz refuses anonymous clients: an e-mail address or URL it can reach us at.
    musicbrainz_contact: str | None = None
    itunes_rate: PositiveRate = 0.3
    deezer_rate: PositiveRate = 5.0
    musicbrainz_rate: PositiveRate = 1.0
    coverartarchive_rate: PositiveRate = 5.0
    spotify_rate: PositiveRate = 5.0
    download_rate: PositiveRate = 10.0
    max_cover_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=1024**3)
    user_agent: str = "Sleeve/0.1 (+https://github.com/sleeve-covers/sleeve)"
    # Scraper HTTP edge, cover downloads and genre taxonomy (see docs/configuration.md).
    scrape_timeout_s: float = Field(default=30.0, gt=0, le=300)
    scrape_retry_attempts: int = Field(default=5, ge=1, le=20)
    scrape_host_pause_after: int = Field(default=5, ge=1, le=1000)
    scrape_host_pause_s: float = Field(default=60.0, ge=0, le=3600)
    scrape_download_concurrency: int = Field(default=8, ge=1, le=64)
    # Per-album API requests (Deezer's /album, Spotify's artists...) a source keeps in flight;
    # each host's rate still paces them. One at a time cannot reach a rate whose spacing is
    # shorter than a round trip (bench/scrape_rate.py).
    scrape_api_concurrency: int = Field(default=4, ge=1, le=64)
    scrape_taxonomy: Path | None = None
    scrape_multi_genre: Literal["drop", "keep"] = "drop"
    # A live scrape touches its run this often; a running run silent for three beats is
    # reported interrupted (its process died). The API and the scrapers must agree on it.
    scrape_heartbeat_s: float = Field(default=10.0, gt=0, le=600)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Accept plain URLs and pick the async driver this project uses."""
        for plain, async_ in (
            ("sqlite://", "sqlite+aiosqlite://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
        ):
            if value.startswith(plain):
                value = async_ + value[len(plain) :]
                break
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        # Parsed here, so that a malformed URL is one line naming the variable, not a
        # traceback at the first connection; the value is never repeated (it holds a password).
        try:
            port = make_url(value).port
        except (ArgumentError, ValueError):
            raise ValueError(
                "is not a valid URL (a password with @, : or / must be percent-encoded)"
            ) from None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} is not between 1 and 65535")
        asyncpg_url(value)  # libpq's sslmode is translated; a bad one is refused here, at start
        return value

    @field_validator("store_url")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        if not value.startswith(("file://", "s3://")):
            raise ValueError("must be a file:// or s3://bucket/prefix URL")
        if value.startswith("s3://") and not value[len("s3://") :].split("/")[0]:
            raise ValueError("s3:// URL needs a bucket name")
        return value

    @field_validator("bootstrap_genres")
    @classmethod
    def _genre_names(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for genre in value.split(","):
            normalize_genre(genre)  # raises for a name without letters or digits
        return value

    @field_validator("url_fetch_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for entry in filter(None, (part.strip() for part in value.split(","))):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP network like 10.0.0.0/8") from None
        return value

    @property
    def url_allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """Private networks that URL predictions may reach despite the SSRF guard."""
        parts = (part.strip() for part in self.url_fetch_allowed_networks.split(","))
        return tuple(ipaddress.ip_network(part, strict=False) for part in parts if part)

    @field_validator("musicbrainz_contact")
    @classmethod
    def _contact(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not (_EMAIL.fullmatch(value) or value.startswith(("https://", "http://"))):
            raise ValueError("must be an e-mail address or an http(s) URL MusicBrainz can reach")
        return value

    @field_validator("spotify_client_id")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator("import_root", mode="before")
    @classmethod
    def _blank_root_is_unset(cls, value: object) -> object:
        # An empty variable means "unset", not Path("") (the working directory).
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("spotify_client_secret")
    @classmethod
    def _real_client_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if value.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder value; set the Spotify app's client secret")
        return value

    @field_validator("api_key")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret.lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder value; set a real secret")
        if len(secret) < _MIN_API_KEY_LENGTH:
            raise ValueError(f"must be at least {_MIN_API_KEY_LENGTH} characters")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, or raise ConfigError naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = field if field.isupper() else f"SLEEVE_{field.upper()}"
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{variable}: {message}") from None
