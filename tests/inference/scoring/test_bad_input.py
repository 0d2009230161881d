"""Every bad scoring request fails with a clear error before any work: no job row is made."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from sleeve_common.exceptions import NotFound, SleeveError
from sleeve_common.models import ScoringJob
from sleeve_common.runtime import Runtime
from sleeve_inference.scoring.errors import (
    CatalogError,
    EngineUnavailable,
    ManifestError,
    OutputError,
)
from sleeve_inference.scoring.jobs import create_scoring_job

from ..harness import Registered


def _csv(text: str) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        path = folder / "manifest.csv"
        path.write_text(text)
        return str(path)

    return make


def _parquet(columns: dict[str, list[str]]) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        path = folder / "manifest.parquet"
        pq.write_table(
            pa.table(columns, schema=pa.schema([(c, pa.string()) for c in columns])), path
        )
        return str(path)

    return make


def _folder_without_images(folder: Path) -> str:
    (folder / "empty" / "deeper").mkdir(parents=True)
    (folder / "empty" / "notes.txt").write_text("no covers here")
    return str(folder / "empty")


def _garbage_parquet(folder: Path) -> str:
    path = folder / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    return str(path)


def _text_file(folder: Path) -> str:
    path = folder / "list.txt"
    path.write_text("id,key\n")
    return str(path)


CASES: dict[str, tuple[Callable[[Path], str], type[SleeveError], str]] = {
    "empty csv": (_csv(""), ManifestError, "is empty"),
    "header only": (_csv("id,key\n"), ManifestError, "is empty (no rows)"),
    "no id column": (_csv("name,key\na,b.jpg\n"), ManifestError, "no 'id' column"),
    "no locator": (_csv("id,title\na,b\n"), ManifestError, "has none"),
    "two locators": (_csv("id,url,key\na,http://x/y.jpg,y.jpg\n"), ManifestError, "url and key"),
    "empty id": (_csv("id,key\na,a.jpg\n,b.jpg\n"), ManifestError, "row 2"),
    "empty parquet": (_parquet({"id": [], "url": []}), ManifestError, "is empty (no rows)"),
    "parquet ambiguous": (
        _parquet({"id": ["a"], "key": ["k"], "path": ["p"]}),
        ManifestError,
        "key and path",
    ),
    "unreadable parquet": (_garbage_parquet, ManifestError, "cannot read the manifest"),
    "folder without images": (_folder_without_images, CatalogError, "no images in the folder"),
    "prefix without images": (lambda _: "store:nothing/here/", CatalogError, "no images under"),
    "missing path": (lambda folder: str(folder / "nope"), CatalogError, "no such folder"),
    "not a manifest": (_text_file, CatalogError, ".csv or .parquet"),
}


async def _job_count(runtime: Runtime) -> int:
    async with runtime.db.session() as session:
        return int(await session.scalar(select(func.count(ScoringJob.id))) or 0)


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_inputs_fail_before_work(
    scoring_runtime: Runtime, colour_model: Registered, tmp_path: Path, case: str
) -> None:
    make, error, words = CASES[case]
    with pytest.raises(error) as caught:
        await create_scoring_job(runtime=scoring_runtime, input=make(tmp_path))
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)
    assert await _job_count(scoring_runtime) == 0


async def test_an_unknown_model_version_is_not_found(
    scoring_runtime: Runtime, colour_model: Registered, covers: Path
) -> None:
    with pytest.raises(NotFound, match="'v9'"):
        await create_scoring_job(runtime=scoring_runtime, input=str(covers), model="v9")
    assert await _job_count(scoring_runtime) == 0


async def test_no_registered_model_is_not_found(scoring_runtime: Runtime, covers: Path) -> None:
    with pytest.raises(NotFound, match="no model is registered"):
        await create_scoring_job(runtime=scoring_runtime, input=str(covers))


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("missing-folder/out.jsonl", "does not exist"),
        ("out.xlsx", "extension picks the format"),
        ("folder.csv", "is a folder"),
    ],
)
async def test_an_output_that_cannot_be_written_fails_before_work(
    scoring_runtime: Runtime,
    colour_model: Registered,
    covers: Path,
    tmp_path: Path,
    output: str,
    words: str,
) -> None:
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(OutputError, match=words):
        await create_scoring_job(
            runtime=scoring_runtime, input=str(covers), output=tmp_path / output
        )
    assert await _job_count(scoring_runtime) == 0


async def test_the_ray_engine_without_ray_says_how_to_install_it(
    scoring_runtime: Runtime,
    colour_model: Registered,
    covers: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed

    with pytest.raises(EngineUnavailable, match=r"pip install 'sleeve-inference\[ray\]'"):
        await create_scoring_job(runtime=scoring_runtime, input=str(covers), engine="ray")
    assert await _job_count(scoring_runtime) == 0
