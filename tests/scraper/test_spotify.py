"""The Spotify source against the fake: the client-credentials token and its expiry, albums
from genre searches labelled by their artists' genres, and endpoints Spotify withdrew."""

from __future__ import annotations

import base64
import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from sleeve_common.exceptions import ConfigError
from sleeve_common.models import Album, ScrapeRun
from sleeve_common.payloads import ScrapeRequest
from sleeve_common.progress import silent_progress
from sleeve_common.runtime import Runtime
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.scrape import run_scrape
from sleeve_scraper.sources import spotify as spotify_module

from .conftest import Sleeps, with_settings
from .fakes import CLIENT_ID, CLIENT_SECRET, FakeServer, FakeSpotify, status

# The contract suite covers PostgreSQL; these tests of the source's own quirks use SQLite.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def spotify_request(*genres: str, per_genre: int, **fields: Any) -> ScrapeRequest:
    return ScrapeRequest(source="spotify", genres=genres, per_genre=per_genre, **fields)


async def albums_of(runtime: Runtime) -> list[Album]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(Album).order_by(Album.id))).scalars())


def token_grants(spotify: FakeSpotify) -> int:
    return len(spotify.paths("/api/token"))


async def expire_then_answer(server: FakeServer, request: Request) -> Response:
    """A fault: every token expires just before this request reaches the API."""
    assert isinstance(server, FakeSpotify)
    server.expire_tokens()
    return await server.answer(request)


async def test_the_fake_grants_tokens_and_guards_the_api(spotify: FakeSpotify) -> None:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    async with httpx.AsyncClient(base_url=spotify.base_url) as client:
        wrong = await client.post(
            "/api/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": "Basic eDp5"},
        )
        granted = await client.post(
            "/api/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
        )
        token = granted.json()["access_token"]
        anonymous = await client.get("/v1/search", params={"q": 'genre:"jazz"', "type": "album"})
        found = await client.get(
            "/v1/search",
            params={"q": 'genre:"jazz"', "type": "album", "limit": 2},
            headers={"Authorization": f"Bearer {token}"},
        )
        spotify.expire_tokens()
        expired = await client.get("/v1/artists/x", headers={"Authorization": f"Bearer {token}"})

    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_client")
    assert granted.json()["token_type"] == "Bearer"
    assert granted.json()["expires_in"] == 3600
    assert anonymous.status_code == 401
    albums = found.json()["albums"]
    assert (len(albums["items"]), albums["total"], albums["next"] is not None) == (2, 8, True)
    assert all("genres" not in item for item in albums["items"])
    assert expired.json() == {"error": {"status": 401, "message": "The access token expired"}}


@sqlite_only
async def test_albums_are_labelled_by_their_artists_genres(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    _, counters = await run_scrape(
        api_runtime, spotify_request("jazz", per_genre=5), on_progress=silent_progress, sleep=sleeps
    )

    assert (counters.seen, counters.added) == (5, 5)
    albums = await albums_of(api_runtime)
    expected = [a for a in spotify.searches["jazz"] if a.album_type == "album"][:5]
    assert [a.source_id for a in albums] == [e.id for e in expected]  # the single is skipped
    assert [a.cover_url for a in albums] == [spotify.cdn.spotify_url(e.token) for e in expected]
    raw = {a.title: {(lab.genre, lab.raw_genre) for lab in a.labels} for a in albums}
    assert raw == {
        "Blue Hours 1": {("jazz", "vocal jazz")},  # June Vale: ["vocal jazz"]
        "Blue Hours 2": {("jazz", "jazz")},  # New Trio has no genres: the searched one
        "Blue Hours 3": {("jazz", "jazz")},  # Quartet Nine: ["jazz", "hard bop"]
        "Blue Hours 4": {("jazz", "vocal jazz")},
        "Blue Hours 5": {("jazz", "jazz")},
    }
    assert {lab.provenance for a in albums for lab in a.labels} == {"spotify:search/genre:jazz"}
    first, second = [h.query for h in spotify.hits if h.path == "/v1/search"]
    assert first == {"q": 'genre:"jazz"', "type": "album", "limit": "5", "offset": "0"}
    assert second["offset"] == "5"  # the single took a place on the first page
    [artists] = [h for h in spotify.hits if h.path == "/v1/artists"]  # new artists only
    assert len(artists.query["ids"].split(",")) == 3
    assert token_grants(spotify) == 1
    [grant] = [h for h in spotify.hits if h.path == "/api/token"]
    assert grant.method == "POST"
    api_hits = [h for h in spotify.hits if h.path.startswith("/v1/")]
    assert all(h.authorization and h.authorization.startswith("Bearer BQ") for h in api_hits)


@sqlite_only
async def test_search_pages_until_the_genre_is_full(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spotify_module, "_PAGE_MAX", 3)

    _, counters = await run_scrape(
        api_runtime,
        spotify_request("metal", per_genre=20),
        on_progress=silent_progress,
        sleep=sleeps,
    )

    assert counters.added == 7
    pages = [(h.query["limit"], h.query["offset"]) for h in spotify.hits if h.path == "/v1/search"]
    assert pages == [("3", "0"), ("3", "3"), ("3", "6")]  # the third is short: the last
    assert len(spotify.paths("/v1/artists")) == 1  # the artist is asked for once


@sqlite_only
async def test_an_album_whose_artists_play_another_genre_is_not_listed(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    metal = next(a for a in spotify.artists.values() if a.name == "Iron Veil")
    loose = spotify.album("Jazz Riffs", metal)  # the search matched the title, not the genre
    spotify.searches["jazz"].insert(0, loose)

    _, counters = await run_scrape(
        api_runtime, spotify_request("jazz", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    assert counters.added == 3
    assert loose.id not in {a.source_id for a in await albums_of(api_runtime)}


@sqlite_only
@pytest.mark.parametrize("policy", ["drop", "keep"])
async def test_an_album_of_two_genres_follows_the_multi_genre_setting(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps, policy: str
) -> None:
    runtime = with_settings(api_runtime, scrape_multi_genre=policy)
    crossover = spotify.album("Smooth Standards", spotify.artist("Velvet", ("jazz", "dance pop")))
    spotify.searches["jazz"].insert(0, crossover)

    _, counters = await run_scrape(
        runtime, spotify_request("jazz", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    [album] = [a for a in await albums_of(runtime) if a.source_id == crossover.id]
    labels = {(lab.genre, lab.raw_genre) for lab in album.labels}
    if policy == "drop":
        assert (counters.added, counters.rejected) == (2, 1)
        assert (album.status, album.reject_reason) == ("rejected", "several genres: jazz, pop")
        assert labels == {("jazz", "jazz")}
    else:
        assert (counters.added, counters.rejected) == (3, 0)
        assert labels == {("jazz", "jazz"), ("pop", "dance pop")}


@sqlite_only
async def test_a_token_expired_mid_run_is_renewed_once_and_the_request_asked_again(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spotify_module, "_PAGE_MAX", 3)
    spotify.fail("/v1/search", expire_then_answer)

    _, counters = await run_scrape(
        api_runtime, spotify_request("jazz", per_genre=5), on_progress=silent_progress, sleep=sleeps
    )

    assert counters.added == 5
    assert token_grants(spotify) == 2
    searched = [h.authorization for h in spotify.hits if h.path == "/v1/search"]
    assert len(searched) == 3 and searched[0] != searched[1] == searched[2]  # 401, then renewed
    assert sleeps.calls == []  # a renewal, not a backoff


@sqlite_only
async def test_a_token_is_renewed_before_expires_in_runs_out(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(spotify_module, "_now", lambda: now[0])
    spotify.expires_in = 600

    async def an_hour_later(server: FakeServer, request: Request) -> Response:
        now[0] += 3600
        return await server.answer(request)

    spotify.fail("/v1/artists", an_hour_later)

    _, counters = await run_scrape(
        api_runtime,
        spotify_request("jazz", "metal", per_genre=2),
        on_progress=silent_progress,
        sleep=sleeps,
    )

    assert counters.added == 4
    # Renewed on our clock before the next request, not after a 401 from Spotify.
    assert [h.path for h in spotify.hits] == [
        "/api/token",
        "/v1/search",
        "/v1/artists",
        "/api/token",
        "/v1/search",
        "/v1/artists",
    ]


@sqlite_only
async def test_a_second_401_after_renewal_fails_the_run_clearly(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    refused = status(401, body=b'{"error": {"status": 401, "message": "Invalid access token"}}')
    spotify.fail("/v1/search", refused, refused)

    with pytest.raises(SourceError) as caught:
        await run_scrape(
            api_runtime,
            spotify_request("jazz", per_genre=2),
            on_progress=silent_progress,
            sleep=sleeps,
        )

    assert str(caught.value) == (
        "spotify refused a fresh access token for /search (HTTP 401: Invalid access token)"
    )
    assert token_grants(spotify) == 2


@sqlite_only
async def test_wrong_credentials_fail_clearly_and_the_secret_is_never_shown(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "0123456789abcdef0123456789abcdef"
    runtime = with_settings(api_runtime, spotify_client_secret=secret)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(SourceError) as caught:
        await run_scrape(
            runtime, spotify_request("jazz", per_genre=2), on_progress=silent_progress, sleep=sleeps
        )

    assert str(caught.value) == (
        "spotify refused the client credentials (HTTP 400: invalid_client: Invalid client); "
        "check SLEEVE_SPOTIFY_CLIENT_ID and SLEEVE_SPOTIFY_CLIENT_SECRET"
    )
    async with runtime.db.session() as session:
        [run] = (await session.execute(select(ScrapeRun))).scalars()
    encoded = base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    for text in (caplog.text, str(run.error), repr(runtime.settings)):
        assert secret not in text and encoded not in text
    assert sleeps.calls == []


@sqlite_only
async def test_missing_credentials_refuse_to_start(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    runtime = with_settings(api_runtime, spotify_client_secret=None)

    with pytest.raises(ConfigError, match="needs SLEEVE_SPOTIFY_CLIENT_SECRET"):
        await run_scrape(
            runtime, spotify_request("jazz", per_genre=2), on_progress=silent_progress, sleep=sleeps
        )

    assert spotify.hits == []


@sqlite_only
async def test_withdrawn_artist_endpoints_degrade_to_the_searched_genre(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    spotify.withdrawn.add("/v1/artists")  # both /artists?ids= and /artists/{id}: 403

    _, counters = await run_scrape(
        api_runtime,
        spotify_request("jazz", "metal", per_genre=3),
        on_progress=silent_progress,
        sleep=sleeps,
    )

    assert (counters.added, counters.rejected) == (6, 0)
    labels = {(lab.genre, lab.raw_genre) for a in await albums_of(api_runtime) for lab in a.labels}
    assert labels == {("jazz", "jazz"), ("metal", "metal")}
    assert spotify.paths("/v1/artists") == ["/v1/artists", spotify.paths("/v1/artists/")[0]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "spotify answered /artists?ids= with HTTP 403: Forbidden (withdrawn for this app?); "
        "asking for artists one by one",
        "spotify answered /artists/{id} with HTTP 403: Forbidden (withdrawn for this app?); "
        "labelling albums by the searched genre alone",
    ]


@sqlite_only
async def test_a_withdrawn_batch_endpoint_falls_back_to_one_artist_at_a_time(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    spotify.fail("/v1/artists", status(404, body=b'{"error": {"status": 404, "message": "x"}}'))

    _, counters = await run_scrape(
        api_runtime, spotify_request("jazz", per_genre=3), on_progress=silent_progress, sleep=sleeps
    )

    assert counters.added == 3
    labels = {a.title: [lab.raw_genre for lab in a.labels] for a in await albums_of(api_runtime)}
    assert labels["Blue Hours 1"] == ["vocal jazz"]  # the artist's genre, asked one by one
    assert len(spotify.paths("/v1/artists/")) == 3


@sqlite_only
async def test_a_withdrawn_search_fails_the_run_with_an_explanation(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    spotify.withdrawn.add("/v1/search")

    with pytest.raises(SourceError) as caught:
        await run_scrape(
            api_runtime,
            spotify_request("jazz", per_genre=2),
            on_progress=silent_progress,
            sleep=sleeps,
        )

    assert str(caught.value) == (
        "spotify answered its search with HTTP 403: Forbidden: the search is not available "
        "to this app, so the spotify source has nothing to list"
    )


@sqlite_only
async def test_429_with_retry_after_is_waited_out(
    spotify: FakeSpotify, api_runtime: Runtime, sleeps: Sleeps
) -> None:
    spotify.fail("/v1/search", status(429, headers={"Retry-After": "4"}))
    spotify.fail("/api/token", status(503))

    _, counters = await run_scrape(
        api_runtime,
        spotify_request("metal", per_genre=2),
        on_progress=silent_progress,
        sleep=sleeps,
    )

    assert counters.added == 2
    assert len(sleeps.calls) == 2 and sleeps.calls[1] == 4.0
