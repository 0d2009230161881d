"""``sleeve scrape`` end to end, in-process: exit codes, one-line errors, rows on disk."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import DISCOGS5

from sleeve_common.cli import main

from .fakes import FakeItunes


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``main`` configures the root logger (``force=True``); put pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def db_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean SLEEVE_* environment: a SQLite file and a local store under tmp_path."""
    for name in list(os.environ):
        if name.startswith("SLEEVE_"):
            monkeypatch.delenv(name)
    path = tmp_path / "var" / "cli.db"
    monkeypatch.setenv("SLEEVE_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("SLEEVE_STORE_URL", f"file://{tmp_path / 'store'}")
    monkeypatch.setenv("SLEEVE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SLEEVE_LOG_LEVEL", "WARNING")
    return path


@pytest.fixture
def covers(tmp_path: Path) -> Path:
    """Two genres, two real covers each."""
    root = tmp_path / "covers"
    for genre in ("Country", "Rock"):
        (root / genre).mkdir(parents=True)
        for path in sorted((DISCOGS5 / genre).glob("*.jpg"))[:2]:
            shutil.copyfile(path, root / genre / path.name)
    return root


def sleeve(*argv: str) -> int:
    """Run ``sleeve ARGV`` in a worker thread, so its ``asyncio.run`` leaves the test loop alone."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(main, list(argv)).result()


def error_lines(stderr: str) -> list[str]:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    return lines


def test_upgrade_then_scrape_a_folder(
    db_file: Path, covers: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sleeve("db", "upgrade") == 0
    assert capsys.readouterr().out == "database is at the latest schema\n"

    assert sleeve("scrape", "--source", "folder", "--path", str(covers)) == 0

    captured = capsys.readouterr()
    assert captured.out == "scrape run 1: 4 seen: 4 added, 0 duplicates, 0 rejected\n"
    assert "[scrape 100%] run 1 done: 4 seen: 4 added" in captured.err
    with sqlite3.connect(db_file) as connection:
        statuses = connection.execute("SELECT status FROM albums").fetchall()
        run = connection.execute("SELECT status, seen, added FROM scrape_runs").fetchall()
    assert statuses == [("accepted",)] * 4
    assert run == [("succeeded", 4, 4)]
    assert len(list((tmp_path / "store" / "covers").rglob("*.jpg"))) == 4


def test_scrape_again_with_genre_filter_and_limit(
    db_file: Path, covers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sleeve("db", "upgrade") == 0
    args = ("scrape", "--source", "folder", "--path", str(covers))
    assert sleeve(*args, "--genres", "rock", "--per-genre", "1") == 0
    assert sleeve(*args) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "scrape run 1: 1 seen: 1 added, 0 duplicates, 0 rejected",
        "scrape run 2: 4 seen: 3 added, 1 duplicates, 0 rejected",
    ]


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (
            ["--source", "spotify"],
            2,
            "sleeve: configuration error: the spotify source needs SLEEVE_SPOTIFY_CLIENT_ID and "
            "SLEEVE_SPOTIFY_CLIENT_SECRET: the client credentials of a Spotify app "
            "(https://developer.spotify.com/dashboard)",
        ),
        (
            ["--source", "musicbrainz"],
            2,
            "sleeve: configuration error: the musicbrainz source needs SLEEVE_MUSICBRAINZ_CONTACT: "
            "an e-mail address or URL that MusicBrainz can reach you at (it refuses clients that "
            "do not say who they are)",
        ),
        (
            ["--source", "bandcamp-tsv", "--path", "{tmp}/links.tsv"],
            1,
            "sleeve: error: the bandcamp-tsv source's TSV file {tmp}/links.tsv does not exist",
        ),
        (
            ["--source", "mumu-csv", "--path", "{tmp}"],
            1,
            "sleeve: error: {tmp} is not a file (the mumu-csv source reads a CSV file)",
        ),
        (
            ["--source", "folder", "--path", "{tmp}/covers.txt"],
            1,
            "sleeve: error: folder {tmp}/covers.txt does not exist",
        ),
    ],
    ids=["spotify-credentials", "musicbrainz-contact", "bandcamp-file", "mumu-folder", "folder"],
)
def test_what_a_worker_could_not_do_is_refused_before_the_database_is_opened(
    db_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    line: str,
) -> None:
    # No `sleeve db upgrade`: the check comes first, so the database is never looked at.
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]

    assert sleeve("scrape", *argv) == code

    assert error_lines(capsys.readouterr().err) == [line.replace("{tmp}", str(tmp_path))]
    assert not db_file.exists()


def test_a_set_contact_lets_musicbrainz_start(
    db_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLEEVE_MUSICBRAINZ_CONTACT", "covers@example.org")
    monkeypatch.setenv("SLEEVE_MUSICBRAINZ_BASE_URL", "http://127.0.0.1:9/ws/2")

    # Past the up-front check, the run stops at the database that was never upgraded.
    assert sleeve("scrape", "--source", "musicbrainz", "--genres", "jazz") == 1

    [line] = error_lines(capsys.readouterr().err)
    assert "run `sleeve db upgrade`" in line


def test_a_bad_contact_is_a_configuration_error(
    db_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLEEVE_MUSICBRAINZ_CONTACT", "call me")

    assert sleeve("scrape", "--source", "musicbrainz") == 2

    assert error_lines(capsys.readouterr().err) == [
        "sleeve: configuration error: SLEEVE_MUSICBRAINZ_CONTACT: must be an e-mail address or "
        "an http(s) URL MusicBrainz can reach"
    ]


def test_missing_folder_exits_1(
    db_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sleeve("db", "upgrade") == 0
    capsys.readouterr()

    code = sleeve("scrape", "--source", "folder", "--path", str(tmp_path / "nowhere"))

    assert code == 1
    assert error_lines(capsys.readouterr().err) == [
        f"sleeve: error: folder {tmp_path / 'nowhere'} does not exist"
    ]


def test_folder_without_path_exits_2(db_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sleeve("scrape", "--source", "folder") == 2

    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith("sleeve: invalid request: ")
    assert "the folder source needs a path" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "nope"], "argument --source: invalid choice: 'nope'"),
        (["--source", "folder", "--per-genre", "0"], "argument --per-genre: must be at least 1"),
        (
            ["--source", "folder", "--per-genre", "abc"],
            "argument --per-genre: 'abc' is not a whole number",
        ),
        (["--source", "folder", "--genres", " , "], "argument --genres: give at least one genre"),
        (["--source", "folder", "--resume", "-3"], "argument --resume: must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(
    db_file: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        sleeve("scrape", *args)

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_scrape_before_upgrade_says_to_upgrade(
    db_file: Path, covers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sleeve("scrape", "--source", "folder", "--path", str(covers)) == 1

    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(f"sleeve: error: no database file at {db_file}")
    assert "run `sleeve db upgrade`" in line
    assert not db_file.exists()  # only `sleeve db upgrade` creates it


def test_bad_database_url_exits_2(
    db_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLEEVE_DATABASE_URL", "mysql://x")

    assert sleeve("scrape", "--source", "itunes") == 2

    assert error_lines(capsys.readouterr().err) == [
        "sleeve: configuration error: SLEEVE_DATABASE_URL: must be a sqlite:// or postgresql:// URL"
    ]


def test_unreachable_postgres_exits_1(
    db_file: Path, covers: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLEEVE_DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/db")

    assert sleeve("scrape", "--source", "folder", "--path", str(covers)) == 1

    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(
        "sleeve: error: cannot reach the database at postgresql+asyncpg://u:***@127.0.0.1:1/db: "
    )
    assert "hunter2" not in line


def test_scrape_itunes_genres_from_the_fake_api(
    db_file: Path,
    itunes: FakeItunes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SLEEVE_ITUNES_BASE_URL", itunes.base_url)
    monkeypatch.setenv("SLEEVE_ITUNES_RATE", "1000")
    monkeypatch.setenv("SLEEVE_DOWNLOAD_RATE", "1000")
    assert sleeve("db", "upgrade") == 0
    capsys.readouterr()

    args = ("scrape", "--source", "itunes", "--genres", "jazz,metal", "--per-genre", "3")
    assert sleeve(*args) == 0

    captured = capsys.readouterr()
    assert captured.out == "scrape run 1: 6 seen: 6 added, 0 duplicates, 0 rejected\n"
    lines = error_lines(captured.err)
    assert lines[0].startswith("[scrape  17%] run 1: itunes jazz 1/3 - 1 seen: 1 added")
    assert lines[-1] == "[scrape 100%] run 1 done: 6 seen: 6 added, 0 duplicates, 0 rejected"
    with sqlite3.connect(db_file) as connection:
        genres = connection.execute(
            "SELECT genre, count(*) FROM album_labels GROUP BY genre ORDER BY genre"
        ).fetchall()
    assert genres == [("jazz", 3), ("metal", 3)]


def test_scrape_an_unknown_genre_exits_1_naming_the_known_ones(
    db_file: Path,
    itunes: FakeItunes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SLEEVE_ITUNES_BASE_URL", itunes.base_url)
    assert sleeve("db", "upgrade") == 0
    capsys.readouterr()

    assert sleeve("scrape", "--source", "itunes", "--genres", "polka") == 1

    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith("sleeve: error: the itunes source has no genre 'polka'; it knows blues,")
    assert itunes.hits == []
