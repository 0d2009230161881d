"""The scraper's settings: defaults, and values out of bounds refused naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sleeve_common.exceptions import ConfigError
from sleeve_common.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLEEVE_SCRAPE_"):
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
