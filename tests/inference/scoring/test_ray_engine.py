"""The Ray engine (``--engine ray``) on a real local Ray instance, against the local engine.

A module fixture starts Ray once (2 CPUs, no dashboard) and stops it at the end; the CLI
test runs ``sleeve score`` in a subprocess, which starts and stops a Ray of its own. The
catalogs are real discogs5 covers plus corrupt files, scored by the tiny colour model.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from servers import S3Server
from support import make_settings

from sleeve_common.db import upgrade_database
from sleeve_common.models import Prediction
from sleeve_common.runtime import Runtime, open_runtime
from sleeve_common.settings import Settings
from sleeve_inference.model_holder import model_cache_dir
from sleeve_inference.scoring import ray_engine
from sleeve_inference.scoring.engine import EngineOptions
from sleeve_inference.scoring.jobs import create_scoring_job, run_scoring

from ..harness import Registered, image_bytes, register_model
from .conftest import BLUE, RED, real_covers
from .test_engine import assert_scored, job_row, predictions

COVERS = 24


def make_catalog(root: Path, count: int = COVERS) -> Path:
    """Real covers (some in a subfolder), two solid colours and three files that are no image."""
    (root / "sub").mkdir(parents=True)
    covers = real_covers(count)
    for index, cover in enumerate(covers):
        shutil.copyfile(cover, root / ("sub" if index % 3 == 0 else ".") / f"{index:02d}.jpg")
    (root / "red.png").write_bytes(image_bytes(RED))
    (root / "sub" / "blue.png").write_bytes(image_bytes(BLUE))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "sub" / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(covers[0].read_bytes()[:600])
    (root / "notes.txt").write_text("not a cover")
    return root


def assert_same_rows(got: dict[str, Prediction], expected: dict[str, Prediction]) -> None:
    """The same items, errors, sources and top genres; probabilities equal to float noise."""
    assert set(got) == set(expected)
    for item, want in expected.items():
        row = got[item]
        assert (row.error, row.top_genre, row.source) == (want.error, want.top_genre, want.source)
        if want.probabilities is None:
            assert (row.probabilities, row.confidence) == (None, None), item
        else:
            assert row.probabilities == pytest.approx(want.probabilities, rel=1e-5), item
            assert row.confidence == pytest.approx(want.confidence, rel=1e-5), item


async def score_both(runtime: Runtime, source: str, chunk_size: int) -> tuple[int, int]:
    """Score ``source`` as two jobs, on the local engine and on Ray; their ids."""
    local = await create_scoring_job(runtime=runtime, input=source)
    await run_scoring(runtime, local.id, chunk_size=chunk_size)
    on_ray = await create_scoring_job(runtime=runtime, input=source, engine="ray")
    assert on_ray.engine == "ray"
    await run_scoring(runtime, on_ray.id, chunk_size=chunk_size)
    return local.id, on_ray.id


def _processes_using(folder: Path) -> list[str]:
    """Command lines of live processes that mention ``folder`` (Ray's own, for a session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in command:
            found.append(command)
    return found


def wait_until_gone(ray_tmp: Path, timeout_s: float = 30) -> None:
    """Fail unless every process of the Ray that lived under ``ray_tmp`` exits in time."""
    deadline = time.monotonic() + timeout_s
    while leftovers := _processes_using(ray_tmp):
        assert time.monotonic() < deadline, f"Ray processes left behind: {leftovers}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance for the module: 2 CPUs, no dashboard, logs in a temp folder that
    goes with it; its processes are checked gone at the end."""
    # Short: Ray's socket paths under it are limited to 107 bytes.
    import ray  # here, not at the top: collecting the tests never pays for Ray's import
    import ray.data

    ray_tmp = Path(tempfile.mkdtemp(prefix="sleeve-ray-"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", str(ray_tmp))
        ray.init(
            num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
        )
        try:
            with warnings.catch_warnings():
                # Ray Data's DataContext warns about deprecated fields its own constructor
                # sets; it is made once per process, here rather than under strict warnings.
                warnings.simplefilter("ignore", DeprecationWarning)
                ray.data.DataContext.get_current()
            yield
        finally:
            ray.shutdown()
            try:
                wait_until_gone(ray_tmp)
            finally:
                shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture
async def s3_runtime(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    """SQLite and a fresh prefix on the real S3 server, keys passed the way deployments do."""
    monkeypatch.setenv("SLEEVE_S3_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("SLEEVE_S3_SECRET_ACCESS_KEY", s3_server.secret_key)
    database = f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}"
    await asyncio.to_thread(upgrade_database, database)
    settings = make_settings(
        tmp_path,
        database,
        store_url=f"s3://{s3_server.bucket}/ray-{uuid.uuid4().hex[:12]}",
        s3_endpoint=s3_server.endpoint,
        batch_max_size=3,
    )
    async with open_runtime(settings) as runtime:
        yield runtime


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_cli_scores_on_a_ray_it_starts_and_stops(
    scoring_settings: Settings, colour_model: Registered, tmp_path: Path
) -> None:
    """``sleeve score --engine ray`` with no address: a local Ray of its own, gone after.

    First in the module, so it runs before the module's Ray starts and has the cores.
    """
    catalog = make_catalog(tmp_path / "covers", count=6)
    output = tmp_path / "scores.jsonl"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    # Ray's temp folder: short (its socket paths are limited) and this test's own.
    ray_tmp = Path(tempfile.mkdtemp(prefix="sleeve-ray-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLEEVE_", "RAY_"))}
    env |= {
        "SLEEVE_DATABASE_URL": scoring_settings.database_url,
        "SLEEVE_STORE_URL": scoring_settings.store_url,
        "SLEEVE_DATA_DIR": str(scoring_settings.data_dir),
        "SLEEVE_LOG_LEVEL": "WARNING",
        "SLEEVE_BATCH_MAX_SIZE": "3",
        "RAY_TMPDIR": str(ray_tmp),
    }
    argv = ["score", "--input", str(catalog), "--output", str(output), "--engine", "ray"]
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "sleeve_common", *argv],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert any(line.startswith("[score") for line in result.stderr.splitlines())
        assert "failed, 0 duplicate ids of 11 items" in result.stdout, result.stdout
        assert str(output) in result.stdout
        records = [json.loads(line) for line in output.read_text().splitlines()]
        assert len(records) == 11
        assert {r["item"]: r["top_genre"] for r in records}["red.png"] == "country"
        assert list(ray_tmp.glob("ray/session_*/logs")), "Ray did not log under RAY_TMPDIR"
        await asyncio.to_thread(wait_until_gone, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not list(workdir.iterdir())  # nothing of Ray's (or ours) in the working folder


@pytest.mark.usefixtures("local_ray")
async def test_a_folder_scores_as_on_the_local_engine(
    scoring_runtime: Runtime, colour_model: Registered, tmp_path: Path
) -> None:
    catalog = make_catalog(tmp_path / "covers")

    local_id, ray_id = await score_both(scoring_runtime, str(catalog), chunk_size=5)

    rows = await predictions(scoring_runtime.db, ray_id)
    assert_same_rows(rows, await predictions(scoring_runtime.db, local_id))
    assert len(rows) == COVERS + 5
    assert_scored(rows["red.png"], "country")
    assert_scored(rows["sub/blue.png"], "pop")
    assert (rows["broken.jpg"].error or "").startswith("invalid image")
    assert rows["sub/empty.jpg"].error == "invalid image: empty file"
    assert all(row.model_version_id == colour_model.version.id for row in rows.values())
    finished = await job_row(scoring_runtime.db, ray_id)
    expected = await job_row(scoring_runtime.db, local_id)
    assert (finished.status, finished.total, finished.done, finished.failed) == (
        "succeeded",
        expected.total,
        expected.done,
        expected.failed,
    )
    assert finished.failed >= 2 and finished.done >= COVERS


@pytest.mark.usefixtures("local_ray")
async def test_an_s3_manifest_scores_as_on_the_local_engine_in_several_windows(
    s3_runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_runtime.store
    await register_model(s3_runtime.db, store)
    rows_in = []
    for index, cover in enumerate(real_covers(6)):
        await store.put(f"in/{index}.jpg", cover.read_bytes())
        rows_in.append([f"c{index}", f"in/{index}.jpg"])
    await store.put("in/broken.jpg", b"\xff\xd8 not really a jpeg")
    rows_in += [
        ["missing", "in/nothing-here.jpg"],
        ["broken", "in/broken.jpg"],
        ["none", ""],
        ["c0", "in/broken.jpg"],  # a duplicate id, in a later window: scored once
    ]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([["id", "key"], *rows_in])
    # Two actors of three items: windows of six, so the duplicate "c0" comes in the second
    # window, after the first one's rows are written.
    monkeypatch.setattr(ray_engine, "ITEMS_PER_ACTOR", 3)

    local_id, ray_id = await score_both(s3_runtime, str(manifest), chunk_size=3)

    rows = await predictions(s3_runtime.db, ray_id)
    assert_same_rows(rows, await predictions(s3_runtime.db, local_id))
    assert set(rows) == {f"c{i}" for i in range(6)} | {"missing", "broken", "none"}
    assert_scored(rows["c0"])  # the first row with the id wins
    assert "no object" in (rows["missing"].error or "")
    assert (rows["broken"].error or "").startswith("invalid image")
    assert "no key" in (rows["none"].error or "")
    finished = await job_row(s3_runtime.db, ray_id)
    assert (finished.status, finished.done, finished.failed, finished.duplicates) == (
        "succeeded",
        6,
        3,
        1,
    )


class _Interrupt(Exception):
    pass


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_interrupted_ray_job_resumes_without_rescoring(
    scoring_runtime: Runtime, colour_model: Registered, tmp_path: Path
) -> None:
    db = scoring_runtime.db
    catalog = make_catalog(tmp_path / "covers", count=12)
    job = await create_scoring_job(runtime=scoring_runtime, input=str(catalog), engine="ray")

    async def stop_after_first_chunk(fraction: float, message: str) -> None:
        raise _Interrupt(message)

    with pytest.raises(_Interrupt):
        await run_scoring(scoring_runtime, job.id, stop_after_first_chunk, chunk_size=4)

    first = await predictions(db, job.id)
    assert len(first) == 4
    stopped = await job_row(db, job.id)
    assert (stopped.status, stopped.done + stopped.failed) == ("failed", 4)
    assert "_Interrupt" in (stopped.error or "")

    summary = await run_scoring(scoring_runtime, job.id, chunk_size=4)

    rows = await predictions(db, job.id)
    assert len(rows) == 12 + 5
    assert summary.written == len(rows) - 4
    for item, row in first.items():  # the finished items were not scored again
        assert (rows[item].id, rows[item].created_at) == (row.id, row.created_at)
    resumed = await job_row(db, job.id)
    assert (resumed.status, resumed.done + resumed.failed, resumed.error) == (
        "succeeded",
        len(rows),
        None,
    )

    again = await run_scoring(scoring_runtime, job.id, chunk_size=4)

    assert (again.written, again.done + again.failed, again.duplicates) == (0, len(rows), 0)
    assert {item: row.id for item, row in (await predictions(db, job.id)).items()} == {
        item: row.id for item, row in rows.items()
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_actor_on_a_node_without_the_model_file_fetches_it(
    scoring_settings: Settings, colour_model: Registered, tmp_path: Path
) -> None:
    """What a worker node does: no model file at the driver's path, so fetch and verify it."""
    cover = real_covers(1)[0]
    batch = {
        "item": np.array(["cover", "gone", "red"], dtype=object),
        "kind": np.array(["path", "path", "path"], dtype=object),
        "locator": np.array([str(cover), str(tmp_path / "gone.jpg"), ""], dtype=object),
    }

    def in_an_actor() -> dict[str, np.ndarray]:  # an actor has no running event loop
        actor = ray_engine._ScoringActor(
            settings=scoring_settings,
            model=colour_model.version,
            model_path=str(tmp_path / "elsewhere" / "model.onnx"),
            options=EngineOptions(batch_size=2),
        )
        try:
            return actor(batch)
        finally:
            actor.close()

    out = await asyncio.to_thread(in_an_actor)

    cached = model_cache_dir(scoring_settings) / f"{colour_model.version.onnx_sha256}.onnx"
    assert cached.read_bytes() == colour_model.onnx
    assert list(out["item"]) == ["cover", "gone", "red"]
    assert out["error"][0] == "" and out["top_genre"][0] in colour_model.version.labels
    assert out["probabilities"][0].sum() == pytest.approx(1.0, rel=1e-5)
    assert "cannot read" in out["error"][1] and "no path" in out["error"][2]
    assert np.isnan(out["probabilities"][1:]).all()
