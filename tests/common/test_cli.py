"""The `sleeve` commands of the common package: clear lines and exit codes, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleeve_common.cli import main


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment on the embedded default, under tmp_path."""
    import os

    for name in list(os.environ):
        if name.startswith("SLEEVE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLEEVE_LOG_LEVEL", "WARNING")
    return tmp_path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_check_after_upgrade(embedded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade"]) == 0
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "database: ok" in out
    assert "store:    ok (file://" in out
    assert (embedded / "var" / "sleeve.db").is_file()


def test_commands_refuse_an_unmigrated_database(
    embedded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list"]) == 1
    assert "run `sleeve db upgrade`" in _one_line(capsys.readouterr().err)


def test_unreachable_store_is_one_clear_line(
    embedded: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SLEEVE_STORE_URL", "s3://covers/sleeve")
    monkeypatch.setenv("SLEEVE_S3_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert main(["check"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("sleeve: error:")
    assert "127.0.0.1:1" in line


def test_models_list_and_promote_unknown(
    embedded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade"]) == 0
    assert main(["models", "list"]) == 0
    assert "no model is registered yet" in capsys.readouterr().out
    assert main(["models", "promote", "v9"]) == 1
    assert "model version 'v9' does not exist" in _one_line(capsys.readouterr().err)


def test_bad_setting_exits_2_naming_it(
    embedded: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLEEVE_JOB_LEASE_SECONDS", "-5")
    assert main(["check"]) == 2
    assert _one_line(capsys.readouterr().err).startswith(
        "sleeve: configuration error: SLEEVE_JOB_LEASE_SECONDS:"
    )


@pytest.mark.parametrize(
    "argv",
    [[], ["worker", "dance"], ["models", "promote"], ["db", "downgrade"], ["nonsense"]],
)
def test_usage_errors_exit_2(embedded: Path, argv: list[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == 2
