"""Dataset splits: stratified, leak-free, reproducible; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections import Counter

import pytest

from sleeve_common.db import Database
from sleeve_common.exceptions import Conflict, NotFound
from sleeve_common.models import Album, AlbumLabel
from sleeve_common.store import cover_key
from sleeve_trainer.datasets import (
    SPLITS,
    DatasetMemberRow,
    SplitSpec,
    build_dataset,
    dataset_members,
    list_datasets,
)
from sleeve_trainer.exceptions import DatasetTooSmall


async def add(
    db: Database,
    genres: str | tuple[str, ...],
    count: int = 1,
    *,
    phash: str | None = None,
    status: str = "accepted",
) -> list[int]:
    """``count`` albums, each labelled with every genre in ``genres`` (one provenance per label)."""
    labels = (genres,) if isinstance(genres, str) else genres
    albums = []
    for _ in range(count):
        source_id = uuid.uuid4().hex
        sha = hashlib.sha256(source_id.encode()).hexdigest()
        accepted = status == "accepted"
        albums.append(
            Album(
                source="folder",
                source_id=source_id,
                content_sha256=sha,
                cover_key=cover_key(sha) if accepted else None,
                perceptual_hash=phash,
                width=300 if accepted else None,
                height=300 if accepted else None,
                status=status,
                reject_reason=None if accepted else "corrupt image: truncated",
                labels=[
                    AlbumLabel(genre=g, raw_genre=g.title(), provenance=f"test:{source_id}:{i}")
                    for i, g in enumerate(labels)
                ],
            )
        )
    async with db.session() as session:
        session.add_all(albums)
        await session.flush()
        return [a.id for a in albums]


async def members_of(db: Database, name: str) -> list[DatasetMemberRow]:
    _, members = await dataset_members(db=db, name=name)
    return members


def splits_by_album(members: list[DatasetMemberRow]) -> dict[int, str]:
    assignment = {m.album_id: m.split for m in members}
    assert len(assignment) == len(members), "an album is in two splits"
    return assignment


async def test_stratified_split_covers_every_genre_in_every_split(database: Database) -> None:
    ids = {g: await add(database, g, 12) for g in ("rock", "pop", "country")}

    dataset = await build_dataset(db=database, name="d1", spec=SplitSpec(min_per_genre=5))
    found, members = await dataset_members(db=database, name="d1")

    assert found.id == dataset.id
    assert dataset.genres == ["country", "pop", "rock"]
    assert splits_by_album(members).keys() == {a for group in ids.values() for a in group}
    for member in members:
        assert member.album_id in ids[member.genre]
        assert member.cover_key == cover_key(member.content_sha256)
    per_cell = Counter((m.split, m.genre) for m in members)
    assert set(per_cell) == set(itertools.product(SPLITS, ("rock", "pop", "country")))
    assert dataset.counts["splits"] == {
        split: {g: per_cell[(split, g)] for g in ("country", "pop", "rock")} for split in SPLITS
    }
    assert all(per_cell[("train", g)] == 10 for g in ("rock", "pop", "country"))
    assert [d.name for d in await list_datasets(db=database)] == ["d1"]


async def test_same_seed_same_split_other_seed_other_split(database: Database) -> None:
    for genre in ("rock", "pop", "country"):
        await add(database, genre, 12)

    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        await build_dataset(db=database, name=name, spec=SplitSpec(min_per_genre=5, seed=seed))

    a, b, c = [splits_by_album(await members_of(database, n)) for n in ("a", "b", "c")]
    assert a == b
    assert a.keys() == c.keys()
    assert a != c


async def test_albums_with_two_of_the_chosen_genres_are_dropped_and_counted(
    database: Database,
) -> None:
    for genre in ("rock", "pop", "country"):
        await add(database, genre, 10)
    ambiguous = await add(database, ("rock", "pop"), 2)
    [rock_and_jazz] = await add(database, ("rock", "jazz"))
    [rock_twice] = await add(database, ("rock", "rock"))  # two sources agree

    chosen = await build_dataset(
        db=database,
        name="chosen",
        spec=SplitSpec(genres=("Rock", "Pop", "Country"), min_per_genre=5),
    )
    everything = await build_dataset(db=database, name="all", spec=SplitSpec(min_per_genre=5))

    assert chosen.counts["dropped_ambiguous"] == 2
    members = {m.album_id: m.genre for m in await members_of(database, "chosen")}
    assert not set(ambiguous) & members.keys()
    assert members[rock_and_jazz] == "rock"  # jazz was not asked for
    assert members[rock_twice] == "rock"
    assert everything.counts["dropped_ambiguous"] == 3
    members = {m.album_id for m in await members_of(database, "all")}
    assert not {*ambiguous, rock_and_jazz} & members
    assert rock_twice in members
    assert everything.genres == ["country", "pop", "rock"]


async def test_near_duplicates_share_a_split_and_conflicting_groups_are_dropped(
    database: Database,
) -> None:
    groups: dict[str, list[int]] = {}
    for n, genre in enumerate(("rock", "pop", "country")):
        for g in range(3):
            phash = f"{n:08x}{g:08x}"
            groups[phash] = await add(database, genre, 3, phash=phash)
        await add(database, genre, 6, phash=None)
    conflicting = await add(database, "rock", phash="ffffffffffffffff")
    conflicting += await add(database, "pop", phash="ffffffffffffffff")

    for seed in range(4):
        dataset = await build_dataset(
            db=database, name=f"s{seed}", spec=SplitSpec(min_per_genre=5, seed=seed)
        )
        members = await members_of(database, f"s{seed}")
        assignment = splits_by_album(members)
        for phash, album_ids in groups.items():
            assert len({assignment[a] for a in album_ids}) == 1, (seed, phash)
        assert not set(conflicting) & assignment.keys()
        assert len(assignment) == 45
        assert dataset.counts["dropped_conflicting_near_duplicates"] == 2
        assert {(m.split, m.genre) for m in members} == set(
            itertools.product(SPLITS, ("rock", "pop", "country"))
        )


async def test_small_genre_is_dropped_unless_asked_for(database: Database) -> None:
    await add(database, "rock", 10)
    await add(database, "pop", 10)
    await add(database, "jazz", 3)

    dataset = await build_dataset(db=database, name="auto", spec=SplitSpec(min_per_genre=5))

    assert dataset.genres == ["pop", "rock"]
    assert dataset.counts["dropped_genres_below_min"] == {"jazz": 3}
    assert {m.genre for m in await members_of(database, "auto")} == {"pop", "rock"}

    spec = SplitSpec(genres=("Rock", "Pop", "Jazz", "Blues"), min_per_genre=5)
    with pytest.raises(
        DatasetTooSmall, match=r"too few covers for blues \(0 < 5\), jazz \(3 < 5\)"
    ):
        await build_dataset(db=database, name="asked", spec=spec)
    assert [d.name for d in await list_datasets(db=database)] == ["auto"]


async def test_max_per_genre_caps_without_splitting_groups(database: Database) -> None:
    await add(database, "rock", 17)
    group = await add(database, "rock", 3, phash="00000000000000aa")
    await add(database, "pop", 12)
    await add(database, "country", 9)

    dataset = await build_dataset(
        db=database, name="capped", spec=SplitSpec(min_per_genre=5, max_per_genre=8)
    )

    members = await members_of(database, "capped")
    assert Counter(m.genre for m in members) == {"rock": 8, "pop": 8, "country": 8}
    assert len(set(group) & {m.album_id for m in members}) in (0, 3)
    assert dataset.params["max_per_genre"] == 8


async def test_duplicate_name_is_a_conflict(database: Database) -> None:
    await add(database, "rock", 10)
    await add(database, "pop", 10)
    await build_dataset(db=database, name="d", spec=SplitSpec(min_per_genre=5))
    before = await members_of(database, "d")

    with pytest.raises(Conflict, match="dataset 'd' already exists"):
        await build_dataset(db=database, name="d", spec=SplitSpec(min_per_genre=5, seed=1))

    assert [d.name for d in await list_datasets(db=database)] == ["d"]
    assert await members_of(database, "d") == before


async def test_fewer_than_two_genres_is_too_small(database: Database) -> None:
    with pytest.raises(DatasetTooSmall, match=r"at least 2 genres .* found none"):
        await build_dataset(db=database, name="empty", spec=SplitSpec(min_per_genre=5))
    await add(database, "rock", 10)
    await add(database, "pop", 4)

    with pytest.raises(DatasetTooSmall, match=r"at least 2 genres with 5\+ covers each"):
        await build_dataset(db=database, name="one", spec=SplitSpec(min_per_genre=5))

    assert await list_datasets(db=database) == []


async def test_unknown_dataset_is_not_found(database: Database) -> None:
    with pytest.raises(NotFound, match="dataset 'nope' does not exist"):
        await dataset_members(db=database, name="nope")


async def test_rejected_albums_are_never_members(database: Database) -> None:
    accepted = await add(database, "rock", 10) + await add(database, "pop", 10)
    accepted_country = await add(database, "country", 4)
    rejected = await add(database, "rock", 4, status="rejected")
    rejected += await add(database, "country", 10, status="rejected")

    dataset = await build_dataset(db=database, name="r", spec=SplitSpec(min_per_genre=5))

    assert {m.album_id for m in await members_of(database, "r")} == set(accepted)
    assert not set(rejected) & {m.album_id for m in await members_of(database, "r")}
    assert dataset.counts["dropped_genres_below_min"] == {"country": len(accepted_country)}


@pytest.mark.parametrize(
    ("val", "test"), [(0.0, 0.1), (0.1, 1.0), (-0.1, 0.1), (0.5, 0.4), (0.45, 0.45)]
)
def test_split_fractions_are_validated(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        SplitSpec(val_fraction=val, test_fraction=test)


async def test_members_are_ordered_by_split_then_album(database: Database) -> None:
    for genre in ("rock", "pop"):
        await add(database, genre, 10)
    await build_dataset(db=database, name="o", spec=SplitSpec(min_per_genre=5))

    members = await members_of(database, "o")

    assert members == sorted(members, key=lambda m: (m.split, m.album_id))
    assert Counter(m.split for m in members) == {"test": 2, "train": 16, "val": 2}
