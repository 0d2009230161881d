"""The MusicBrainz source against the fakes: the tag search, its User-Agent and pace, the
Cover Art Archive's redirects and answers, labels from the most-voted tags."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sleeve_common.exceptions import ConfigError
from sleeve_common.models import Album, ScrapeRun
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.scrape import run_scrape
from sleeve_scraper.sources import musicbrainz as musicbrainz_module
from sleeve_scraper.sources.coverart import front_cover_url, is_mbid
from sleeve_scraper.sources.musicbrainz import musicbrainz_user_agent

from .conftest import CONTACT, Sleeps, with_settings
from .fakes import RATE_EXCEEDED, FakeMusicBrainz, json_body, status

# The contract suite covers PostgreSQL; these tests of the source's own quirks use SQLite.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

AGENT = f"Sleeve/0.1 ( {CONTACT} )"


def mb_request(*genres: str, per_genre: int, **fields: Any) -> ScrapeRequest:
    return ScrapeRequest(source="musicbrainz", genres=genres, per_genre=per_genre, **fields)


async def albums_of(runtime: Runtime) -> list[Album]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(Album).order_by(Album.id))).scalars())


def searches(musicbrainz: FakeMusicBrainz) -> list[dict[str, str]]:
    return [h.query for h in musicbrainz.hits if h.path == "/ws/2/release-group"]


@pytest.mark.parametrize(
    ("user_agent", "contact", "expected"),
    [
        (
            "Sleeve/0.1 (+https://github.com/sleeve-covers/sleeve)",
            "me@example.org",
            "Sleeve/0.1 ( me@example.org )",
        ),
        ("Covers/2.3", "https://example.org/contact", "Covers/2.3 ( https://example.org/contact )"),
    ],
)
def test_the_user_agent_names_the_contact(user_agent: str, contact: str, expected: str) -> None:
    assert musicbrainz_user_agent(user_agent, contact) == expected


def test_mbids_and_cover_urls() -> None:
    mbid = "0164b5ce-42f8-46bf-b140-61ecd2ed449e"
    assert is_mbid(mbid)
    assert not is_mbid("0164b5ce-42f8-46bf-b140")
    assert not is_mbid(mbid.upper())
    assert front_cover_url("https://coverartarchive.org/", mbid) == (
        f"https://coverartarchive.org/release-group/{mbid}/front-500"
    )


async def test_the_fake_answers_like_musicbrainz(musicbrainz: FakeMusicBrainz) -> None:
    search = f"{musicbrainz.base_url}/ws/2/release-group"
    query = {"query": 'tag:"jazz"', "fmt": "json", "limit": "500"}
    async with httpx.AsyncClient() as client:
        anonymous = await client.get(search, params=query)  # python-httpx/…
        every_type = (await client.get(search, params=query, headers={"User-Agent": AGENT})).json()
        albums = await client.get(
            search,
            params={**query, "query": 'tag:"jazz" AND primarytype:album'},
            headers={"User-Agent": AGENT},
        )
        xml = await client.get(search, params={"query": "tag:jazz"}, headers={"User-Agent": AGENT})

    assert anonymous.status_code == 403
    assert "Single" in {g["primary-type"] for g in every_type["release-groups"]}
    assert {g["primary-type"] for g in albums.json()["release-groups"]} == {"Album"}
    assert (every_type["count"], albums.json()["count"]) == (8, 7)
    assert xml.headers["content-type"].startswith("application/xml")


async def test_the_fake_averages_over_a_window_so_a_burst_passes_and_a_steady_excess_fails(
    musicbrainz: FakeMusicBrainz,
) -> None:
    musicbrainz.limit_rate(5, window_s=2.0)  # 10 requests (+1 of slack) per 2 s
    url = f"{musicbrainz.base_url}/ws/2/release-group"
    params = {"query": "tag:jazz", "fmt": "json"}
    async with httpx.AsyncClient(headers={"User-Agent": AGENT}) as client:
        codes = [(await client.get(url, params=params)).status_code for _ in range(12)]
        refused = await client.get(url, params=params)

    assert codes[:11] == [200] * 11
    assert codes[11] == 503
    assert refused.json() == RATE_EXCEEDED


async def test_the_fake_archive_redirects_twice_and_refuses_what_it_lacks(
    musicbrainz: FakeMusicBrainz,
) -> None:
    group = musicbrainz.groups[0]
    archive = musicbrainz.coverart
    async with httpx.AsyncClient() as client:
        first = await client.get(front_cover_url(archive.base_url, group.mbid))
        second = await client.get(first.headers["location"])
        landed = await client.get(
            front_cover_url(archive.base_url, group.mbid), follow_redirects=True
        )
        missing = await client.get(
            front_cover_url(archive.base_url, "0" * 8 + "-0000-0000-0000-" + "0" * 12)
        )
        malformed = await client.get(front_cover_url(archive.base_url, "not-an-mbid"))

    assert first.status_code == 307 and "/download/mbid-" in first.headers["location"]
    assert second.status_code == 302 and "/items/mbid-" in second.headers["location"]
    assert landed.status_code == 200 and len(landed.history) == 2
    assert landed.content == archive.cdn.files[archive.art[group.mbid]]
    assert (missing.status_code, malformed.status_code) == (404, 400)


@sqlite_only
async def test_album_release_groups_of_a_tag_with_covers_through_both_redirects(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    _, counters = await run_scrape(
        api_runtime, mb_request("jazz", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added) == (3, 3)
    albums = await albums_of(api_runtime)
    expected = [g for g in musicbrainz.groups if g.primary_type == "Album"][:3]
    assert [a.source_id for a in albums] == [g.mbid for g in expected]
    assert [(a.title, a.artist) for a in albums] == [(g.title, g.artist) for g in expected]
    assert [a.cover_url for a in albums] == [
        front_cover_url(musicbrainz.coverart.base_url, g.mbid) for g in expected
    ]
    assert {(lab.genre, lab.raw_genre, lab.provenance) for a in albums for lab in a.labels} == {
        ("jazz", "jazz", "musicbrainz:tag/jazz")
    }
    assert searches(musicbrainz) == [
        {"query": 'tag:"jazz" AND primarytype:album', "fmt": "json", "limit": "3", "offset": "0"}
    ]
    assert {h.user_agent for h in musicbrainz.hits} == {AGENT}
    cdn_paths = musicbrainz.coverart.cdn.paths()
    assert len([p for p in cdn_paths if p.startswith("/download/mbid-")]) == 3  # archive.org
    assert len([p for p in cdn_paths if "/items/mbid-" in p]) == 3  # its data node


@sqlite_only
async def test_searches_page_with_offset_and_never_ask_more_than_100(
    musicbrainz: FakeMusicBrainz,
    api_runtime: Runtime,
    sleeps: Sleeps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, counters = await run_scrape(
        api_runtime, mb_request("jazz", per_genre=150), on_progress=silent_progress, sleep=sleeps
    )
    assert counters.added == 7
    assert [(q["limit"], q["offset"]) for q in searches(musicbrainz)] == [("100", "0")]

    musicbrainz.reset()
    monkeypatch.setattr(musicbrainz_module, "_PAGE_MAX", 3)
    runtime = with_settings(api_runtime, scrape_multi_genre="keep")
    await run_scrape(
        runtime, mb_request("metal", per_genre=20), on_progress=silent_progress, sleep=sleeps
    )
    assert [(q["query"], q["offset"]) for q in searches(musicbrainz)] == [
        ('tag:"heavy metal" AND primarytype:album', "0"),
        ('tag:"heavy metal" AND primarytype:album', "3"),
        ('tag:"heavy metal" AND primarytype:album', "6"),  # 1 of 7: the last page
        ('tag:"metal" AND primarytype:album', "0"),  # the next tag of the genre: same groups
        ('tag:"metal" AND primarytype:album', "3"),
        ('tag:"metal" AND primarytype:album', "6"),
    ]


@sqlite_only
async def test_requests_are_paced_under_the_window_limit_never_burst(
    musicbrainz: FakeMusicBrainz,
    api_runtime: Runtime,
    sleeps: Sleeps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rate = 20.0
    musicbrainz.limit_rate(rate, window_s=0.5)
    monkeypatch.setattr(musicbrainz_module, "_PAGE_MAX", 1)  # one request per album
    runtime = with_settings(api_runtime, musicbrainz_rate=rate)

    _, counters = await run_scrape(
        runtime, mb_request("jazz", "metal", per_genre=5), on_progress=silent_progress, sleep=sleeps
    )

    assert counters.added == 10
    times = sorted(h.at for h in musicbrainz.hits)
    assert len(times) == 10
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.5 / rate, gaps
    assert sleeps.calls == []  # not one 503 to back off from


def test_the_default_rate_is_musicbrainz_limit() -> None:
    assert Settings().musicbrainz_rate <= 1.0


@sqlite_only
async def test_a_503_past_the_rate_is_backed_off_and_retried(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    musicbrainz.fail("/ws/2/", json_body(RATE_EXCEEDED, 503), json_body(RATE_EXCEEDED, 503))

    _, counters = await run_scrape(
        api_runtime, mb_request("jazz", per_genre=2), on_progress=silent_progress, sleep=sleeps
    )

    assert counters.added == 2
    assert len(sleeps.calls) == 2
    assert len(searches(musicbrainz)) == 3


@sqlite_only
async def test_a_403_fails_the_run_naming_the_user_agent(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    musicbrainz.fail("/ws/2/", status(403, body=b"Your requests are being blocked"))

    with pytest.raises(
        SourceError, match=r"musicbrainz refused the search \(HTTP 403, .*User-Agent"
    ):
        await run_scrape(
            api_runtime, mb_request("jazz", per_genre=2), on_progress=silent_progress, sleep=sleeps
        )
    assert sleeps.calls == []  # a 403 is not retried


@sqlite_only
async def test_without_a_contact_the_source_refuses_to_start(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    runtime = with_settings(api_runtime, musicbrainz_contact=None)

    with pytest.raises(ConfigError, match="needs SLEEVE_MUSICBRAINZ_CONTACT"):
        await run_scrape(
            runtime, mb_request("jazz", per_genre=2), on_progress=silent_progress, sleep=sleeps
        )

    assert musicbrainz.hits == []
    async with runtime.db.session() as session:
        assert list((await session.execute(select(ScrapeRun))).scalars()) == []


@sqlite_only
async def test_a_group_without_art_is_rejected_with_the_archives_404(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    bare = musicbrainz.group("No Sleeve", tags=(("jazz", 9),), art=False)
    musicbrainz.groups.insert(0, musicbrainz.groups.pop())

    _, counters = await run_scrape(
        api_runtime, mb_request("jazz", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.added, counters.rejected) == (2, 1)
    [album] = [a for a in await albums_of(api_runtime) if a.status == "rejected"]
    assert (album.source_id, album.reject_reason) == (bare.mbid, "cover download failed: HTTP 404")
    assert sleeps.calls == []  # a 404 is not retried


@sqlite_only
@pytest.mark.parametrize("policy", ["drop", "keep"])
async def test_labels_come_from_the_most_voted_genre_tags(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps, policy: str
) -> None:
    runtime = with_settings(api_runtime, scrape_multi_genre=policy)
    tie = musicbrainz.group("Fusion Tie", tags=(("jazz", 3), ("rock", 3), ("1970s", 8)))
    noise = musicbrainz.group("Jazz With Noise", tags=(("jazz", 5), ("rock", 1)))
    musicbrainz.groups[:0] = [musicbrainz.groups.pop(), musicbrainz.groups.pop()]

    _, counters = await run_scrape(
        runtime, mb_request("jazz", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    albums = {a.source_id: a for a in await albums_of(runtime)}
    assert {(lab.genre, lab.raw_genre) for lab in albums[noise.mbid].labels} == {("jazz", "jazz")}
    tied = albums[tie.mbid]
    if policy == "drop":
        assert (counters.added, counters.rejected) == (2, 1)
        assert (tied.status, tied.reject_reason) == ("rejected", "several genres: jazz, rock")
        assert not [p for p in musicbrainz.coverart.paths() if tie.mbid in p]
    else:
        assert (counters.added, counters.rejected) == (3, 0)
        assert {(lab.genre, lab.raw_genre) for lab in tied.labels} == {
            ("jazz", "jazz"),
            ("rock", "rock"),
        }


@sqlite_only
async def test_a_malformed_search_answer_is_retried(
    musicbrainz: FakeMusicBrainz, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    musicbrainz.fail(
        "/ws/2/",
        status(200, body=b'{"release-groups": [', headers={"content-type": "application/json"}),
    )

    _, counters = await run_scrape(
        api_runtime, mb_request("metal", per_genre=2), on_progress=silent_progress, sleep=sleeps
    )

    assert counters.added == 2
    assert len(sleeps.calls) == 1
