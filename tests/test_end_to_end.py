"""The thin path a user walks, on real covers and the embedded default (SQLite + local store).

scrape a folder → build a dataset → train and export → serve → predict a held-back cover.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from conftest import BASE_WEIGHTS, DISCOGS5
from sleeve_common.cli import main
from sleeve_common.settings import load_settings

GENRES = ("Country", "Electronic", "HipHop", "Pop", "Rock")
PER_GENRE = 8


@pytest.fixture
def covers(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A few dozen real covers in DIR/<genre>/, and one held-back cover per genre."""
    folder = tmp_path / "covers"
    held_back = []
    for genre in GENRES:
        files = sorted((DISCOGS5 / genre).glob("*.jpg"))
        (folder / genre).mkdir(parents=True)
        for source in files[:PER_GENRE]:
            shutil.copy(source, folder / genre / source.name)
        held_back.append(files[-1])
    return folder, held_back


@pytest.mark.slow
def test_thin_path_from_folder_to_prediction(
    covers: tuple[Path, list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, held_back = covers
    monkeypatch.chdir(tmp_path)  # the embedded default lives under ./var
    for name in ("SLEEVE_DATABASE_URL", "SLEEVE_STORE_URL", "SLEEVE_DATA_DIR", "SLEEVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLEEVE_BASE_WEIGHTS", str(BASE_WEIGHTS))
    monkeypatch.setenv("SLEEVE_LOG_LEVEL", "WARNING")

    assert main(["db", "upgrade"]) == 0
    assert main(["scrape", "--source", "folder", "--path", str(folder)]) == 0
    scraped = capsys.readouterr().out
    assert f"{PER_GENRE * len(GENRES)} seen" in scraped
    assert main(["dataset", "build", "--name", "thin", "--min-per-genre", "4"]) == 0
    assert "genres country, electronic, hiphop, pop, rock" in capsys.readouterr().out
    assert main(["train", "--dataset", "thin", "--epochs", "2", "--batch-size", "16"]) == 0
    trained = capsys.readouterr()
    assert "model v1" in trained.out
    assert "head epoch 2/2" in trained.err  # progress reached the terminal
    assert (tmp_path / "var" / "sleeve.db").is_file()
    assert list((tmp_path / "var" / "store" / "models").rglob("model.onnx"))

    predictions = asyncio.run(_predict(held_back))

    assert predictions["model_version"] == "v1"
    assert len(predictions["predictions"]) == len(held_back)
    for prediction in predictions["predictions"]:
        genres = prediction["genres"]
        assert {g["genre"] for g in genres} == {"country", "electronic", "hiphop", "pop", "rock"}
        probabilities = [g["probability"] for g in genres]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert prediction["top_genre"] == genres[0]["genre"]


async def _predict(images: list[Path]) -> dict[str, object]:
    from sleeve_inference.app import create_app

    app = create_app(load_settings())
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        response = await client.post(
            "/v1/predict",
            params={"top_k": 5},
            files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images],
        )
        assert response.status_code == 200, response.text
        ready = await client.get("/readyz")
        assert ready.json()["checks"]["model"] == "ok (v1)"
        result: dict[str, object] = response.json()
        return result
