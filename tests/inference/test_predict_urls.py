"""``POST /v1/predict/urls``: image URLs fetched behind the SSRF guard from a real local server.

The covers are served by an HTTP server on 127.0.0.1; the app reaches it only because the test
allows 127.0.0.1/32 (``SLEEVE_URL_FETCH_ALLOWED_NETWORKS``). Every refused address is refused
before any connection, so nothing here leaves the machine.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from support import DISCOGS5, make_settings, serve_folder

from sleeve_inference.app import create_app

from .harness import API_KEY, LIMITS, Registered, image_bytes, serve

RED = (255, 0, 0)


@pytest.fixture(scope="module")
def cover_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 with a cover, a red PNG and a text file; its base URL."""
    folder = tmp_path_factory.mktemp("www")
    shutil.copyfile(sorted((DISCOGS5 / "Rock").glob("*.jpg"))[0], folder / "cover.jpg")
    (folder / "red.png").write_bytes(image_bytes(RED))
    (folder / "notes.txt").write_text("not a cover")
    with serve_folder(folder) as url:
        yield url


@pytest.fixture
async def url_api(
    tmp_path: Path, database_url: str, registered: Registered
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        tmp_path,
        database_url,
        api_key=API_KEY,
        url_fetch_allowed_networks="127.0.0.1/32",
        url_fetch_timeout_s=5,
        **LIMITS,
    )
    async with serve(create_app(settings)) as client:
        yield client


async def test_urls_are_fetched_and_predicted(
    url_api: httpx.AsyncClient, cover_server: str
) -> None:
    urls = [f"{cover_server}/red.png", f"{cover_server}/cover.jpg"]
    response = await url_api.post("/v1/predict/urls", json={"urls": urls, "top_k": 2})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v1"
    red, cover = body["predictions"]
    assert red["url"] == urls[0]
    assert red["top_genre"] == "country"
    assert red["error"] is None
    data = sorted((DISCOGS5 / "Rock").glob("*.jpg"))[0].read_bytes()
    upload = await url_api.post(
        "/v1/predict", files=[("files", ("c.jpg", data))], params={"top_k": 2}
    )
    assert cover["genres"] == upload.json()["predictions"][0]["genres"]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/notes.txt", "invalid_image"),
        ("/missing.jpg", "http_error"),
        ("http://169.254.169.254/latest/meta-data/", "forbidden_address"),
        ("http://10.0.0.7/cover.jpg", "forbidden_address"),
        ("http://2130706434/cover.jpg", "forbidden_address"),  # 127.0.0.2 in decimal
        ("http://[::ffff:127.0.0.2]/cover.jpg", "forbidden_address"),
        ("http://0x7f000002/cover.jpg", "forbidden_address"),  # and in hex
        ("ftp://example.org/cover.jpg", "invalid_url"),
        ("file:///etc/passwd", "invalid_url"),
        ("not a url", "invalid_url"),
    ],
)
async def test_a_bad_url_is_reported_in_its_item(
    url_api: httpx.AsyncClient, cover_server: str, url: str, code: str
) -> None:
    target = f"{cover_server}{url}" if url.startswith("/") else url
    good = f"{cover_server}/red.png"

    response = await url_api.post("/v1/predict/urls", json={"urls": [good, target]})

    assert response.status_code == 200, response.text
    ok, bad = response.json()["predictions"]
    assert ok["top_genre"] == "country"
    assert bad["top_genre"] is None
    assert bad["genres"] == []
    assert bad["error"]["code"] == code, bad["error"]


async def test_all_urls_bad_still_answers(url_api: httpx.AsyncClient) -> None:
    response = await url_api.post("/v1/predict/urls", json={"urls": ["http://10.1.2.3/a.jpg"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v1"
    assert body["predictions"][0]["error"]["code"] == "forbidden_address"
    assert body["timing"]["batch_size"] == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "urls"),
        ({"urls": []}, "urls"),
        ({"urls": "http://example.org/a.jpg"}, "urls"),
        ({"urls": [42]}, "urls"),
        ({"urls": ["x" * 3000]}, "urls"),
        ({"urls": ["http://a/b.jpg"], "top_k": "3"}, "top_k"),
        ({"urls": ["http://a/b.jpg"], "extra": True}, "extra"),
    ],
)
async def test_malformed_bodies_are_refused(
    url_api: httpx.AsyncClient, body: object, fragment: str
) -> None:
    response = await url_api.post("/v1/predict/urls", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert fragment in response.json()["error"]["message"]


async def test_not_json_and_too_many_urls(url_api: httpx.AsyncClient) -> None:
    broken = await url_api.post(
        "/v1/predict/urls", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    assert broken.json()["error"]["code"] == "invalid_request"
    many = await url_api.post(
        "/v1/predict/urls",
        json={"urls": ["http://10.0.0.1/a.jpg"] * (LIMITS["max_images_per_request"] + 1)},
    )
    assert many.status_code == 413
    assert many.json()["error"]["code"] == "too_many_images"
    assert (await url_api.get("/healthz")).status_code == 200
