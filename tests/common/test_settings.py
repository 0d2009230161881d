"""Settings: defaults for the embedded stack, and one clear line for each bad value."""

from __future__ import annotations

import pytest

from sleeve_common.exceptions import ConfigError
from sleeve_common.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("SLEEVE_", "AWS_")):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_stack() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///./var/sleeve.db"
    assert settings.store_url == "file://./var/store"
    assert settings.api_key is None
    assert settings.is_sqlite


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
    ],
)
def test_plain_database_urls_get_the_async_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("SLEEVE_DATABASE_URL", given)
    assert load_settings().database_url == expected


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SLEEVE_DATABASE_URL", "mysql://x/y", "sqlite:// or postgresql://"),
        ("SLEEVE_STORE_URL", "ftp://x", "file:// or s3://"),
        ("SLEEVE_STORE_URL", "s3:///prefix", "bucket"),
        ("SLEEVE_API_KEY", "changeme", "placeholder"),
        ("SLEEVE_API_KEY", "short", "at least 16"),
        ("SLEEVE_PORT", "70000", "less than or equal to 65535"),
        ("SLEEVE_PORT", "http", "valid integer"),
        ("SLEEVE_ITUNES_RATE", "0", "greater than 0"),
        ("SLEEVE_LOG_LEVEL", "LOUD", "DEBUG"),
        ("SLEEVE_MODEL_VARIANT", "bf16", "'fp32', 'fp16' or 'int8'"),
        ("SLEEVE_TOP_K", "-1", "greater than or equal to 1"),
        ("SLEEVE_MAX_UPLOAD_BYTES", "9" * 400, "less than or equal to"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    text = str(raised.value)
    assert text.startswith(f"{variable}: ")
    assert message in text
    assert "\n" not in text
    assert value not in text or len(value) < 20  # secrets and huge inputs are not echoed


def test_aws_variables_feed_the_s3_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-1")
    settings = load_settings()
    assert settings.aws_access_key_id is not None
    assert settings.aws_access_key_id.get_secret_value() == "id-1"
    assert "secret-1" not in repr(settings)
