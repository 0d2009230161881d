"""``sleeve score`` end to end: progress with images/s and ETA, a summary, exit codes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sleeve_common.cli import main
from sleeve_common.settings import Settings

from ..harness import Registered


@pytest.fixture
def environment(
    scoring_settings: Settings, colour_model: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's environment: the same database and store the colour model is registered in."""
    for name in list(os.environ):
        if name.startswith("SLEEVE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLEEVE_DATABASE_URL", scoring_settings.database_url)
    monkeypatch.setenv("SLEEVE_STORE_URL", scoring_settings.store_url)
    monkeypatch.setenv("SLEEVE_DATA_DIR", str(scoring_settings.data_dir))
    monkeypatch.setenv("SLEEVE_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("SLEEVE_CPU_THREADS", "2")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.usefixtures("environment")
def test_score_a_folder_to_jsonl(
    covers: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "scores.jsonl"

    assert main(["score", "--input", str(covers), "--output", str(output)]) == 0

    out, err = capsys.readouterr()
    assert "8 scored, 0 failed, 0 duplicate ids of 8 items" in out
    assert str(output) in out
    progress = [line for line in err.splitlines() if line.startswith("[score")]
    assert progress and "images/s" in err
    assert any("ETA" in line for line in progress)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert {r["item"]: r["top_genre"] for r in records}["red.png"] == "country"
    assert len(records) == 8


@pytest.mark.usefixtures("environment")
def test_score_to_parquet_with_a_pinned_model(
    covers: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "scores.parquet"
    argv = ["score", "--input", str(covers), "--output", str(output), "--model", "v1"]

    assert main(argv) == 0

    assert pq.read_table(output).num_rows == 8
    assert "8 scored" in capsys.readouterr().out


@pytest.mark.usefixtures("environment")
@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--model", "v7"], 1, "model version 'v7' does not exist"),
    ],
)
def test_score_refusals_are_one_line(
    covers: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    code: int,
    words: str,
) -> None:
    argv = ["score", "--input", str(covers), "--output", str(tmp_path / "o.csv"), *extra]
    assert main(argv) == code
    assert words in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.usefixtures("environment")
def test_score_on_ray_without_ray_says_how_to_install_it(
    covers: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    argv = ["score", "--input", str(covers), "--output", str(tmp_path / "o.csv")]

    assert main([*argv, "--engine", "ray"]) == 1

    line = _one_line(capsys.readouterr().err)
    assert line.startswith("sleeve: error: the ray engine needs Ray")
    assert "pip install 'sleeve-inference[ray]'" in line
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.usefixtures("environment")
@pytest.mark.parametrize(
    ("make_input", "output", "words"),
    [
        (lambda d: str(d / "missing"), "o.jsonl", "no such folder or manifest"),
        (lambda d: "store:nothing/", "o.jsonl", "no images under store:nothing/"),
        (lambda d: str(d), "nowhere/o.jsonl", "does not exist"),
        (lambda d: str(d), "o.txt", "extension picks the format"),
    ],
)
def test_score_bad_input_exits_1(
    covers: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_input: object,
    output: str,
    words: str,
) -> None:
    assert callable(make_input)
    argv = ["score", "--input", make_input(covers), "--output", str(tmp_path / output)]
    assert main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("sleeve: error:")
    assert words in line
