"""The API key check: one constant-time comparison decides, and no key makes it fail (issue 9).

``hmac.compare_digest`` is replaced by a spy that records what it compares and then answers
as told: as the real one, always yes, always no. Forcing its answer proves that it alone
decides: were the key also compared with ``==``, checked for length or prefix first, a
forced "yes" would not let a wrong key in. Every refusal is a 401 in the error schema.
"""

from __future__ import annotations

import ast
import asyncio
import hmac
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from support import make_settings

from sleeve_common.db import upgrade_database
from sleeve_inference import deps
from sleeve_inference.app import create_app

from .harness import serve

ASCII_KEY = "a-real-test-key-1234567890"
# Latin-1 letters, and a character no single byte holds.
NON_ASCII_KEY = "clé-d'accès-sleeve-✓-2026"
# A write that gets past the key check answers 404: there is no model v9.
WRITE = "/v1/models/v9/promote"


def wrong_keys(key: str) -> dict[str, bytes]:
    """Header values that are not ``key``, as the bytes a client sends."""
    utf8 = key.encode()
    candidates = {
        "same length": bytes(reversed(utf8)),
        "one byte short": utf8[:-1],
        "one byte more": utf8 + b"x",
        "a prefix": utf8[:4],
        "10 KB": utf8 * (10_000 // len(utf8)),
        "Latin-1 bytes": b"cl\xe9-d'acc\xe8s-sleeve-2026",
        "other UTF-8": "ключ-sleeve-✓-2026-ещё".encode(),
        "high bytes": b"\xff" * len(utf8),
        # What the old check compared for a key that is not ASCII.
        "the key's UTF-8 read as Latin-1, in UTF-8": utf8.decode("latin-1").encode(),
    }
    return {name: value for name, value in candidates.items() if value != utf8}


@pytest.fixture(params=["ascii", "non-ascii"])
def key(request: pytest.FixtureRequest) -> str:
    return ASCII_KEY if request.param == "ascii" else NON_ASCII_KEY


@pytest.fixture
async def api(tmp_path: Path, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API on SQLite with ``key`` as its key and no model (writes still check the key)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sleeve.db'}"
    await asyncio.to_thread(upgrade_database, url)
    async with serve(create_app(make_settings(tmp_path, url, api_key=key))) as client:
        yield client


class CompareSpy:
    """``hmac.compare_digest`` that records its arguments and answers as ``answer`` says."""

    def __init__(self, answer: Callable[[bytes, bytes], bool]) -> None:
        self.answer = answer
        self.calls: list[tuple[object, object]] = []

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((a, b))
        return self.answer(a, b)


def _spy(monkeypatch: pytest.MonkeyPatch, answer: Callable[[bytes, bytes], bool]) -> CompareSpy:
    spy = CompareSpy(answer)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    return spy


async def test_the_key_is_compared_in_constant_time_and_only_there(
    api: httpx.AsyncClient, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hmac.compare_digest
    spy = _spy(monkeypatch, real)
    expected = key.encode()
    sent = {"the key": expected, **wrong_keys(key)}
    for name, value in sent.items():
        spy.calls.clear()
        answer = await api.post(WRITE, headers={b"X-API-Key": value})
        if name == "the key":
            assert answer.status_code == 404, answer.text
        else:
            assert answer.status_code == 401, (name, answer.text)
            assert answer.json() == {"error": {"code": "unauthorized", "message": "wrong API key"}}
        # The bytes the client sent, against the key's UTF-8 bytes: nothing else.
        assert spy.calls == [(value, expected)], name

    # Forced "yes": every wrong key gets in, so nothing but compare_digest refuses one.
    spy.answer = lambda _a, _b: True
    for name, value in wrong_keys(key).items():
        answer = await api.post(WRITE, headers={b"X-API-Key": value})
        assert answer.status_code == 404, (name, answer.text)
    # Forced "no": the right key is refused, so nothing but compare_digest lets it in.
    spy.answer = lambda _a, _b: False
    assert (await api.post(WRITE, headers={b"X-API-Key": expected})).status_code == 401

    # A missing or empty key is refused before any comparison.
    spy.calls.clear()
    for headers in ({}, {b"X-API-Key": b""}):
        missing = await api.post(WRITE, headers=headers)
        assert missing.status_code == 401
        assert missing.json()["error"]["message"] == "send the API key in the X-API-Key header"
    assert spy.calls == []


async def test_keys_of_every_length_and_encoding_are_refused_without_error(
    api: httpx.AsyncClient, key: str
) -> None:
    """With the real ``compare_digest``: 401, never a 500 (``compare_digest`` raises
    ``TypeError`` for a ``str`` that is not ASCII, were the key ever compared as text)."""
    for name, value in wrong_keys(key).items():
        answer = await api.post(WRITE, headers={b"X-API-Key": value})
        assert answer.status_code == 401, (name, answer.text)
        assert answer.json()["error"]["code"] == "unauthorized"
    assert (await api.post(WRITE, headers={b"X-API-Key": key.encode()})).status_code == 404


def test_the_key_is_never_compared_with_an_operator() -> None:
    """Structural: in the key check, the header's value and the key meet only as arguments of
    ``hmac.compare_digest`` (no ``==``, ``!=``, ``in``, ``startswith`` or ``len``)."""
    tree = ast.parse(inspect.getsource(deps))
    functions = {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in ("_require_api_key", "_is_the_key")
    }
    assert set(functions) == {"_require_api_key", "_is_the_key"}
    secrets = {"given", "sent", "key"}
    compares = 0
    for function in functions.values():
        for node in ast.walk(function):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if isinstance(node, ast.Compare):
                # Only "is None" tests may touch the header's value.
                assert not names & secrets or all(
                    isinstance(op, ast.Is | ast.IsNot) for op in node.ops
                ), ast.unparse(node)
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                if called == "hmac.compare_digest":
                    compares += 1
                elif called in ("len", "any", "all") or called.endswith(
                    (".startswith", ".endswith", ".find", ".count", ".index")
                ):
                    assert not names & secrets, ast.unparse(node)
    assert compares == 1
