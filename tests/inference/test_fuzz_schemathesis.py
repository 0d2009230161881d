"""The live OpenAPI spec holds: schemathesis against ``sleeve serve`` on loopback (issue 9).

A real uvicorn server on a free loopback port serves the app with the tiny model registered
as v1, an API key and a local store, once on SQLite and once on the real PostgreSQL.
Schemathesis loads the spec the server publishes at ``/openapi.json`` and tests every
operation in it, with the key on both databases and without it on SQLite, through its
examples, coverage (boundary values, missing and wrong types, undeclared methods) and fuzzing
phases, in positive and negative modes, with all of its checks: no 5xx, every
status, content type, header and body as the spec declares them, schema-invalid data
refused, schema-valid data accepted, 405 with ``Allow`` for an undeclared method. Any failed
check fails the operation's test. Bounded and repeatable: a fixed seed, derandomized, at
most 25 fuzzed cases per operation on top of the spec's examples and the coverage phase's
deterministic cases; no deadline (a slow answer is no failure here, the load tests judge
time). On two busy cores: about 70 s on SQLite (both runs), 40 s on PostgreSQL.

No operation is excluded. Writes with the key really run: they queue scrape, training and
scoring jobs (no worker takes them), cancel them, and promote v1 (already the production
version, so it stays served). ``/v1/predict/urls`` is fuzzed too: generated URLs are refused
by the SSRF guard or name hosts that do not resolve (each URL's fetch is bounded by a 2 s
timeout all the same).

Schema-valid data may still be refused where the refusal depends on something the schema
cannot express; ``ALSO_REFUSED`` lists those statuses per operation, each with its reason
(schemathesis' own default for the rest: 2xx, 3xx, 401, 403, 404, 409, 429, 5xx, and 5xx
still fails ``not_a_server_error``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import schemathesis
from schemathesis import Case
from support import fresh_postgres_database, make_settings

from sleeve_common.db import Database, upgrade_database
from sleeve_common.store import open_store
from sleeve_inference.app import create_app

from .harness import API_KEY, LIMITS, register_model, serve_on_socket

MAX_EXAMPLES = 25
SEED = 20260509

_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
ALSO_REFUSED: dict[str, tuple[list[str], str]] = {
    "POST /v1/predict": (
        ["413", "422"],
        "a file must decode to an image, within the pixel budget and the per-request image "
        "count (settings); the schema can only say `binary`",
    ),
    "POST /v1/predict/urls": (
        ["413"],
        "the URL count is bounded by SLEEVE_MAX_IMAGES_PER_REQUEST (4 here), a setting; the "
        "schema states the hard cap, 1024",
    ),
    "POST /v1/scrape-runs": (
        ["422"],
        "a path must exist inside SLEEVE_IMPORT_ROOT, a source's credentials must be set and "
        "a genre name needs a letter or digit",
    ),
    "POST /v1/training-runs": (["422"], "the dataset must exist, or `build_dataset` be given"),
    "POST /v1/scoring-jobs": (
        ["422"],
        "the input must select images in the store or albums in the database, and the model "
        "must be registered",
    ),
    "POST /v2/models/{model_name}/infer": (
        ["400", "413"],
        "V2's tensor contract: the input's name, datatype, shape and data must agree with the "
        "model and hold real images (V2 answers 400, not 422)",
    ),
    "POST /v2/models/{model_name}/versions/{model_version}/infer": (
        ["400", "413"],
        "as for the unversioned inference",
    ),
}

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "operations": [
            {
                "include-name": name,
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, *statuses]}
                },
            }
            for name, (statuses, _why) in ALSO_REFUSED.items()
        ],
    }
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def fuzz_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A migrated database for the module: a SQLite file, or a new one on the real PostgreSQL
    (where strings holding NUL, ids past int64 and lock waits fail differently)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz-db') / 'sleeve.db'}"
        await asyncio.to_thread(upgrade_database, url)  # Alembic runs its own loop
        yield url
        return
    async with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture(scope="module")
async def live_api(
    fuzz_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """``http://host:port`` of the app on uvicorn, the tiny model registered as v1."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    (tmp_path / "imports").mkdir()
    settings = make_settings(
        tmp_path,
        fuzz_database_url,
        api_key=API_KEY,
        import_root=tmp_path / "imports",
        url_fetch_timeout_s=2,
        **LIMITS,
    )
    db = Database(fuzz_database_url)
    try:
        await register_model(db, open_store(settings))
    finally:
        await db.aclose()
    async with serve_on_socket(create_app(settings)) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
def live_spec(live_api: str) -> schemathesis.BaseSchema:
    """The spec the running server publishes."""
    return schemathesis.openapi.from_url(f"{live_api}/openapi.json", config=CONFIG)


spec = schemathesis.pytest.from_fixture("live_spec")


@spec.parametrize()
def test_every_operation_with_the_api_key(case: Case) -> None:
    case.call_and_validate(headers={"X-API-Key": API_KEY})


# Without the key every write is refused (401) before it reaches the database, and the reads
# are the same as with the key: this run and the next test need one database only.
SQLITE_ONLY = pytest.mark.parametrize("fuzz_database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
@spec.parametrize()
def test_every_operation_without_a_key(case: Case) -> None:
    case.call_and_validate()


@SQLITE_ONLY
def test_every_allowance_names_an_operation_of_the_spec(
    live_spec: schemathesis.BaseSchema,
) -> None:
    """An allowance left behind by a renamed operation would silently allow nothing."""
    labels = {result.ok().label for result in live_spec.get_all_operations()}
    assert set(ALSO_REFUSED) <= labels
