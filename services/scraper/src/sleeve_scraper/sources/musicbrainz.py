"""MusicBrainz: album release groups by tag, front covers from the Cover Art Archive.

For each asked genre the source searches
``/release-group?query=tag:"T" AND primarytype:album&fmt=json&limit=N&offset=O`` for each of
its MusicBrainz tags (the taxonomy's ``ids``), paging with ``offset`` until a page comes back
short or the search's ``count`` is reached. A release group's own genres are the Sleeve genres
of its most-voted genre tags (a single vote for "rock" on a jazz record is noise, not a second
genre). Its cover is ``/release-group/{mbid}/front-500`` on the Cover Art Archive
(``sleeve_scraper.sources.coverart``), fetched by the shared download step: listing an album
costs no request of its own.

Quirks handled: MusicBrainz allows an average of 1 request/s and answers 503 with a JSON error
past it; its limiter averages over a window, so a burst passes and a steady excess fails a
minute later. The HTTP edge paces every request evenly at ``SLEEVE_MUSICBRAINZ_RATE`` (1/s),
never in bursts, and backs off and retries a 503. A request without a User-Agent, or with a
generic library one, gets 403: every request here says ``Sleeve/x ( contact )`` with
``SLEEVE_MUSICBRAINZ_CONTACT``, and the source refuses to start without one. Search results
hold release groups of every primary type unless the query says ``primarytype:album`` (it
does; any other type that slips through is skipped); ``limit`` is at most 100.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from sleeve_common.exceptions import ConfigError
from sleeve_scraper.exceptions import Refused, SourceError
from sleeve_scraper.sources.base import (
    Candidate,
    GenreApiSource,
    Label,
    SourceContext,
    choose_labels,
    text_or_none,
)
from sleeve_scraper.sources.coverart import front_cover_url, is_mbid

__all__ = ["MusicBrainzSource", "musicbrainz_source", "musicbrainz_user_agent"]

logger = logging.getLogger(__name__)

_PAGE_MAX = 100  # the search's largest ``limit``


def musicbrainz_user_agent(user_agent: str, contact: str) -> str:
    """``Sleeve/0.1 (+https://…)`` and ``me@example.org`` → ``Sleeve/0.1 ( me@example.org )``:
    the ``Application/version ( contact )`` shape MusicBrainz asks for."""
    product = user_agent.split()[0] if user_agent.split() else "Sleeve"
    return f"{product} ( {contact} )"


def musicbrainz_source(context: SourceContext) -> MusicBrainzSource:
    """The MusicBrainz source for the asked genres; refuses to start without a contact."""
    settings = context.settings
    if settings.musicbrainz_contact is None:  # ``check_scrape_request`` says so first, at length
        raise ConfigError("the musicbrainz source needs SLEEVE_MUSICBRAINZ_CONTACT")
    return MusicBrainzSource(
        context,
        base_url=settings.musicbrainz_base_url,
        user_agent=musicbrainz_user_agent(settings.user_agent, settings.musicbrainz_contact),
    )


@dataclass(frozen=True)
class _ReleaseGroup:
    source_id: str
    title: str | None
    artist: str | None
    tag: str  # the tag it was found by
    tags: tuple[tuple[str, int], ...]  # its own tags and their votes


class MusicBrainzSource(GenreApiSource):
    """Album release groups of the asked genres' tags, covers from the Cover Art Archive."""

    name = "musicbrainz"

    def __init__(self, context: SourceContext, *, base_url: str, user_agent: str) -> None:
        super().__init__(context, base_url=base_url)
        self._headers = {"User-Agent": user_agent}
        self._covers = context.settings.coverartarchive_base_url

    async def _albums(self, genre: str) -> AsyncGenerator[_ReleaseGroup, None]:
        page = min(self._per_genre, _PAGE_MAX)
        for tag in self._taxonomy.ids(genre):
            offset = 0
            while True:
                count, listed, groups = await self._search(tag, limit=page, offset=offset)
                for group in groups:
                    yield group
                offset += listed
                if listed < page or offset >= count:
                    break

    async def _search(
        self, tag: str, *, limit: int, offset: int
    ) -> tuple[int, int, list[_ReleaseGroup]]:
        """One page of the search for ``tag``: its total count, the page's length, and the
        album release groups on it."""
        query = f'tag:"{_escape(tag)}" AND primarytype:album'
        url = f"{self._base}/release-group"
        try:
            doc = await self._http.get_json(
                url,
                params={"query": query, "fmt": "json", "limit": limit, "offset": offset},
                headers=self._headers,
            )
        except Refused as exc:
            if exc.status == 403:
                raise SourceError(
                    f"musicbrainz refused the search (HTTP 403, {exc.url}): it blocks clients "
                    "whose User-Agent does not say who they are; check "
                    "SLEEVE_MUSICBRAINZ_CONTACT and SLEEVE_USER_AGENT"
                ) from None
            raise
        groups = doc.get("release-groups") if isinstance(doc, dict) else None
        if not isinstance(groups, list):
            raise SourceError(
                f"musicbrainz answered the search for tag {tag!r} without 'release-groups'"
            )
        count = doc.get("count")
        found = (_from_search(g, tag) for g in groups if isinstance(g, dict))
        return (
            count if isinstance(count, int) else offset + len(groups),
            len(groups),
            [g for g in found if g is not None],
        )

    async def _describe(self, group: _ReleaseGroup, genre: str) -> tuple[Candidate, str | None]:
        labels, dropped = choose_labels(
            Label(genre, group.tag), self._own_labels(group), keep_multi=self._keep_multi
        )
        candidate = Candidate(
            source=self.name,
            source_id=group.source_id,
            labels=labels,
            provenance=f"musicbrainz:tag/{group.tag}",
            artist=group.artist,
            title=group.title,
            cover_url=front_cover_url(self._covers, group.source_id),
        )
        return candidate, dropped

    def _own_labels(self, group: _ReleaseGroup) -> list[Label]:
        """The Sleeve genres of the group's most-voted tags that name one."""
        genres = [
            (label, votes)
            for name, votes in group.tags
            if (label := self._genre_of_tag(name)) is not None
        ]
        top = max((votes for _, votes in genres), default=0)
        return [label for label, votes in genres if votes == top]

    def _genre_of_tag(self, tag: str) -> Label | None:
        genre = self._taxonomy.genre_of_id(tag) or self._taxonomy.genre_of_name(tag)
        return Label(genre, tag) if genre else None


def _escape(tag: str) -> str:
    """A tag inside a quoted Lucene phrase."""
    return tag.replace("\\", "\\\\").replace('"', '\\"')


def _from_search(group: dict[str, Any], tag: str) -> _ReleaseGroup | None:
    mbid = group.get("id")
    if not isinstance(mbid, str) or not is_mbid(mbid):
        return None
    if group.get("primary-type") not in (None, "Album"):
        return None  # only when the query lost its primarytype filter
    tags = tuple(
        (name.strip().lower(), votes)
        for t in group.get("tags") or []
        if isinstance(t, dict)
        and isinstance(name := t.get("name"), str)
        and isinstance(votes := t.get("count"), int)
        and name.strip()
    )
    return _ReleaseGroup(
        source_id=mbid,
        title=text_or_none(group.get("title")),
        artist=_artist(group.get("artist-credit")),
        tag=tag,
        tags=tags,
    )


def _artist(credit: object) -> str | None:
    """``artist-credit`` as MusicBrainz prints it: names joined by their join phrases."""
    if not isinstance(credit, list):
        return None
    parts: list[str] = []
    for entry in credit:
        if isinstance(entry, dict):
            name = entry.get("name")
            if not isinstance(name, str):
                artist = entry.get("artist")
                name = artist.get("name") if isinstance(artist, dict) else None
            if isinstance(name, str):
                parts.append(name)
                joiner = entry.get("joinphrase")
                parts.append(joiner if isinstance(joiner, str) else "")
    return text_or_none("".join(parts))
