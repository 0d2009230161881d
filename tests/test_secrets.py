"""No secret leaves the stack (issue 9, "Auth and secrets"): the API key, the S3 secret key,
the Spotify client secret and the PostgreSQL password never appear in what the processes
print, in any answer (bodies and headers, error answers, ``/metrics``), nor in what the CLI
says, even when each one is refused.

`sleeve run` (the API and the three workers as processes) runs on the real PostgreSQL, with a
role of its own whose password needs percent-encoding, and on the real S3 server, at DEBUG,
so the access log and every debug line is in its console. A Spotify scrape is queued over the
API against a local Spotify that refuses the credentials; a corrupted registry row forces a
500 with its traceback; the CLI then fails on purpose (a wrong password, a malformed URL,
wrong S3 keys, a server that cannot start). Everything captured is searched for each secret
as given, percent-encoded (both ways), in base64, and the Spotify pair as its Basic header.

The S3 access key id is no secret (AWS sends it in clear in every signed request) and here
names the test server's bucket too: the wrong-key run gives it a distinctive value instead.
``SLEEVE_MUSICBRAINZ_CONTACT`` is no secret either (MusicBrainz is sent it in every request).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, quote_plus

import asyncpg
import httpx
import pytest
from inference.harness import image_bytes, register_model
from scraper.fakes import CLIENT_ID, FakeCdn, FakeSpotify, serve
from servers import S3Server, free_ports
from sqlalchemy import text
from sqlalchemy.engine import make_url

from sleeve_common.db import Database
from sleeve_common.store import ObstoreStore

API_KEY = "sk-Sleeve/Api+Key=Zq81x7Lm"
WRONG_API_KEY = "wrong/Api+Key=Zq81x7Lm-9"  # a client's wrong key is no business of the log
SPOTIFY_SECRET = "sp-Secret/Zq81+x=Abc0Def"
PG_PASSWORD = "pg-Pass/w0rd+Zq81@x:y"
WRONG_PG_PASSWORD = "pg-Wrong/w0rd+Zq81@x"
WRONG_S3_KEY_ID = "AKIAZQ81WRONGKEYID77"
WRONG_S3_SECRET = "wrong-S3/Secret+Zq81x=77"


def _forms(secret: str) -> list[bytes]:
    """``secret`` as given, percent-encoded (path and form style), and in base64."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    forms.add(base64.b64encode(secret.encode()).decode())
    return [form.encode() for form in forms]


def _leaks(captured: dict[str, bytes], secrets: dict[str, str]) -> list[str]:
    needles = {name: _forms(value) for name, value in secrets.items()}
    pair = f"{CLIENT_ID}:{SPOTIFY_SECRET}".encode()
    needles["spotify basic header"] = [base64.b64encode(pair), pair]
    return [
        f"{name} in {where}"
        for where, data in captured.items()
        for name, forms in needles.items()
        if any(form in data for form in forms)
    ]


@contextlib.asynccontextmanager
async def _database_with_its_own_role(admin_url: str) -> AsyncIterator[str]:
    """A new database owned by a new role whose password is ``PG_PASSWORD``; its plain
    ``postgresql://`` URL (the form an operator writes), the password percent-encoded."""
    admin = make_url(admin_url)
    suffix = uuid.uuid4().hex[:10]
    role, name = f"r_{suffix}", f"s_{suffix}"
    connection = await asyncpg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        password=admin.password,
        database=admin.database,
    )
    try:
        await connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PG_PASSWORD}'")
        await connection.execute(f'CREATE DATABASE "{name}" OWNER {role}')
        yield f"postgresql://{role}:{quote(PG_PASSWORD, safe='')}@{admin.host}:{admin.port}/{name}"
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f"DROP ROLE IF EXISTS {role}")
        await connection.close()


async def _until(probe: Callable[[], Awaitable[bool]], what: str, *, timeout_s: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, f"no {what} within {timeout_s} s"
        await asyncio.sleep(0.2)


def _sleeve(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sleeve_common", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(300)
async def test_no_secret_reaches_logs_answers_metrics_or_the_cli(
    tmp_path: Path, postgres_url: str, s3_server: S3Server
) -> None:
    captured: dict[str, bytes] = {}

    def keep(answer: httpx.Response) -> httpx.Response:
        request = answer.request
        head = "".join(f"{k}: {v}\n" for k, v in answer.headers.items())
        captured[f"{request.method} {request.url.raw_path.decode()} #{len(captured)}"] = (
            f"{answer.status_code}\n{head}\n".encode() + answer.content
        )
        return answer

    prefix = f"secrets-{uuid.uuid4().hex[:8]}"
    async with _database_with_its_own_role(postgres_url) as database_url:
        with serve(FakeSpotify(FakeCdn())) as spotify:
            port = free_ports(1)[0]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SLEEVE_", "AWS_"))}
            env |= {
                "SLEEVE_PORT": str(port),
                "SLEEVE_DATABASE_URL": database_url,
                "SLEEVE_STORE_URL": f"s3://{s3_server.bucket}/{prefix}",
                "SLEEVE_S3_ENDPOINT": s3_server.endpoint,
                "AWS_ACCESS_KEY_ID": s3_server.access_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                "SLEEVE_API_KEY": API_KEY,
                "SLEEVE_SPOTIFY_CLIENT_ID": CLIENT_ID,
                "SLEEVE_SPOTIFY_CLIENT_SECRET": SPOTIFY_SECRET,
                "SLEEVE_SPOTIFY_AUTH_URL": f"{spotify.base_url}/api/token",
                "SLEEVE_SPOTIFY_API_BASE_URL": f"{spotify.base_url}/v1",
                "SLEEVE_MUSICBRAINZ_CONTACT": "secrets-test@example.org",
                "SLEEVE_DATA_DIR": str(tmp_path / "var"),
                "SLEEVE_LOG_LEVEL": "DEBUG",
                "SLEEVE_BOOTSTRAP": "false",
                "SLEEVE_WORKER_POLL_SECONDS": "0.2",
            }
            console = tmp_path / "console.log"
            with console.open("wb") as out:
                stack = subprocess.Popen(
                    [sys.executable, "-m", "sleeve_common", "run"],
                    cwd=tmp_path,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                await _exercise_the_stack(
                    f"http://127.0.0.1:{port}", database_url, s3_server, prefix, keep
                )
            finally:
                os.killpg(stack.pid, signal.SIGINT)
                try:
                    stack.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(stack.pid, signal.SIGKILL)
                    stack.wait()
            captured["sleeve run console"] = console.read_bytes()
            # The secret was in play: it went to Spotify's token endpoint, and only there.
            sent = {hit.authorization for hit in spotify.hits if hit.path == "/api/token"}
            basic = base64.b64encode(f"{CLIENT_ID}:{SPOTIFY_SECRET}".encode()).decode()
            assert sent == {f"Basic {basic}"}

        captured |= await asyncio.to_thread(_cli_runs, env, database_url)

    console_text = captured["sleeve run console"].decode(errors="replace")
    assert stack.returncode in (0, 130), console_text[-3000:]
    assert '"POST /v1/models/v1/promote" 401' in console_text  # the access log was captured
    assert "spotify refused the client credentials" in console_text
    assert "unhandled error answering GET /v1/models" in console_text
    secrets = {
        "API key": API_KEY,
        "wrong API key": WRONG_API_KEY,
        "S3 secret key": s3_server.secret_key,
        "wrong S3 key id": WRONG_S3_KEY_ID,
        "wrong S3 secret": WRONG_S3_SECRET,
        "Spotify secret": SPOTIFY_SECRET,
        "PostgreSQL password": PG_PASSWORD,
        "wrong PostgreSQL password": WRONG_PG_PASSWORD,
    }
    assert _leaks(captured, secrets) == []
    assert len(captured) > 40


async def _exercise_the_stack(
    base: str,
    database_url: str,
    s3: S3Server,
    prefix: str,
    keep: Callable[[httpx.Response], httpx.Response],
) -> None:
    """Every kind of answer the API gives, right and wrong keys, a refused Spotify scrape and
    a real 500, each answer kept."""
    right, wrong = {"X-API-Key": API_KEY}, {"X-API-Key": WRONG_API_KEY}
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:

        async def healthy() -> bool:
            try:
                return (await api.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await _until(healthy, "/healthz")
        keep(await api.get("/readyz"))  # 503: no model yet
        db_url = make_url(database_url).set(drivername="postgresql+asyncpg")
        db = Database(db_url.render_as_string(hide_password=False))
        try:
            store = ObstoreStore.s3(
                s3.bucket,
                prefix=prefix,
                endpoint=s3.endpoint,
                access_key_id=s3.access_key,
                secret_access_key=s3.secret_key,
            )
            await register_model(db, store)

            async def ready() -> bool:
                return keep(await api.get("/readyz")).status_code == 200

            await _until(ready, "/readyz with the model")
            png = {"content-type": "image/png"}
            for path in ("/healthz", "/", "/docs", "/openapi.json", "/v2/health/ready"):
                keep(await api.get(path))
            for path in ("/v1/models", "/v1/models/v1", "/v1/models/v9", "/v2/models/sleeve"):
                keep(await api.get(path))
            keep(await api.get("/v1/models/v1/confusion-matrix.png"))
            keep(await api.get("/v1/models/%00"))
            assert (
                keep(
                    await api.post("/v1/predict", content=image_bytes((255, 0, 0)), headers=png)
                ).status_code
                == 200
            )
            keep(await api.post("/v1/predict", json={"files": []}))
            keep(await api.post("/v1/predict?top_k=0", content=b"", headers=png))
            keep(await api.request("TRACE", "/healthz"))

            assert keep(await api.post("/v1/models/v1/promote")).status_code == 401
            assert keep(await api.post("/v1/models/v1/promote", headers=wrong)).status_code == 401
            assert keep(await api.post("/v1/models/v1/promote", headers=right)).status_code == 200
            keep(await api.post("/v1/training-runs", json={"dataset": "none"}, headers=wrong))
            keep(await api.post("/v1/training-runs", json={"dataset": "none"}, headers=right))
            keep(await api.post("/v1/scoring-jobs", json={"input": "albums:"}, headers=wrong))
            keep(await api.post("/v1/scoring-jobs", json={"input": "albums:"}, headers=right))

            scrape = {"source": "spotify", "genres": ["jazz"], "per_genre": 2}
            assert (
                keep(await api.post("/v1/scrape-runs", json=scrape, headers=wrong)).status_code
                == 401
            )
            queued = keep(await api.post("/v1/scrape-runs", json=scrape, headers=right))
            assert queued.status_code == 202, queued.text

            async def scrape_failed() -> bool:
                job = keep(await api.get(f"/v1/scrape-runs/{queued.json()['id']}")).json()
                return job["status"] == "failed"

            await _until(scrape_failed, "the refused Spotify scrape to fail")
            keep(await api.get("/v1/scrape-runs"))

            # A real 500: the registry row corrupted behind the API's back, then mended.
            async with db.session() as session:
                await session.execute(text("UPDATE model_versions SET metrics = '[1]'"))
            assert keep(await api.get("/v1/models")).status_code == 500
            async with db.session() as session:
                await session.execute(text("UPDATE model_versions SET metrics = '{}'"))
            keep(await api.get("/v1/models"))
            keep(await api.get("/metrics"))
        finally:
            await db.aclose()


def _cli_runs(env: dict[str, str], database_url: str) -> dict[str, bytes]:
    """What the CLI says, right and wrong: its output on every path, exit codes checked."""
    url = make_url(database_url)
    wrong_password = url.set(password=WRONG_PG_PASSWORD).render_as_string(hide_password=False)
    malformed = database_url.replace(f":{url.port}/", ":not-a-port/")
    wrong_s3 = {"AWS_ACCESS_KEY_ID": WRONG_S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": WRONG_S3_SECRET}
    runs = {
        "sleeve check": (("check",), {}, 0),
        "sleeve check, wrong password": (("check",), {"SLEEVE_DATABASE_URL": wrong_password}, 1),
        "sleeve check, malformed URL": (("check",), {"SLEEVE_DATABASE_URL": malformed}, 2),
        "sleeve check, wrong S3 keys": (("check",), wrong_s3, 1),
        "sleeve serve, wrong password": (("serve",), {"SLEEVE_DATABASE_URL": wrong_password}, 3),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:  # each is seconds of imports
        results = pool.map(lambda run: _sleeve(*run[0], env=env | run[1]), runs.values())
        done = dict(zip(runs, results, strict=True))
    captured = {}
    for name, (_, _, code) in runs.items():
        output = done[name].stdout + done[name].stderr
        assert done[name].returncode == code, output
        captured[name] = output.encode()
    check = captured["sleeve check"].decode()
    assert f"{url.username}:***@" in check and "ok (s3://" in check
    assert "password authentication failed" in captured["sleeve check, wrong password"].decode()
    assert "SLEEVE_DATABASE_URL" in captured["sleeve check, malformed URL"].decode()
    assert "403" in captured["sleeve check, wrong S3 keys"].decode()
    return captured
