"""``GET /``, the upload page, in a real headless Chromium: pick a cover, see the genre bars.

uvicorn serves the app on a loopback port (a real socket the browser can reach) from a thread
with its own event loop; playwright drives Debian's ``chromium`` through ``executable_path``
and never downloads a browser. ``make test`` installs chromium where it is missing (its
``test-deps`` step); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, FilePayload, Page, async_playwright, expect
from support import DISCOGS5

from sleeve_common.bootstrap import KIND as BOOTSTRAP
from sleeve_common.bootstrap import plan_from_settings
from sleeve_common.db import Database
from sleeve_common.jobs import JobQueue
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore
from sleeve_inference.app import create_app

from .harness import LABELS, register_model, serve_on_socket

# The page needs one database; the API tests cover PostgreSQL.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# Generous for a busy two-core CI machine; expect() returns as soon as the page matches.
_WAIT_MS = 20_000
_NOT_AN_IMAGE = FilePayload(
    name="liner-notes.txt", mimeType="text/plain", buffer=b"Side A: not a cover, just words\n"
)


@pytest.fixture
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    """The app served by uvicorn on a free loopback port, for the browser to reach."""
    async with serve_on_socket(app) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless chromium, one for the module."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed: run `make test`, which installs it "
            "(`make test-deps`: apt-get install chromium)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium refuses its sandbox.
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Visit:
    """A fresh browser page on the served app, with what it requested and what it threw."""

    page: Page
    base_url: str
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture
async def visit(browser: Browser, base_url: str) -> AsyncIterator[Visit]:
    context = await browser.new_context(base_url=base_url)
    context.set_default_timeout(_WAIT_MS)
    page = await context.new_page()
    seen = Visit(page=page, base_url=base_url)
    context.on("request", lambda request: seen.requests.append(request.url))
    page.on("pageerror", lambda error: seen.page_errors.append(str(error)))
    try:
        yield seen
    finally:
        await context.close()


def _cover() -> Path:
    """A real Discogs cover from the shared kit."""
    return sorted((DISCOGS5 / "Rock").glob("*.jpg"))[0]


async def _pick_and_submit(page: Page, file: Path | FilePayload) -> None:
    """What a user does: open the page, choose a file, press Predict."""
    await page.goto("/")
    await page.get_by_label("Album cover").set_input_files(file)
    await page.get_by_role("button", name="Predict").click()


async def _api_predict(base_url: str, name: str, data: bytes, mime: str) -> httpx.Response:
    """What ``POST /v1/predict`` answers for the same file, as the page asks for it."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return await client.post(
            "/v1/predict", params={"top_k": 5}, files={"files": (name, data, mime)}
        )


async def _expect_bars(page: Page, answer: dict[str, Any]) -> None:
    """The page shows one bar per genre of ``answer``, best first, named, sized, in percent."""
    prediction = answer["predictions"][0]
    bars = page.get_by_role("meter")
    await expect(bars).to_have_count(len(prediction["genres"]), timeout=_WAIT_MS)
    await expect(
        page.get_by_role("heading", name=f"Top genre: {prediction['top_genre']}")
    ).to_be_visible()
    rows = page.get_by_role("list", name="Genre probabilities").get_by_role("listitem")
    for index, expected in enumerate(prediction["genres"]):
        percent = expected["probability"] * 100
        text = " ".join((await rows.nth(index).inner_text()).split())
        shown = re.fullmatch(rf"{re.escape(expected['genre'])} (\d{{1,3}}\.\d)%", text)
        assert shown, f"row {index} reads {text!r}"
        assert abs(float(shown[1]) - percent) <= 0.05 + 1e-9, text
        bar = bars.nth(index)
        await expect(bar).to_have_accessible_name(expected["genre"])
        bar_box = await bar.bounding_box()
        track_box = await bar.locator("..").bounding_box()
        assert bar_box is not None and track_box is not None, "the bar is not rendered"
        assert bar_box["width"] / track_box["width"] == pytest.approx(percent / 100, abs=0.02)
    await expect(page.get_by_text(f"Model {answer['model_version']}")).to_be_visible()


async def test_picking_a_cover_shows_a_bar_per_genre_as_the_api_predicts(visit: Visit) -> None:
    cover = _cover()
    await _pick_and_submit(visit.page, cover)

    answer = await _api_predict(visit.base_url, cover.name, cover.read_bytes(), "image/jpeg")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert sorted(g["genre"] for g in body["predictions"][0]["genres"]) == sorted(LABELS)
    await _expect_bars(visit.page, body)
    await expect(visit.page.get_by_role("img", name="The cover you picked")).to_be_visible()
    await expect(visit.page.get_by_role("alert")).to_be_hidden()
    assert visit.page_errors == []


async def test_a_file_that_is_not_an_image_shows_a_readable_error(visit: Visit) -> None:
    page = visit.page
    await _pick_and_submit(page, _NOT_AN_IMAGE)

    answer = await _api_predict(
        visit.base_url, _NOT_AN_IMAGE["name"], _NOT_AN_IMAGE["buffer"], _NOT_AN_IMAGE["mimeType"]
    )
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]["message"]
    assert _NOT_AN_IMAGE["name"] in message
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text(f"Could not predict: {message}", timeout=_WAIT_MS)
    await expect(alert).to_be_visible()
    # The rest of the page is still there and usable: no blank page, no trace, no stale bars.
    await expect(page.get_by_role("heading", name="Sleeve")).to_be_visible()
    await expect(page.get_by_role("meter")).to_have_count(0)
    await expect(page.get_by_role("button", name="Predict")).to_be_enabled()
    assert "Traceback" not in await page.content()
    assert visit.page_errors == []

    # Trying again with a real cover replaces the error with the bars.
    cover = _cover()
    await page.get_by_label("Album cover").set_input_files(cover)
    await page.get_by_role("button", name="Predict").click()
    await expect(page.get_by_role("meter")).to_have_count(len(LABELS), timeout=_WAIT_MS)
    await expect(alert).to_be_hidden()


async def test_the_page_loads_nothing_from_another_origin(visit: Visit) -> None:
    await _pick_and_submit(visit.page, _cover())
    await expect(visit.page.get_by_role("meter")).to_have_count(len(LABELS), timeout=_WAIT_MS)

    def origin(url: str) -> str:
        # A blob: URL (the cover's preview) belongs to the origin that made it.
        parts = urlsplit(url.removeprefix("blob:"))
        return f"{parts.scheme}://{parts.netloc}"

    assert {urlsplit(url).path for url in visit.requests} >= {"/", "/v1/predict"}
    assert [url for url in visit.requests if origin(url) != visit.base_url] == []


async def test_before_the_first_model_the_page_shows_its_training_then_the_form(
    browser: Browser, settings: Settings, registry: tuple[Database, ObjectStore]
) -> None:
    db, store = registry
    queue = JobQueue(db, lease_seconds=60)
    plan = plan_from_settings(settings).model_dump(mode="json")
    await queue.enqueue(kind=BOOTSTRAP, payload=plan, unique_key=BOOTSTRAP)
    job = await queue.claim(kinds=[BOOTSTRAP], owner="sleeve run")
    assert job is not None
    await queue.report_progress(
        job, fraction=0.62, message="training run 1: head epoch 4/10", stage="train"
    )
    async with serve_on_socket(create_app(settings)) as address:
        context = await browser.new_context(base_url=f"http://{address}")
        context.set_default_timeout(_WAIT_MS)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            await page.goto("/")
            await expect(
                page.get_by_role("heading", name="Training the first model")
            ).to_be_visible()
            await expect(page.get_by_role("progressbar")).to_have_attribute("value", "62")
            await expect(
                page.get_by_text("Step 3 of 4: training the model. 62% done")
            ).to_be_visible()
            await expect(page.get_by_text("training run 1: head epoch 4/10")).to_be_visible()
            await expect(page.get_by_role("button", name="Predict")).to_be_hidden()

            await register_model(db, store)
            await queue.succeed(job, {"model_version": "v1"})
            # The page notices by itself (the server looks every 2 s, the page too).
            await expect(page.get_by_role("button", name="Predict")).to_be_visible()
            await expect(
                page.get_by_role("heading", name="Training the first model")
            ).to_be_hidden()
            await page.get_by_label("Album cover").set_input_files(_cover())
            await page.get_by_role("button", name="Predict").click()
            await expect(page.get_by_role("meter")).to_have_count(len(LABELS), timeout=_WAIT_MS)
            assert errors == []
        finally:
            await context.close()


async def test_a_failed_first_model_shows_why_and_how_to_fix_it(
    browser: Browser, settings: Settings, registry: tuple[Database, ObjectStore]
) -> None:
    db, _store = registry
    queue = JobQueue(db, lease_seconds=60)
    plan = plan_from_settings(settings).model_dump(mode="json")
    await queue.enqueue(kind=BOOTSTRAP, payload=plan, unique_key=BOOTSTRAP)
    job = await queue.claim(kinds=[BOOTSTRAP], owner="sleeve run")
    assert job is not None
    await queue.report_progress(job, fraction=0.01, message="run 1: itunes", stage="scrape")
    error = "collecting covers failed: Unreachable: connection failed (ConnectError)"
    await queue.fail(job, f"BootstrapFailed: {error}")
    async with serve_on_socket(create_app(settings)) as address:
        context = await browser.new_context(base_url=f"http://{address}")
        context.set_default_timeout(_WAIT_MS)
        page = await context.new_page()
        try:
            await page.goto("/")
            await expect(
                page.get_by_role("heading", name="The first model could not be trained")
            ).to_be_visible()
            await expect(page.get_by_role("alert").filter(has_text=error)).to_be_visible()
            await expect(
                page.get_by_text("To fix it: check that this machine reaches")
            ).to_be_visible()
            await expect(page.get_by_role("progressbar")).to_be_hidden()
            await expect(page.get_by_role("button", name="Predict")).to_be_hidden()
        finally:
            await context.close()
