"""Datasets: a deduplicated, stratified, reproducible train/val/test split of the covers.

Leak prevention: covers are already unique by content hash (the scraper merges
byte-identical files); a cover carrying more than one of the chosen genres is dropped as
ambiguous; covers that share a perceptual hash (re-encoded or resized copies) form one group
that goes to a single split, and a group whose covers disagree on the genre is dropped.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select

from sleeve_common.db import Database
from sleeve_common.exceptions import Conflict, NotFound
from sleeve_common.genres import normalize_genre
from sleeve_common.models import Album, AlbumLabel, Dataset, DatasetMember
from sleeve_trainer.exceptions import DatasetTooSmall

__all__ = [
    "SPLITS",
    "DatasetMemberRow",
    "SplitSpec",
    "build_dataset",
    "dataset_members",
    "ensure_dataset",
    "list_datasets",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    genres: tuple[str, ...] | None = None
    min_per_genre: int = 10
    max_per_genre: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise ValueError("val and test fractions must be between 0 and 1")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val + test fractions must leave at least 10% for training")


@dataclass(frozen=True)
class DatasetMemberRow:
    album_id: int
    cover_key: str
    content_sha256: str
    genre: str
    split: str


async def build_dataset(*, db: Database, name: str, spec: SplitSpec) -> Dataset:
    """Split the accepted covers and store the dataset under ``name``."""
    wanted = {normalize_genre(g) for g in spec.genres} if spec.genres else None
    async with db.session() as session:
        if (await session.execute(select(Dataset.id).where(Dataset.name == name))).first():
            raise Conflict(f"dataset {name!r} already exists; choose another name")
        rows = await session.execute(
            select(Album.id, Album.perceptual_hash, AlbumLabel.genre)
            .join(AlbumLabel, AlbumLabel.album_id == Album.id)
            .where(Album.status == "accepted")
        )
        album_genres: dict[int, set[str]] = defaultdict(set)
        album_group: dict[int, str] = {}
        for album_id, phash, genre in rows:
            if wanted is None or genre in wanted:
                album_genres[album_id].add(genre)
            album_group[album_id] = phash or f"album-{album_id}"

        ambiguous = [a for a, g in album_genres.items() if len(g) > 1]
        groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for album_id, genres in album_genres.items():
            if len(genres) == 1:
                groups[album_group[album_id]].append((album_id, next(iter(genres))))
        conflicting = [k for k, members in groups.items() if len({g for _, g in members}) > 1]
        dropped_near_duplicates = sum(len(groups.pop(key)) for key in conflicting)

        by_genre: dict[str, list[list[int]]] = defaultdict(list)
        for key in sorted(groups):
            members = groups[key]
            by_genre[members[0][1]].append(sorted(a for a, _ in members))

        rng = random.Random(spec.seed)
        assignments: dict[int, tuple[str, str]] = {}
        counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
        too_small: dict[str, int] = {}
        for genre in sorted(wanted or by_genre):
            genre_groups = by_genre.get(genre, [])
            rng.shuffle(genre_groups)
            genre_groups = _cap(genre_groups, spec.max_per_genre)
            size = sum(len(g) for g in genre_groups)
            if size < spec.min_per_genre:
                too_small[genre] = size
                continue
            for split, group in _split_groups(genre_groups, spec):
                for album_id in group:
                    assignments[album_id] = (split, genre)
                counts[split][genre] = counts[split].get(genre, 0) + len(group)

        if wanted is not None and too_small:
            raise DatasetTooSmall(
                "too few covers for "
                + ", ".join(
                    f"{g} ({n} < {spec.min_per_genre})" for g, n in sorted(too_small.items())
                )
            )
        kept = sorted(counts["train"])
        if len(kept) < 2:
            raise DatasetTooSmall(
                f"a dataset needs at least 2 genres with {spec.min_per_genre}+ covers each; "
                f"found {kept or 'none'} (scrape more covers or lower --min-per-genre)"
            )
        dataset = Dataset(
            name=name,
            params={
                "genres": list(spec.genres) if spec.genres else None,
                "min_per_genre": spec.min_per_genre,
                "max_per_genre": spec.max_per_genre,
                "val_fraction": spec.val_fraction,
                "test_fraction": spec.test_fraction,
                "seed": spec.seed,
            },
            genres=kept,
            counts={
                "splits": counts,
                "dropped_ambiguous": len(ambiguous),
                "dropped_conflicting_near_duplicates": dropped_near_duplicates,
                "dropped_genres_below_min": too_small,
            },
        )
        session.add(dataset)
        await session.flush()
        session.add_all(
            DatasetMember(dataset_id=dataset.id, album_id=album_id, split=split, genre=genre)
            for album_id, (split, genre) in sorted(assignments.items())
        )
        return dataset


def _cap(groups: list[list[int]], limit: int | None) -> list[list[int]]:
    if limit is None:
        return groups
    kept, total = [], 0
    for group in groups:
        if total + len(group) > limit:
            continue
        kept.append(group)
        total += len(group)
    return kept


def _split_groups(groups: list[list[int]], spec: SplitSpec) -> list[tuple[str, list[int]]]:
    """Test first, then validation, the rest training; each non-empty when there are 3+ groups."""
    size = sum(len(g) for g in groups)
    targets = {
        "test": max(1, round(size * spec.test_fraction)) if len(groups) >= 3 else 0,
        "val": max(1, round(size * spec.val_fraction)) if len(groups) >= 3 else 0,
    }
    out: list[tuple[str, list[int]]] = []
    filled = {"test": 0, "val": 0}
    for group in groups:
        split = next((s for s in ("test", "val") if filled[s] < targets[s]), "train")
        if split != "train":
            filled[split] += len(group)
        out.append((split, group))
    return out


async def ensure_dataset(*, db: Database, name: str, spec: SplitSpec) -> tuple[Dataset, bool]:
    """The dataset called ``name``, built with ``spec`` first if it does not exist yet; the
    flag says whether it was built now (a train job that runs again reuses its split)."""
    try:
        return await build_dataset(db=db, name=name, spec=spec), True
    except Conflict:
        async with db.session() as session:
            existing = (
                await session.execute(select(Dataset).where(Dataset.name == name))
            ).scalar_one()
        return existing, False


async def list_datasets(*, db: Database) -> list[Dataset]:
    async with db.session() as session:
        return list((await session.execute(select(Dataset).order_by(Dataset.id))).scalars())


async def dataset_members(*, db: Database, name: str) -> tuple[Dataset, list[DatasetMemberRow]]:
    """The dataset and its covers, ordered by split and album id."""
    async with db.session() as session:
        dataset = (
            await session.execute(select(Dataset).where(Dataset.name == name))
        ).scalar_one_or_none()
        if dataset is None:
            raise NotFound(f"dataset {name!r} does not exist; build it with `sleeve dataset build`")
        rows = await session.execute(
            select(
                DatasetMember.album_id,
                Album.cover_key,
                Album.content_sha256,
                DatasetMember.genre,
                DatasetMember.split,
            )
            .join(Album, Album.id == DatasetMember.album_id)
            .where(DatasetMember.dataset_id == dataset.id)
            .order_by(DatasetMember.split, DatasetMember.album_id)
        )
        members = [
            DatasetMemberRow(album_id=a, cover_key=str(k), content_sha256=str(h), genre=g, split=s)
            for a, k, h, g, s in rows
        ]
        return dataset, members
