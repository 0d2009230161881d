"""A failed object write never leaves a row pointing at a missing object.

Two places write an object and then a row: scrape ingest (a cover, then its album) and a
training run (the ONNX file, the report images and the report, then the model version). Each
is made to fail with a real store failure: the S3 server stopped in the middle of the work,
or a local store whose cover folder cannot be created. Afterwards every row's key is in the
store, and the run says what failed.

(Scoring writes no object: its rows name the keys it read, and exports go to a file.)
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from servers import S3Server, seaweedfs_s3
from sqlalchemy import func, select
from support import DISCOGS5, make_settings

from sleeve_common.db import upgrade_database
from sleeve_common.exceptions import StoreError, StoreUnavailable
from sleeve_common.models import Album, ModelVersion, ScrapeRun, TrainingRun
from sleeve_common.payloads import ScrapeRequest, TrainRequest
from sleeve_common.progress import Part, silent_progress
from sleeve_common.runtime import Runtime, open_runtime
from sleeve_common.settings import Settings
from sleeve_scraper.scrape import run_scrape

from .stack import S3_PREFIX

GENRES = ("Country", "Pop", "Rock")
PER_GENRE = 8
STOP_AFTER = 6  # covers stored before the S3 server stops


def library(root: Path) -> Path:
    """``root/<Genre>/`` with ``PER_GENRE`` real covers each, byte-unique across genres."""
    seen: set[str] = set()
    for genre in GENRES:
        (root / genre).mkdir(parents=True)
        picked = 0
        for path in sorted((DISCOGS5 / genre).glob("*.jpg")):
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            if sha in seen:
                continue
            seen.add(sha)
            shutil.copyfile(path, root / genre / path.name)
            picked += 1
            if picked == PER_GENRE:
                break
    return root


async def s3_settings(tmp_path: Path, s3: S3Server) -> Settings:
    """A migrated SQLite database, and the store on ``s3``."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}"
    await asyncio.to_thread(upgrade_database, url)
    return make_settings(
        tmp_path,
        url,
        store_url=f"s3://{s3.bucket}/{S3_PREFIX}",
        s3_endpoint=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )


async def rows(runtime: Runtime, model: type[Album] | type[ScrapeRun]) -> list[object]:
    async with runtime.db.session() as session:
        return list((await session.execute(select(model).order_by(model.id))).scalars())


async def missing_covers(runtime: Runtime) -> list[str]:
    """Keys of accepted albums that have no object in the store."""
    albums = await rows(runtime, Album)
    keys = [a.cover_key for a in albums if isinstance(a, Album) and a.status == "accepted"]
    assert all(keys)
    return [key for key in keys if key is None or not await runtime.store.exists(key)]


async def test_a_store_stopped_mid_scrape_leaves_no_album_without_its_cover(
    tmp_path: Path,
) -> None:
    root = library(tmp_path / "covers")
    total = len(GENRES) * PER_GENRE
    with seaweedfs_s3() as s3:
        async with open_runtime(await s3_settings(tmp_path, s3)) as runtime:
            seen: list[str] = []

            async def stop_the_store(
                fraction: float, message: str, *, parts: Sequence[Part] = ()
            ) -> None:
                seen.append(message)
                if len(seen) == STOP_AFTER:
                    s3.stop()  # blocks the scrape meanwhile: the next put finds it stopped

            request = ScrapeRequest(source="folder", path=str(root))
            with pytest.raises(StoreUnavailable) as failed:
                await run_scrape(runtime, request, on_progress=stop_the_store)
            s3.start()

            # The run failed, saying that the store could not take a cover.
            assert str(failed.value).startswith("put 'covers/")
            [run] = await rows(runtime, ScrapeRun)
            assert isinstance(run, ScrapeRun)
            assert run.status == "failed"
            assert run.error is not None and run.error.startswith("StoreUnavailable: put 'covers/")
            # Only the covers stored before the stop have albums, and each cover is there.
            albums = await rows(runtime, Album)
            assert len(albums) == run.added == STOP_AFTER
            assert await missing_covers(runtime) == []

            # Resumed once the store is back: every cover, once, each with its object.
            resumed = ScrapeRequest(source="folder", path=str(root), resume=run.id)
            _, counters = await run_scrape(runtime, resumed, on_progress=silent_progress)
            assert (counters.seen, counters.added, counters.duplicates) == (total, total, 0)
            assert len(await rows(runtime, Album)) == total
            assert await missing_covers(runtime) == []


async def test_a_local_store_that_refuses_writes_fails_the_scrape_with_no_album(
    tmp_path: Path,
) -> None:
    root = library(tmp_path / "covers")
    url = f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}"
    await asyncio.to_thread(upgrade_database, url)
    settings = make_settings(tmp_path, url)
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    # A file where the covers' folder must go: the OS refuses every cover write (ENOTDIR).
    # (A read-only folder would not stop root, and CI may run as root.)
    (store_dir / "covers").write_bytes(b"not a folder")
    async with open_runtime(settings) as runtime:
        with pytest.raises(StoreError) as failed:
            await run_scrape(
                runtime, ScrapeRequest(source="folder", path=str(root)), on_progress=silent_progress
            )
        assert str(failed.value).startswith("put 'covers/")
        [run] = await rows(runtime, ScrapeRun)
        assert isinstance(run, ScrapeRun)
        assert (run.status, run.added) == ("failed", 0)
        assert run.error is not None and "put 'covers/" in run.error
        assert await rows(runtime, Album) == []


@pytest.mark.slow
async def test_a_store_stopped_before_the_export_registers_no_model(tmp_path: Path) -> None:
    from sleeve_trainer.datasets import SplitSpec, build_dataset
    from sleeve_trainer.training import run_training

    root = library(tmp_path / "covers")
    with seaweedfs_s3() as s3:
        async with open_runtime(await s3_settings(tmp_path, s3)) as runtime:
            request = ScrapeRequest(source="folder", path=str(root))
            await run_scrape(runtime, request, on_progress=silent_progress)
            spec = SplitSpec(min_per_genre=4, val_fraction=0.2, test_fraction=0.2)
            await build_dataset(db=runtime.db, name="faults", spec=spec)

            async def stop_the_store(
                fraction: float, message: str, *, parts: Sequence[Part] = ()
            ) -> None:
                if "exporting to ONNX" in message:
                    s3.stop()  # trained; what is left is to store the files and register them

            options = TrainRequest(dataset="faults", epochs=1, batch_size=16, augment=False)
            with pytest.raises(StoreUnavailable) as failed:
                await run_training(runtime, options, on_progress=stop_the_store)
            s3.start()

            assert str(failed.value).startswith("put 'models/run-1/model.onnx'")
            async with runtime.db.session() as session:
                versions = (await session.execute(select(func.count(ModelVersion.id)))).scalar()
                [run] = (await session.execute(select(TrainingRun))).scalars()
            assert versions == 0
            assert run.status == "failed"
            assert run.error is not None and run.error.startswith("StoreUnavailable: put 'models/")
            assert await runtime.store.list("models/") == []
            assert await missing_covers(runtime) == []
