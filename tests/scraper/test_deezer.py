"""The Deezer source against the fake: genre-less charts, paging, errors inside HTTP 200."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sleeve_common.models import Album, ScrapeRun
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.scrape import run_scrape
from sleeve_scraper.sources import deezer as deezer_module

from .conftest import Sleeps, with_settings
from .fakes import QUOTA_EXCEEDED, FakeDeezer, json_body, malformed, status

# The contract suite covers PostgreSQL; these tests of the source's own quirks use SQLite.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def deezer_request(*genres: str, per_genre: int, **fields: Any) -> ScrapeRequest:
    return ScrapeRequest(source="deezer", genres=genres, per_genre=per_genre, **fields)


async def albums_of(runtime: Runtime) -> list[Album]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(Album).order_by(Album.id))).scalars())


async def test_the_fake_chart_answers_like_deezer(deezer: FakeDeezer) -> None:
    async with httpx.AsyncClient(base_url=deezer.base_url) as client:
        default = (await client.get("/chart/129/albums")).json()
        page = (await client.get("/chart/129/albums", params={"limit": 3, "index": 10})).json()
        unknown = (await client.get("/album/1")).json()

    assert (len(default["data"]), default["total"], "next" in default) == (10, 10, False)
    assert [item["position"] for item in page["data"]] == [11, 12]
    assert page["total"] == 2
    assert all("genre_id" not in item and "genres" not in item for item in default["data"])
    assert unknown == {"error": {"type": "DataException", "message": "no data", "code": 800}}


@sqlite_only
async def test_chart_albums_get_their_genre_from_the_chart_and_their_album(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    _, counters = await run_scrape(
        api_runtime, deezer_request("jazz", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added) == (3, 3)
    albums = await albums_of(api_runtime)
    chart = deezer.charts[129][:3]
    assert [a.source_id for a in albums] == [str(c.id) for c in chart]
    assert [(a.title, a.artist) for a in albums] == [(c.title, c.artist) for c in chart]
    assert [a.cover_url for a in albums] == [deezer.cdn.deezer_url(c.token) for c in chart]
    assert {(lab.genre, lab.raw_genre, lab.provenance) for a in albums for lab in a.labels} == {
        ("jazz", "Jazz", "deezer:chart/129")
    }
    paths = deezer.paths()
    assert paths[:2] == ["/genre", "/chart/129/albums"]
    # The albums are described a few at a time (SLEEVE_SCRAPE_API_CONCURRENCY), so their
    # requests may arrive in any order; they are stored in chart order (above).
    assert sorted(paths[2:]) == sorted(f"/album/{c.id}" for c in chart)
    [chart_hit] = [h for h in deezer.hits if h.path.startswith("/chart/")]
    assert chart_hit.query == {"limit": "3", "index": "0"}  # never the default of 10


@sqlite_only
async def test_charts_are_paged_with_limit_and_index_until_a_short_page(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deezer_module, "_PAGE_MAX", 5)

    _, counters = await run_scrape(
        api_runtime,
        deezer_request("jazz", "metal", per_genre=20),
        on_progress=silent_progress,
        sleep=sleeps,
    )

    assert (counters.seen, counters.added) == (12 + 6, 12 + 6)
    pages = [
        (h.path, h.query["limit"], h.query["index"])
        for h in deezer.hits
        if h.path.startswith("/chart/")
    ]
    assert pages == [
        ("/chart/129/albums", "5", "0"),
        ("/chart/129/albums", "5", "5"),
        ("/chart/129/albums", "5", "10"),  # 2 items: the last page
        ("/chart/464/albums", "5", "0"),
        ("/chart/464/albums", "5", "5"),
    ]


@sqlite_only
async def test_quota_exceeded_inside_http_200_is_backed_off_and_retried(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    deezer.fail("/album/", json_body(QUOTA_EXCEEDED), json_body(QUOTA_EXCEEDED))
    deezer.fail("/chart/", json_body(QUOTA_EXCEEDED))

    _, counters = await run_scrape(
        api_runtime, deezer_request("jazz", per_genre=4), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.added, counters.rejected) == (4, 0)
    assert len(sleeps.calls) == 3
    assert all(1 <= wait <= 3 for wait in sleeps.calls)
    assert len(deezer.paths("/album/")) == 4 + 2


@sqlite_only
async def test_an_album_deezer_has_no_data_for_is_rejected_and_the_run_goes_on(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    gone = deezer.charts[129][1]
    del deezer.catalogue[gone.id]

    _, counters = await run_scrape(
        api_runtime, deezer_request("jazz", per_genre=4), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added, counters.rejected) == (4, 3, 1)
    [album] = [a for a in await albums_of(api_runtime) if a.status == "rejected"]
    assert (album.source_id, album.reject_reason) == (
        str(gone.id),
        "no data at deezer (DataException 800)",
    )
    assert [(lab.genre, lab.raw_genre) for lab in album.labels] == [("jazz", "Jazz")]
    assert not [p for p in deezer.cdn.paths() if f"/{gone.token}/" in p]


@sqlite_only
async def test_a_genre_id_deezer_does_not_know_fails_clearly(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path
) -> None:
    taxonomy = tmp_path / "taxonomy.toml"
    taxonomy.write_text('[deezer]\njazz = { ids = ["99999"] }\n')
    runtime = with_settings(api_runtime, scrape_taxonomy=taxonomy)

    with pytest.raises(SourceError) as caught:
        await run_scrape(
            runtime, deezer_request("jazz", per_genre=2), on_progress=silent_progress, sleep=sleeps
        )

    assert str(caught.value) == (
        "deezer has no chart for genre id 99999 (ParameterException 500: Wrong parameter); "
        "fix the [deezer] table of the taxonomy"
    )
    async with runtime.db.session() as session:
        [run] = (await session.execute(select(ScrapeRun))).scalars()
    assert run.status == "failed"
    assert sleeps.calls == []


@sqlite_only
async def test_an_unknown_asked_genre_fails_before_the_run_starts(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    with pytest.raises(SourceError, match="the deezer source has no genre 'punk'"):
        await run_scrape(
            api_runtime,
            deezer_request("punk", per_genre=2),
            on_progress=silent_progress,
            sleep=sleeps,
        )

    assert deezer.hits == []
    async with api_runtime.db.session() as session:
        assert list((await session.execute(select(ScrapeRun))).scalars()) == []


@sqlite_only
@pytest.mark.parametrize("policy", ["drop", "keep"])
async def test_an_album_of_two_genres_follows_the_multi_genre_setting(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps, policy: str
) -> None:
    runtime = with_settings(api_runtime, scrape_multi_genre=policy)
    crossover = deezer.album((129, 132, 173), "Smooth Pop Standards")  # Jazz, Pop, Films/Games
    deezer.charts[129].insert(0, crossover)

    _, counters = await run_scrape(
        runtime, deezer_request("jazz", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    [album] = [a for a in await albums_of(runtime) if a.source_id == str(crossover.id)]
    labels = {(lab.genre, lab.raw_genre) for lab in album.labels}
    if policy == "drop":
        assert (counters.added, counters.rejected) == (2, 1)
        assert (album.status, album.reject_reason) == ("rejected", "several genres: jazz, pop")
        assert labels == {("jazz", "Jazz")}
    else:
        assert (counters.added, counters.rejected) == (3, 0)
        assert labels == {("jazz", "Jazz"), ("pop", "Pop")}  # Films/Games is no Sleeve genre


@sqlite_only
async def test_server_errors_and_malformed_answers_are_retried(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    deezer.fail("/genre", status(502), malformed())
    deezer.fail("/album/", status(429, headers={"Retry-After": "3"}))

    _, counters = await run_scrape(
        api_runtime, deezer_request("metal", per_genre=2), on_progress=silent_progress, sleep=sleeps
    )

    assert counters.added == 2
    assert sleeps.calls[2] == 3.0
    assert len(sleeps.calls) == 3


@sqlite_only
async def test_broken_image_bytes_are_rejected_with_the_decoders_reason(
    deezer: FakeDeezer, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    first = deezer.charts[464][0]
    deezer.cdn.files[first.token] = b"<html>not an image</html>"

    _, counters = await run_scrape(
        api_runtime, deezer_request("metal", per_genre=2), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.added, counters.rejected) == (1, 1)
    [album] = [a for a in await albums_of(api_runtime) if a.status == "rejected"]
    assert album.reject_reason == "not a recognised image format"
