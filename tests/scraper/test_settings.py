"""The scraper's settings: defaults, and values out of bounds refused naming the variable."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sleeve_common.exceptions import ConfigError
from sleeve_common.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SLEEVE_SCRAPE_", "SLEEVE_SPOTIFY_", "SLEEVE_MUSICBRAINZ_")):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = Settings()

    assert (settings.scrape_timeout_s, settings.scrape_retry_attempts) == (30.0, 5)
    assert (settings.scrape_host_pause_after, settings.scrape_host_pause_s) == (5, 60.0)
    assert settings.scrape_download_concurrency == 8
    assert (settings.scrape_taxonomy, settings.scrape_multi_genre) == (None, "drop")


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLEEVE_SCRAPE_TAXONOMY", "/etc/sleeve/genres.toml")
    monkeypatch.setenv("SLEEVE_SCRAPE_MULTI_GENRE", "keep")

    settings = load_settings()

    assert settings.scrape_taxonomy == Path("/etc/sleeve/genres.toml")
    assert settings.scrape_multi_genre == "keep"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SLEEVE_SCRAPE_TIMEOUT_S", "0"),
        ("SLEEVE_SCRAPE_TIMEOUT_S", "301"),
        ("SLEEVE_SCRAPE_RETRY_ATTEMPTS", "0"),
        ("SLEEVE_SCRAPE_RETRY_ATTEMPTS", "21"),
        ("SLEEVE_SCRAPE_HOST_PAUSE_AFTER", "0"),
        ("SLEEVE_SCRAPE_HOST_PAUSE_S", "-1"),
        ("SLEEVE_SCRAPE_HOST_PAUSE_S", "3601"),
        ("SLEEVE_SCRAPE_DOWNLOAD_CONCURRENCY", "0"),
        ("SLEEVE_SCRAPE_DOWNLOAD_CONCURRENCY", "65"),
        ("SLEEVE_SCRAPE_MULTI_GENRE", "both"),
    ],
)
def test_out_of_bounds_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=f"^{variable}: "):
        load_settings()


def test_source_credentials_are_unset_by_default_and_blank_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (Settings().spotify_client_id, Settings().spotify_client_secret) == (None, None)
    assert Settings().musicbrainz_contact is None

    monkeypatch.setenv("SLEEVE_SPOTIFY_CLIENT_ID", " ")
    monkeypatch.setenv("SLEEVE_SPOTIFY_CLIENT_SECRET", "")
    monkeypatch.setenv("SLEEVE_MUSICBRAINZ_CONTACT", "")
    settings = load_settings()

    assert (settings.spotify_client_id, settings.spotify_client_secret) == (None, None)
    assert settings.musicbrainz_contact is None


@pytest.mark.parametrize("contact", ["covers@example.org", "https://example.org/contact"])
def test_a_musicbrainz_contact_is_an_address_or_a_url(
    monkeypatch: pytest.MonkeyPatch, contact: str
) -> None:
    monkeypatch.setenv("SLEEVE_MUSICBRAINZ_CONTACT", f" {contact} ")

    assert load_settings().musicbrainz_contact == contact


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "SLEEVE_MUSICBRAINZ_CONTACT",
            "covers team",
            "must be an e-mail address or an http(s) URL",
        ),
        (
            "SLEEVE_MUSICBRAINZ_CONTACT",
            "me@localhost",
            "must be an e-mail address or an http(s) URL",
        ),
        ("SLEEVE_SPOTIFY_CLIENT_SECRET", "changeme", "is a placeholder value"),
    ],
)
def test_unusable_source_credentials_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=f"^{variable}: {re.escape(message)}"):
        load_settings()


def test_the_spotify_secret_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLEEVE_SPOTIFY_CLIENT_SECRET", "9a8b7c6d5e4f30211f2e3d4c5b6a7988")

    settings = load_settings()

    assert "9a8b7c6d5e4f" not in repr(settings) and "9a8b7c6d5e4f" not in str(settings)
