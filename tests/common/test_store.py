"""Object-store contract: one suite over a local directory and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from servers import S3Server

from sleeve_common.exceptions import (
    InvalidKey,
    ObjectNotFound,
    StoreRefused,
    StoreUnavailable,
)
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore, ObstoreStore, cover_key, open_store

SHA = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
HOSTILE_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "..",
    ".",
    "a/../../escape",
    "covers/../../../escape",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "..\\escape",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "a/b#1",
    "x" * 1025,
    "é" * 513,  # 1026 bytes in UTF-8
    "bad\ud800surrogate",
]


def s3_settings(server: S3Server, monkeypatch: pytest.MonkeyPatch, url: str) -> Settings:
    """Settings for the S3 server, with the keys passed the way deployments pass them."""
    monkeypatch.setenv("SLEEVE_S3_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("SLEEVE_S3_SECRET_ACCESS_KEY", server.secret_key)
    return Settings(store_url=url, s3_endpoint=server.endpoint)


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    """A fresh, empty store: a directory under tmp_path, or a new prefix in the S3 bucket."""
    if request.param == "local":
        return open_store(Settings(store_url=f"file://{tmp_path / 'store'}"))
    server: S3Server = request.getfixturevalue("s3_server")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    return open_store(s3_settings(server, monkeypatch, f"s3://{server.bucket}/{prefix}"))


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_store_satisfies_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


async def test_put_get_roundtrip(store: ObjectStore) -> None:
    await store.put("covers/ab/one.jpg", b"\xff\xd8 jpeg bytes")
    assert await store.get("covers/ab/one.jpg") == b"\xff\xd8 jpeg bytes"


async def test_empty_object_roundtrip(store: ObjectStore) -> None:
    await store.put("empty.bin", b"")
    assert await store.get("empty.bin") == b""
    assert await store.exists("empty.bin")


async def test_overwrite_replaces_the_object(store: ObjectStore) -> None:
    await store.put("models/v1/model.onnx", b"first version, longer than the second")
    await store.put("models/v1/model.onnx", b"second")
    assert await store.get("models/v1/model.onnx") == b"second"
    assert await store.list("models/") == ["models/v1/model.onnx"]


async def test_exists(store: ObjectStore) -> None:
    assert not await store.exists("datasets/d1/split.json")
    await store.put("datasets/d1/split.json", b"{}")
    assert await store.exists("datasets/d1/split.json")
    # A prefix of a key is not an object.
    assert not await store.exists("datasets/d1")


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.put("a/b.txt", b"x")
    await store.delete("a/b.txt")
    assert not await store.exists("a/b.txt")
    await store.delete("a/b.txt")
    await store.delete("never/existed.txt")
    await store.put("a/c/d.txt", b"x")
    await store.delete("a/c")  # a prefix, not an object: nothing to delete
    assert await store.exists("a/c/d.txt")
    with pytest.raises(ObjectNotFound):
        await store.get("a/b.txt")


async def test_list_with_prefix(store: ObjectStore) -> None:
    keys = ["covers/ab/1.jpg", "covers/ab/2.jpg", "covers/cd/3.jpg", "coversheet.txt", "models/x"]
    for key in reversed(keys):
        await store.put(key, key.encode())
    assert await store.list() == sorted(keys)
    assert await store.list("") == sorted(keys)
    assert await store.list("covers/") == ["covers/ab/1.jpg", "covers/ab/2.jpg", "covers/cd/3.jpg"]
    assert await store.list("covers/a") == ["covers/ab/1.jpg", "covers/ab/2.jpg"]
    assert await store.list("covers/ab/2") == ["covers/ab/2.jpg"]
    assert await store.list("covers") == sorted(keys[:4])
    assert await store.list("nothing/") == []
    assert await store.list("covers/zz/") == []


async def test_get_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.get("covers/ff/missing.jpg")
    await store.put("covers/ff/present.jpg", b"x")
    with pytest.raises(ObjectNotFound):
        await store.get("covers/ff/missing.jpg")
    with pytest.raises(ObjectNotFound):
        await store.get("covers/ff")  # a prefix is not an object


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda key: repr(key)[:24])
async def test_hostile_keys_raise_invalid_key(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"owned")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.exists(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    assert await store.list() == []


@pytest.mark.parametrize("prefix", ["/etc", "../", "a/../", "a//", "a\\b", "a\x00", "x" * 1025])
async def test_hostile_list_prefix_raises_invalid_key(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await store.list(prefix)


async def test_local_hostile_keys_write_nothing_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "sandbox" / "store"
    store = ObstoreStore.local(root)
    for key in HOSTILE_KEYS:
        with pytest.raises(InvalidKey):
            await store.put(key, b"owned")
    assert [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*"))] == [
        "sandbox",
        "sandbox/store",
    ]


async def test_large_object_roundtrip(store: ObjectStore) -> None:
    data = os.urandom(20 * 1024 * 1024)
    await store.put("datasets/big.parquet", data)
    assert await store.get("datasets/big.parquet") == data
    assert await store.list("datasets/") == ["datasets/big.parquet"]


async def test_reader_sees_whole_objects_while_a_write_is_in_flight(store: ObjectStore) -> None:
    """Every read issued during an overwrite returns the old or the new object, never a mix."""
    old, new = b"o" * (6 * 1024 * 1024), b"n" * (12 * 1024 * 1024)
    await store.put("models/current.onnx", old)
    write = asyncio.create_task(store.put("models/current.onnx", new))
    seen = []
    while not write.done():
        data = await store.get("models/current.onnx")
        assert data in (old, new), f"torn read of {len(data)} bytes"
        seen.append(data == new)
    await write
    assert await store.get("models/current.onnx") == new
    assert seen, "no read overlapped the write"


async def test_local_put_never_exposes_a_partial_file(tmp_path: Path) -> None:
    """Watch the key's file from another thread: it only ever has the old or the new size."""
    store = ObstoreStore.local(tmp_path / "store")
    old, new = b"o" * 1024, os.urandom(64 * 1024 * 1024)
    await store.put("models/m.onnx", old)
    target = tmp_path / "store" / "models" / "m.onnx"
    sizes: set[int] = set()
    names: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            sizes.add(target.stat().st_size)
            names.update(p.name for p in target.parent.iterdir())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        await store.put("models/m.onnx", new)
    finally:
        stop.set()
        watcher.join()
    assert sizes <= {len(old), len(new)}
    assert target.read_bytes() == new
    # The bytes went to a staging file beside the target (then renamed), which listings hide.
    assert any(name.startswith("m.onnx#") for name in names)
    assert await store.list() == ["models/m.onnx"]


async def test_ping(store: ObjectStore) -> None:
    await store.ping()


async def test_local_ping_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    store = ObstoreStore.local(tmp_path / "store")
    await store.ping()
    (tmp_path / "store").rmdir()
    with pytest.raises(StoreUnavailable):
        await store.ping()


@pytest.mark.parametrize("operation", ["ping", "get", "put", "exists", "list"])
async def test_unreachable_s3_endpoint_raises_store_unavailable_quickly(
    closed_port: int, operation: str
) -> None:
    settings = Settings(
        store_url="s3://sleeve/prefix",
        s3_endpoint=f"http://127.0.0.1:{closed_port}",
        SLEEVE_S3_ACCESS_KEY_ID="test-key",
        SLEEVE_S3_SECRET_ACCESS_KEY="test-secret",
    )
    store = open_store(settings)
    calls = {
        "ping": store.ping,
        "get": lambda: store.get("covers/ab/x.jpg"),
        "put": lambda: store.put("covers/ab/x.jpg", b"x"),
        "exists": lambda: store.exists("covers/ab/x.jpg"),
        "list": lambda: store.list("covers/"),
    }
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await calls[operation]()
    assert time.monotonic() - started < 10


# How a store that answers can refuse, and what the error must say: (settings, reason).
REFUSALS = {
    "wrong secret key": ("secret", "(403 SignatureDoesNotMatch): the secret access key is wrong"),
    "unknown key id": ("key id", "(403 InvalidAccessKeyId): the server does not know the access"),
    "missing bucket": ("bucket", "(404 NoSuchBucket): the bucket does not exist"),
}
STORE_CALLS: dict[str, Callable[[ObjectStore], Awaitable[object]]] = {
    "ping": lambda store: store.ping(),
    "get": lambda store: store.get("covers/ab/x.jpg"),
    "put": lambda store: store.put("covers/ab/x.jpg", b"x"),
    "exists": lambda store: store.exists("covers/ab/x.jpg"),
    "list": lambda store: store.list("covers/"),
    "delete": lambda store: store.delete("covers/ab/x.jpg"),
}


@pytest.mark.parametrize(
    ("refusal", "operation"),
    [
        (refusal, operation)
        for refusal in REFUSALS
        for operation in STORE_CALLS
        # SeaweedFS creates a missing bucket on a PUT from an admin (AWS answers
        # NoSuchBucket), and HEAD and DELETE answers carry no error code to tell a missing
        # bucket from a missing object.
        if refusal != "missing bucket" or operation in ("ping", "get", "list")
    ],
)
async def test_a_store_that_answers_but_refuses_raises_store_refused(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, refusal: str, operation: str
) -> None:
    """Wrong keys and a missing bucket are ``StoreRefused`` naming the cause, at once: not
    ``StoreUnavailable`` (not retried), not ``ObjectNotFound`` (nothing is missing), and the
    message holds neither secret key."""
    what, reason = REFUSALS[refusal]
    wrong_secret = f"wrong-{uuid.uuid4().hex}"
    server = S3Server(
        s3_server.endpoint,
        s3_server.bucket,
        f"nobody-{uuid.uuid4().hex[:8]}" if what == "key id" else s3_server.access_key,
        wrong_secret if what == "secret" else s3_server.secret_key,
    )
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}" if what == "bucket" else server.bucket
    store = open_store(s3_settings(server, monkeypatch, f"s3://{bucket}/refused"))
    started = time.monotonic()
    with pytest.raises(StoreRefused) as raised:
        await STORE_CALLS[operation](store)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    if operation != "exists":
        assert reason in message
    else:  # a HEAD answer has no body: only its status
        assert "the store refuses (403): access denied" in message
    assert f"s3://{bucket}/refused" in message
    assert wrong_secret not in message and s3_server.secret_key not in message


async def test_s3_prefixes_isolate_stores(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    first = open_store(s3_settings(s3_server, monkeypatch, f"s3://{s3_server.bucket}/{tag}/a"))
    second = open_store(s3_settings(s3_server, monkeypatch, f"s3://{s3_server.bucket}/{tag}/ab"))
    whole = open_store(s3_settings(s3_server, monkeypatch, f"s3://{s3_server.bucket}/{tag}"))
    await first.put("k.txt", b"first")
    await second.put("k.txt", b"second")
    assert await first.list() == ["k.txt"]
    assert await second.get("k.txt") == b"second"
    assert await whole.list() == ["a/k.txt", "ab/k.txt"]


def test_describe_s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(s3_settings(s3_server, monkeypatch, f"s3://{s3_server.bucket}/pre/fix/"))
    assert store.describe() == f"s3://{s3_server.bucket}/pre/fix at {s3_server.endpoint}"
    bare = open_store(s3_settings(s3_server, monkeypatch, f"s3://{s3_server.bucket}"))
    assert bare.describe() == f"s3://{s3_server.bucket} at {s3_server.endpoint}"


def test_open_store_relative_file_url_creates_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(Settings(store_url="file://./var/store"))
    assert (tmp_path / "var" / "store").is_dir()
    assert store.describe() == f"file://{Path.cwd() / 'var' / 'store'}"


def test_open_store_absolute_file_url(tmp_path: Path) -> None:
    store = open_store(Settings(store_url=f"file://{tmp_path}/abs/store"))
    assert (tmp_path / "abs" / "store").is_dir()
    assert store.describe() == f"file://{tmp_path}/abs/store"


def test_cover_key_is_content_addressed() -> None:
    assert cover_key(SHA) == f"covers/ab/{SHA}.jpg"
    assert cover_key(SHA, "png") == f"covers/ab/{SHA}.png"


@pytest.mark.parametrize(
    "sha",
    [SHA.upper(), SHA[:-1], SHA + "0", "g" * 64, "", f"../{SHA[3:]}", SHA[:32] + "/" + SHA[33:]],
)
def test_cover_key_rejects_anything_but_a_sha256(sha: str) -> None:
    with pytest.raises(InvalidKey):
        cover_key(sha)


@pytest.mark.parametrize("extension", ["", ".jpg", "jp/g", "../x", "JPG", "a" * 17])
def test_cover_key_rejects_bad_extensions(extension: str) -> None:
    with pytest.raises(InvalidKey):
        cover_key(SHA, extension)
