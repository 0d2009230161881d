"""What every source shares: the items it yields, its interface, and the genre walk of API sources.

A source says *what* to fetch: ``Found`` items in a stable order, each with the cursor after
it. An item with neither bytes nor a failure is fetched from its ``cover_url`` by the shared
download step (``sleeve_scraper.downloads``); a local source hands its bytes over itself.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.ordered import ordered_map
from sleeve_scraper.taxonomy import load_taxonomy

if TYPE_CHECKING:
    from sleeve_common.payloads import ScrapeRequest
    from sleeve_common.settings import Settings
    from sleeve_scraper.http import HttpClient

__all__ = [
    "DEFAULT_PER_GENRE",
    "Candidate",
    "Found",
    "GenreApiSource",
    "GenreSource",
    "Label",
    "Listed",
    "Source",
    "SourceContext",
    "SourceFactory",
    "choose_labels",
    "text_or_none",
    "walk_genres",
]

DEFAULT_PER_GENRE = 100
"""Albums per genre an API source examines when ``--per-genre`` is not given."""


@dataclass(frozen=True)
class Label:
    """A Sleeve genre and the source's own name for it (kept as provenance)."""

    genre: str
    raw_genre: str


@dataclass(frozen=True)
class Candidate:
    """One cover a source found, before its bytes are checked."""

    source: str
    source_id: str
    labels: tuple[Label, ...]
    provenance: str
    artist: str | None = None
    title: str | None = None
    cover_url: str | None = None


@dataclass(frozen=True)
class Found:
    """A candidate, its bytes or why there are none, and the cursor after it.

    ``data`` and ``failure`` both None: the download step fetches ``candidate.cover_url``.
    ``place`` says where the item sits, for progress lines (``"jazz 12/100"``); ``genre`` is
    the Sleeve genre it was listed under, a key of the source's ``plan``.
    """

    candidate: Candidate
    cursor: dict[str, Any]
    data: bytes | None = None
    failure: str | None = None
    place: str = ""
    genre: str = ""


class Source(Protocol):
    name: str

    async def plan(self) -> dict[str, int | None]:
        """Genre → how many items this source will yield for it at most (None: not known),
        in the order it walks them: the run's progress per genre."""

    def found(self, cursor: dict[str, Any]) -> AsyncGenerator[Found, None]:
        """Items after ``cursor`` (``{}`` = from the start), always in the same order."""


@dataclass(frozen=True)
class SourceContext:
    """What a source factory may use: the request, the settings and the run's HTTP client."""

    request: ScrapeRequest
    settings: Settings
    http: HttpClient


SourceFactory = Callable[[SourceContext], Source]


class Listed(Protocol):
    """An album as an API source lists it for a genre: at least its id in that source."""

    @property
    def source_id(self) -> str: ...


ListedT = TypeVar("ListedT", bound=Listed)


def walk_genres(
    *,
    genres: Sequence[str],
    per_genre: int | None,
    cursor: dict[str, Any],
    listing: Callable[[str], AsyncGenerator[ListedT, None]],
    describe: Callable[[ListedT, str], Awaitable[tuple[Candidate, str | None]]],
    concurrency: int,
) -> AsyncGenerator[Found, None]:
    """Up to ``per_genre`` albums of each genre (all if None) in order, resuming after ``cursor``.

    ``listing(genre)`` lists albums cheaply and in a stable order (an album listed twice for
    a genre counts once); ``describe(album, genre)`` makes the candidate, with a failure when
    it must be recorded as rejected without a download. Up to ``concurrency`` albums are
    described at once (their requests overlap; the host's rate still paces them), and they
    come out in listing order. Albums before the cursor are skipped before ``describe``, so
    resuming costs no per-album request. The cursor ``{"genre": g, "done": n}`` means: every
    genre before ``g`` and ``n`` albums of ``g`` are done.
    """

    async def found(entry: tuple[ListedT, str, int]) -> Found:
        album, genre, count = entry
        candidate, failure = await describe(album, genre)
        return Found(
            candidate=candidate,
            cursor={"genre": genre, "done": count},
            failure=failure,
            place=f"{genre} {count}/{per_genre}" if per_genre else f"{genre} {count}",
            genre=genre,
        )

    listed = _after_cursor(genres=genres, per_genre=per_genre, cursor=cursor, listing=listing)
    return ordered_map(listed, found, concurrency=concurrency)


async def _after_cursor(
    *,
    genres: Sequence[str],
    per_genre: int | None,
    cursor: dict[str, Any],
    listing: Callable[[str], AsyncGenerator[ListedT, None]],
) -> AsyncGenerator[tuple[ListedT, str, int], None]:
    """Each genre's distinct albums after ``cursor``, with the genre and their place in it."""
    start, done = _resume_point(cursor, genres)
    for genre in genres[start:]:
        count = 0
        listed: set[str] = set()
        async with aclosing(listing(genre)) as albums:
            async for album in albums:
                if album.source_id in listed:
                    continue
                listed.add(album.source_id)
                count += 1
                if count > done:
                    yield album, genre, count
                if per_genre is not None and count >= per_genre:
                    break
        done = 0


def choose_labels(
    listed_as: Label, own: Sequence[Label], *, keep_multi: bool
) -> tuple[tuple[Label, ...], str | None]:
    """The labels to record for an album, or why it is dropped.

    ``listed_as`` is the genre it was listed under, ``own`` the Sleeve genres of its own
    metadata (whose raw names win over the listing's). Several distinct genres make it
    ambiguous: kept with every label when ``keep_multi``, else recorded with one label as
    rejected, for the reason returned.
    """
    labels: dict[str, Label] = {}
    for label in (*own, listed_as):
        labels.setdefault(label.genre, label)
    if len(labels) > 1 and not keep_multi:
        return (labels[listed_as.genre],), f"several genres: {', '.join(sorted(labels))}"
    return tuple(labels.values()), None


def text_or_none(value: object) -> str | None:
    """A JSON field as stripped text; None for anything else or an empty string."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _resume_point(cursor: dict[str, Any], genres: Sequence[str]) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    genre, done = cursor.get("genre"), cursor.get("done")
    if genre not in genres or not isinstance(done, int) or done < 0:
        raise SourceError(
            f"cannot resume from cursor {cursor}: it does not point into the genres "
            f"{', '.join(genres)}; resume with the genres the run started with"
        )
    return genres.index(genre), done


class GenreSource(abc.ABC):
    """What the sources that list albums genre by genre share: the asked genres (resolved
    through the source's taxonomy) walked in order, ``per_genre`` albums each, the run's HTTP
    client and the multi-genre policy. A subclass names itself and lists (``_albums``) and
    describes (``_describe``) the albums of one genre; ``per_genre_default`` applies when the
    request gives none (None: every album of the genre, for label files)."""

    name: str

    def __init__(
        self, context: SourceContext, *, per_genre_default: int | None = DEFAULT_PER_GENRE
    ) -> None:
        settings = context.settings
        self._http = context.http
        self._taxonomy = load_taxonomy(self.name, settings.scrape_taxonomy)
        self._genres = self._taxonomy.resolve(context.request.genres)
        self._per_genre = context.request.per_genre or per_genre_default
        self._keep_multi = settings.scrape_multi_genre == "keep"
        self._concurrency = settings.scrape_api_concurrency

    async def plan(self) -> dict[str, int | None]:
        return dict.fromkeys(self._genres, self._per_genre)

    def found(self, cursor: dict[str, Any]) -> AsyncGenerator[Found, None]:
        return walk_genres(
            genres=self._genres,
            per_genre=self._per_genre,
            cursor=cursor,
            listing=self._albums,
            describe=self._describe,
            concurrency=self._concurrency,
        )

    @abc.abstractmethod
    def _albums(self, genre: str) -> AsyncGenerator[Any, None]:
        """The genre's albums, cheaply and in a stable order."""

    @abc.abstractmethod
    async def _describe(self, album: Any, genre: str) -> tuple[Candidate, str | None]:
        """The album's candidate, and a failure when it is rejected without a download."""


class GenreApiSource(GenreSource):
    """A music API walked genre by genre, at ``base_url`` (``DEFAULT_PER_GENRE`` albums each
    unless asked for another number)."""

    _per_genre: int

    def __init__(self, context: SourceContext, *, base_url: str) -> None:
        super().__init__(context)
        self._per_genre = context.request.per_genre or DEFAULT_PER_GENRE
        self._base = base_url.rstrip("/")
