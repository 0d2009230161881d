"""The iTunes source against the fake: feed quirks, Search top-up, artwork size, throttling."""

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
from sleeve_scraper.exceptions import RateLimited
from sleeve_scraper.scrape import run_scrape
from sleeve_scraper.sources.itunes import largest_artwork

from .conftest import Sleeps, with_settings
from .fakes import FakeItunes, empty, malformed, slow, status

# The contract suite covers PostgreSQL; these tests of the source's own quirks use SQLite.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def itunes_request(*genres: str, per_genre: int, **fields: Any) -> ScrapeRequest:
    return ScrapeRequest(source="itunes", genres=genres, per_genre=per_genre, **fields)


async def albums_of(runtime: Runtime) -> list[Album]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(Album).order_by(Album.id))).scalars())


@pytest.mark.parametrize(
    ("url", "largest"),
    [
        (
            "https://is1-ssl.mzstatic.com/image/thumb/Music/v4/ab/cd/x.jpg/100x100bb.jpg",
            "https://is1-ssl.mzstatic.com/image/thumb/Music/v4/ab/cd/x.jpg/600x600bb.jpg",
        ),
        (
            "https://is3.mzstatic.com/image/thumb/a/b/170x170bb.png",
            "https://is3.mzstatic.com/image/thumb/a/b/600x600bb.jpg",
        ),
        ("https://example.org/cover.jpg", "https://example.org/cover.jpg"),
    ],
)
def test_artwork_urls_are_rewritten_to_600px(url: str, largest: str) -> None:
    assert largest_artwork(url) == largest


async def test_the_fake_feed_takes_limit_and_genre_in_either_order(itunes: FakeItunes) -> None:
    async with httpx.AsyncClient(base_url=itunes.base_url) as client:
        one = (await client.get("/us/rss/topalbums/limit=2/genre=11/json")).json()
        other = (await client.get("/us/rss/topalbums/genre=11/limit=2/json")).json()
    assert one == other
    assert len(one["feed"]["entry"]) == 2


@sqlite_only
async def test_feed_albums_carry_artwork_names_and_provenance(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    _, counters = await run_scrape(
        api_runtime, itunes_request("metal", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added) == (3, 3)
    albums = await albums_of(api_runtime)
    expected = itunes.feeds["1153"][:3]
    assert [a.source_id for a in albums] == [str(e.collection_id) for e in expected]
    assert [(a.title, a.artist) for a in albums] == [(e.name, e.artist) for e in expected]
    assert all(
        str(a.cover_url).endswith(f"/{e.token}/600x600bb.jpg")
        for a, e in zip(albums, expected, strict=True)
    )
    assert {(lab.genre, lab.raw_genre, lab.provenance) for a in albums for lab in a.labels} == {
        ("metal", "Metal", "itunes:rss/us/genre=1153")
    }
    [feed] = itunes.hits
    assert feed.path == "/us/rss/topalbums/limit=3/genre=1153/json"  # no search: feed sufficed


@sqlite_only
async def test_a_short_feed_is_topped_up_by_search_results_of_the_same_genre(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    _, counters = await run_scrape(
        api_runtime, itunes_request("jazz", per_genre=7), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added) == (7, 7)
    albums = await albums_of(api_runtime)
    provenance = [a.labels[0].provenance for a in albums]
    assert provenance == ["itunes:rss/us/genre=11"] * 4 + ["itunes:search/jazz"] * 3
    assert "Jazz Odyssey" not in {a.title for a in albums}  # matched the words, not the genre
    [search] = [hit for hit in itunes.hits if hit.path == "/search"]
    assert search.query == {
        "term": "jazz",
        "media": "music",
        "entity": "album",
        "country": "us",
        "limit": "200",
    }


@sqlite_only
async def test_a_feed_of_one_entry_and_a_feed_of_none(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    itunes.feeds["11"] = itunes.feeds["11"][:1]  # ``entry`` becomes one object
    itunes.feeds["1153"] = []  # ``entry`` is absent
    itunes.searchable.clear()

    _, counters = await run_scrape(
        api_runtime,
        itunes_request("jazz", "metal", per_genre=3),
        on_progress=silent_progress,
        sleep=sleeps,
    )

    assert (counters.seen, counters.added) == (1, 1)
    [album] = await albums_of(api_runtime)
    assert album.source_id == str(itunes.feeds["11"][0].collection_id)
    assert itunes.paths("/search") == ["/search", "/search"]  # both genres were short


@sqlite_only
async def test_a_bare_403_from_search_is_throttling_backed_off_not_a_failure(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    itunes.fail("/search", empty(403), empty(403))

    _, counters = await run_scrape(
        api_runtime, itunes_request("jazz", per_genre=6), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added) == (6, 6)
    assert len(sleeps.calls) == 2
    assert 1 <= sleeps.calls[0] <= 2 and 2 <= sleeps.calls[1] <= 3
    assert itunes.paths("/search") == ["/search"] * 3


@sqlite_only
async def test_throttling_that_outlasts_the_retries_fails_the_run_resumably(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path
) -> None:
    runtime = with_settings(api_runtime, scrape_retry_attempts=2)
    itunes.fail("/search", empty(403), empty(403))

    with pytest.raises(RateLimited, match="throttled"):
        await run_scrape(
            runtime, itunes_request("jazz", per_genre=6), on_progress=silent_progress, sleep=sleeps
        )
    async with runtime.db.session() as session:
        [run] = (await session.execute(select(ScrapeRun))).scalars()
    assert (run.status, run.cursor, run.added) == ("failed", {"genre": "jazz", "done": 4}, 4)
    assert run.error is not None and run.error.startswith("RateLimited: throttled (http://")

    _, counters = await run_scrape(
        runtime,
        itunes_request("jazz", per_genre=6, resume=run.id),
        on_progress=silent_progress,
        sleep=sleeps,
    )
    assert (counters.seen, counters.added, counters.duplicates) == (6, 6, 0)


@sqlite_only
async def test_retry_after_on_the_feed_and_malformed_json_are_waited_out(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    itunes.fail("/us/rss/", status(429, headers={"Retry-After": "7"}), malformed())

    _, counters = await run_scrape(
        api_runtime, itunes_request("metal", per_genre=2), on_progress=silent_progress, sleep=sleeps
    )

    assert counters.added == 2
    assert sleeps.calls[0] == 7.0
    assert len(sleeps.calls) == 2
    assert len(itunes.paths("/us/rss/")) == 3


@sqlite_only
async def test_a_slow_image_host_is_retried(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path
) -> None:
    runtime = with_settings(api_runtime, scrape_timeout_s=0.2)
    itunes.cdn.fail("/image/", slow(1.0))

    _, counters = await run_scrape(
        runtime, itunes_request("metal", per_genre=2), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.added, counters.rejected) == (2, 0)
    assert len(sleeps.calls) == 1


@sqlite_only
@pytest.mark.parametrize("policy", ["drop", "keep"])
async def test_an_album_of_two_genres_follows_the_multi_genre_setting(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps, tmp_path: Path, policy: str
) -> None:
    runtime = with_settings(api_runtime, scrape_multi_genre=policy)
    crossover = itunes.album("21", "Riffs Of Rock")  # primary genre Rock, in the metal chart
    itunes.feeds["1153"] = [crossover, *itunes.feeds["1153"][:2]]

    _, counters = await run_scrape(
        runtime, itunes_request("metal", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    [album] = [a for a in await albums_of(runtime) if a.source_id == str(crossover.collection_id)]
    labels = {(lab.genre, lab.raw_genre) for lab in album.labels}
    downloads = [p for p in itunes.cdn.paths() if f"/{crossover.token}/" in p]
    if policy == "drop":
        assert (counters.added, counters.rejected) == (2, 1)
        assert (album.status, album.reject_reason) == ("rejected", "several genres: metal, rock")
        assert labels == {("metal", "Apple genre 1153")}
        assert downloads == []  # a dropped album's cover is never fetched
    else:
        assert (counters.added, counters.rejected) == (3, 0)
        assert album.status == "accepted"
        assert labels == {("metal", "Apple genre 1153"), ("rock", "Rock")}
        assert len(downloads) == 1


@sqlite_only
async def test_an_album_listed_under_two_asked_genres_gets_both_labels_once(
    itunes: FakeItunes, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    shared = itunes.feeds["1153"][0]
    itunes.feeds["21"] = [shared]
    itunes.searchable.clear()

    _, counters = await run_scrape(
        api_runtime,
        itunes_request("metal", "rock", per_genre=2),
        on_progress=silent_progress,
        sleep=sleeps,
    )

    assert (counters.seen, counters.added, counters.duplicates) == (3, 2, 1)
    [album] = [a for a in await albums_of(api_runtime) if a.source_id == str(shared.collection_id)]
    assert {(lab.genre, lab.provenance) for lab in album.labels} == {
        ("metal", "itunes:rss/us/genre=1153"),
        ("rock", "itunes:rss/us/genre=21"),
    }
    assert len([p for p in itunes.cdn.paths() if f"/{shared.token}/" in p]) == 1
