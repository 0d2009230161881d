"""Hostile input through the API (issue 9, "hostile corpus"), every file generated here.

Huge and malformed EXIF, JPEG and PNG headers built to cost CPU, polyglots, zip and gzip bombs,
SVG with external entities; SQL-like, NUL, control, very long and non-UTF-8 strings in every
text field of the JSON bodies, in query and path parameters, and in headers. Each gets a
precise 4xx (or 200 for a polyglot that is a valid image), never a 500; the server answers the
next request, and nothing stored is lost (row counts before and after).

What `test_api.py` and `test_predict.py` already try (truncated files, decompression bombs by
header, oversized bodies, a hostile ``X-Request-ID``) is not repeated here.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import socket
import struct
import zipfile
import zlib
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from PIL import Image
from scraper.fakes import FakeServer, serve
from sqlalchemy import func, select

from sleeve_common.db import Database
from sleeve_common.models import Album, Dataset, Job, ModelVersion, ScoringJob, ScrapeRun
from sleeve_common.settings import Settings
from sleeve_common.store import ObjectStore
from sleeve_inference.app import create_app

from .harness import API_KEY, image_bytes, serve_on_socket

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

KEY = {"X-API-Key": API_KEY}
RED = (255, 0, 0)
_TABLES = (Job, ScrapeRun, Album, Dataset, ModelVersion, ScoringJob)


async def row_counts(db: Database) -> dict[str, int]:
    async with db.session() as session:
        return {
            table.__tablename__: int(await session.scalar(select(func.count()).select_from(table)))
            for table in _TABLES
        }


async def assert_still_serving(api: httpx.AsyncClient) -> None:
    answer = await api.post(
        "/v1/predict", content=image_bytes(RED), headers={"content-type": "image/png"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["top_genre"] == "country"


# --- the image corpus ----------------------------------------------------------------------


def red_jpeg(**options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), RED).save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def with_segments(jpeg: bytes, *segments: tuple[int, bytes]) -> bytes:
    """``jpeg`` with these (marker, payload) segments right after its SOI."""
    encoded = b"".join(
        b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload
        for marker, payload in segments
    )
    return jpeg[:2] + encoded + jpeg[2:]


def tiff_block(entries: list[tuple[int, int, int, bytes]], tail: bytes = b"") -> bytes:
    """A little-endian TIFF header and one IFD of (tag, type, count, 4-byte value) entries."""
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHI", *entry[:3]) + entry[3] for entry in entries)
    return b"II*\x00\x08\x00\x00\x00" + ifd + b"\x00\x00\x00\x00" + tail


ORIENTATION_6 = (0x0112, 3, 1, struct.pack("<HH", 6, 0))


def huge_exif() -> bytes:
    """A 65,000-byte APP1 EXIF block: orientation 6 and a 64 KB ImageDescription."""
    description = b"A" * 64_900 + b"\x00"
    offset = 8 + 2 + 2 * 12 + 4  # the description follows the IFD
    entries = [ORIENTATION_6, (0x010E, 2, len(description), struct.pack("<I", offset))]
    entries.sort(key=lambda entry: entry[0])
    return with_segments(red_jpeg(), (0xE1, b"Exif\x00\x00" + tiff_block(entries, description)))


def many_app_segments(count: int, size: int) -> bytes:
    return with_segments(red_jpeg(), *[(0xE2 + n % 13, b"x" * size) for n in range(count)])


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def red_png_with_chunks(*chunks: bytes) -> bytes:
    png = image_bytes(RED)
    return png[:33] + b"".join(chunks) + png[33:]  # after the 8-byte signature and IHDR


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr(name, data)
    return buffer.getvalue()


ZIP_BOMB = zipped("zeros.bin", b"\x00" * 50_000_000)  # 49 KB, 50 MB inside
GZIP_BOMB = gzip.compress(b"\x00" * 50_000_000, compresslevel=9)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"


def xxe_svg(url: str) -> bytes:
    return (
        f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY web SYSTEM "{url}/steal">'
        '<!ENTITY file SYSTEM "file:///etc/passwd">]>'
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        "<text>&web;&file;</text></svg>"
    ).encode()


# (id, body, content type, status, code, message fragment); 200 means "a red cover".
IMAGES: list[tuple[str, bytes, str, int, str, str]] = [
    ("exif-65kb", huge_exif(), "image/jpeg", 200, "", ""),
    ("app-segments-900", many_app_segments(900, 180), "image/jpeg", 200, "", ""),
    ("app-segments-200kb-before-exif", b"", "image/jpeg", 200, "", ""),  # built below
    (
        "exif-tag-of-the-wrong-type",  # was a 500: Pillow could not write the EXIF back
        with_segments(
            red_jpeg(),
            (0xE1, b"Exif\x00\x00" + tiff_block([ORIENTATION_6, (0x0152, 2, 4, b"abc\x00")])),
        ),
        "image/jpeg",
        200,
        "",
        "",
    ),
    (
        "exif-bad-tiff-header-png",  # was a 500: SyntaxError reading the EXIF
        red_png_with_chunks(png_chunk(b"eXIf", b"MM\x00\xe1\x00\x00\x00\x08\x00\x00")),
        "image/png",
        200,
        "",
        "",
    ),
    (
        "jpeg-1200-empty-segments",
        many_app_segments(1_200, 0),
        "image/jpeg",
        422,
        "invalid_image",
        "more than 1000 JPEG segments",
    ),
    (
        "jpeg-100kb-padding",
        red_jpeg()[:2] + b"\xff" * 100_000 + red_jpeg()[2:],
        "image/jpeg",
        422,
        "invalid_image",
        "bytes of padding",
    ),
    (
        "png-1200-empty-chunks",
        red_png_with_chunks(*[png_chunk(b"abCd", b"")] * 1_200),
        "image/png",
        422,
        "invalid_image",
        "more than 1000 PNG chunks",
    ),
    ("jpeg+zip", red_jpeg() + zipped("evil.sh", b"rm -rf /\n"), "image/jpeg", 200, "", ""),
    ("jpeg+html", with_segments(red_jpeg(), (0xFE, HTML)) + HTML, "image/jpeg", 200, "", ""),
    ("jpeg+pdf", with_segments(red_jpeg(), (0xFE, PDF)) + PDF, "image/jpeg", 200, "", ""),
    ("png+zip", image_bytes(RED) + zipped("a.txt", b"a"), "image/png", 200, "", ""),
    ("pdf-holding-a-jpeg", PDF + red_jpeg(), "image/jpeg", 422, "invalid_image", "not a recogn"),
    ("zip-bomb", ZIP_BOMB, "image/png", 422, "invalid_image", "not a recognised image format"),
    ("gzip-bomb", GZIP_BOMB, "image/png", 422, "invalid_image", "not a recognised image format"),
]


def _app_segments_before_exif() -> bytes:
    """Orientation 6 in an EXIF block after 200 KB of APP2 segments (past the 64 KiB that
    was searched for one), within the 200,000-byte upload limit."""
    jpeg = red_jpeg(exif=tiff_block([ORIENTATION_6]))
    exif_at = jpeg.index(b"\xff\xe1")
    padding = b"".join(b"\xff\xe2" + struct.pack(">H", 33_002) + b"p" * 33_000 for _ in range(2))
    return jpeg[:exif_at] + padding + jpeg[exif_at:]


IMAGES[2] = (*IMAGES[2][:1], _app_segments_before_exif(), *IMAGES[2][2:])


@sqlite_only
@pytest.mark.parametrize(
    ("data", "content_type", "status", "code", "fragment"),
    [case[1:] for case in IMAGES],
    ids=[case[0] for case in IMAGES],
)
@pytest.mark.parametrize("framing", ["multipart", "raw"])
async def test_hostile_images_get_a_precise_answer(
    api: httpx.AsyncClient,
    registry: tuple[Database, ObjectStore],
    framing: str,
    data: bytes,
    content_type: str,
    status: int,
    code: str,
    fragment: str,
) -> None:
    before = await row_counts(registry[0])
    if framing == "raw":
        answer = await api.post("/v1/predict", content=data, headers={"content-type": content_type})
    else:
        answer = await api.post("/v1/predict", files=[("files", ("x", data, content_type))])

    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json()["predictions"][0]["top_genre"] == "country"
    else:
        assert answer.json()["error"]["code"] == code
        assert fragment in answer.json()["error"]["message"]
    await assert_still_serving(api)
    assert await row_counts(registry[0]) == before


@sqlite_only
async def test_svg_external_entities_are_never_fetched(api: httpx.AsyncClient) -> None:
    with serve(FakeServer()) as listener:
        svg = xxe_svg(listener.base_url)
        for content_type in ("image/svg+xml", "image/png"):
            answer = await api.post("/v1/predict", files=[("files", ("a.svg", svg, content_type))])
            assert answer.status_code == 422, answer.text
            assert "not a recognised image format" in answer.json()["error"]["message"]
            assert "root:" not in answer.text
        raw = await api.post("/v1/predict", content=svg, headers={"content-type": "image/svg+xml"})
        assert raw.status_code == 415, raw.text
        assert listener.hits == []
    await assert_still_serving(api)


@sqlite_only
@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/v1/predict", gzip.compress(image_bytes(RED)), "image/png"),
        ("/v1/predict", GZIP_BOMB, "image/png"),
        (
            "/v1/predict/urls",
            gzip.compress(b'{"urls": ["http://10.0.0.7/a.png"]}'),
            "application/json",
        ),
        ("/v1/predict/urls", gzip.compress(b" " * 50_000_000), "application/json"),
        ("/v1/scrape-runs", gzip.compress(b'{"source": "itunes"}'), "application/json"),
        ("/v2/models/sleeve/infer", GZIP_BOMB, "application/json"),
    ],
    ids=["png", "bomb-as-png", "json", "bomb-as-json", "scrape", "v2-bomb"],
)
@pytest.mark.parametrize("coding", ["gzip", "deflate, gzip", "br"])
async def test_compressed_bodies_are_refused_unread(
    api: httpx.AsyncClient,
    registry: tuple[Database, ObjectStore],
    path: str,
    body: bytes,
    content_type: str,
    coding: str,
) -> None:
    """Nothing inflates a request body: a Content-Encoding gets 415 naming it (V2 in its own
    body), where a gzip-compressed image was "not a recognised image format"."""
    before = await row_counts(registry[0])
    headers = {"content-type": content_type, "content-encoding": coding, **KEY}

    answer = await api.post(path, content=body, headers=headers)

    assert answer.status_code == 415, answer.text
    assert answer.headers["accept-encoding"] == "identity"
    message = answer.json()["error"]
    if not path.startswith("/v2/"):
        assert message["code"] == "unsupported_media_type"
        message = message["message"]
    assert f"Content-Encoding {coding!r} is not supported" in message
    await assert_still_serving(api)
    assert await row_counts(registry[0]) == before


# --- strings in every text field, query and path parameter ---------------------------------

LONG = "x" * 100_000
STRINGS = {
    "sql": "'; DROP TABLE jobs; --",
    "sql-or": '" OR 1=1 --',
    "like": "%_\\",
    "nul": "a\x00b",
    "nul-only": "\x00",
    "control": "a\r\nX-Injected: 1\x1b[31m",
    "long": LONG,
    "surrogate": "\ud800",
    "bidi": "\u202e\ufeffgpj.exe",
}
# Strings a genre may be (letters or digits, no control character, at most 64): stored as
# given, as data, never as SQL.
GENRE_NAMES = {"sql", "sql-or", "bidi"}


def _is_unicode(text: str) -> bool:
    """False for a lone surrogate: JSON can carry one (``"\\ud800"``), no string holds it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _fields(text: str) -> list[tuple[str, dict[str, Any], set[int]]]:
    """(path, body, the statuses a correct answer may have) for ``text`` in each text field.

    A URL is answered 200 with its own item's error, unless it is no string or over 2,048
    characters (422)."""
    v2 = {"name": "image", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}
    url = {200} if len(text) <= 2048 and _is_unicode(text) else {422}
    return [
        ("/v1/scrape-runs", {"source": text}, {422}),
        ("/v1/scrape-runs", {"source": "folder", "path": text}, {422}),
        ("/v1/scrape-runs", {"source": "itunes", "genres": ["jazz", text]}, {422}),
        ("/v1/training-runs", {"dataset": text}, {422}),
        ("/v1/training-runs", {"dataset": "d", text[:100] or "_": 1}, {422}),
        ("/v1/predict/urls", {"urls": [text]}, url),
        # A private address: refused before any lookup or connection.
        ("/v1/predict/urls", {"urls": [f"http://10.0.0.7/{text}"]}, url),
        ("/v1/scoring-jobs", {"input": text}, {422}),
        ("/v1/scoring-jobs", {"input": f"store:{text}"}, {422}),
        ("/v1/scoring-jobs", {"input": f"albums:source={text}"}, {422}),
        ("/v1/scoring-jobs", {"input": f"albums:dataset={text}"}, {422}),
        ("/v1/scoring-jobs", {"input": f"albums:genre={text}"}, {422}),
        ("/v1/scoring-jobs", {"input": "albums:", "model": text}, {422}),
        ("/v1/scoring-jobs", {"input": "albums:", "engine": text}, {422}),
        ("/v2/models/sleeve/infer", {"inputs": [{**v2, "name": text}]}, {400}),
        ("/v2/models/sleeve/infer", {"inputs": [{**v2, "datatype": text}]}, {400}),
        ("/v2/models/sleeve/infer", {"id": text, "inputs": [{**v2, "data": [text]}]}, {400}),
    ]


def _json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()  # lone surrogates travel as \ud800 escapes


async def test_hostile_strings_in_every_json_field(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    db = registry[0]
    before = await row_counts(db)
    wrong: list[str] = []
    queued: list[tuple[int, str]] = []
    for name, text in STRINGS.items():
        cases = _fields(text)
        if name in GENRE_NAMES:
            cases[2] = (*cases[2][:2], {202})
        for path, body, expected in cases:
            answer = await api.post(
                path,
                content=_json_bytes(body),
                headers={"content-type": "application/json", **KEY},
            )
            if answer.status_code not in expected or len(answer.content) > 10_000:
                wrong.append(
                    f"{name} {path} {str(body)[:80]}: {answer.status_code} {answer.text[:200]} "
                    f"({len(answer.content)} B)"
                )
            elif answer.status_code == 202:
                queued.append((answer.json()["id"], text))
            elif answer.status_code >= 400 and not path.startswith("/v2/"):
                assert answer.json()["error"]["code"] == "invalid_request", answer.text
    assert wrong == []
    # A genre that reads like SQL is stored as given, as data; every table is still there.
    for job_id, text in queued:
        shown = (await api.get(f"/v1/scrape-runs/{job_id}")).json()
        assert shown["request"]["genres"] == ["jazz", text]
    after = await row_counts(db)
    assert after == {**before, "jobs": before["jobs"] + len(queued)}
    await assert_still_serving(api)


@sqlite_only
async def test_bodies_that_are_not_utf8_json(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    before = await row_counts(registry[0])
    bodies = [
        b'{"source": "\xff\xfe"}',
        b'{"source": "itunes", "genres": ["\xc0\xaf"]}',
        b"\x00",
        b'{"source": "itunes"}\x00',
        b"[" * 100_000,
        b'{"a": ' * 50_000,
        b'{"source": "itunes", "genres": ["jazz"], "genres": ["' + LONG.encode() + b'"]}',
    ]
    paths = [
        "/v1/scrape-runs",
        "/v1/training-runs",
        "/v1/scoring-jobs",
        "/v1/predict/urls",
        "/v2/models/sleeve/infer",
    ]
    for body in bodies:
        for path in paths:
            answer = await api.post(
                path, content=body, headers={"content-type": "application/json", **KEY}
            )
            assert answer.status_code in (400, 422), (body[:30], path, answer.text[:300])
            assert len(answer.content) < 10_000
    await assert_still_serving(api)
    assert await row_counts(registry[0]) == before


async def test_hostile_query_and_path_parameters(
    api: httpx.AsyncClient, registry: tuple[Database, ObjectStore]
) -> None:
    """PostgreSQL cannot compare a string holding NUL: a version named so was a 500 there."""
    before = await row_counts(registry[0])
    wrong: list[str] = []
    for name, text in STRINGS.items():
        value = quote(text[:8_000].encode("utf-8", "surrogatepass"), safe="")
        requests = [
            ("GET", f"/v1/models/{value}", {422}),
            ("GET", f"/v1/models/{value}/confusion-matrix.png", {422}),
            ("GET", f"/v1/models/{value}/training-curves.png", {422}),
            ("POST", f"/v1/models/{value}/promote", {422}),
            ("GET", f"/v1/scrape-runs/{value}", {422}),
            ("GET", f"/v1/training-runs/{value}", {422}),
            ("GET", f"/v1/scoring-jobs/{value}", {422}),
            ("POST", f"/v1/scoring-jobs/{value}/cancel", {422}),
            ("GET", f"/v1/scoring-jobs/1/results?format={value}", {422}),
            ("GET", f"/v1/scrape-runs?limit={value}", {422}),
            ("GET", f"/v1/scrape-runs?before={value}", {422}),
            ("POST", f"/v1/predict?top_k={value}", {422}),
            ("GET", f"/v2/models/{value}", {404}),
            ("GET", f"/v2/models/sleeve/versions/{value}", {404}),
            ("GET", f"/v1/models?{value}={value}", {200}),
            ("GET", f"/{value}", {404}),
        ]
        for method, path, expected in requests:
            answer = await api.request(method, path, headers=KEY)
            if answer.status_code not in expected or len(answer.content) > 20_000:
                wrong.append(
                    f"{name} {method} {path[:80]}: {answer.status_code} {answer.text[:200]}"
                )
    assert wrong == []
    await assert_still_serving(api)
    assert await row_counts(registry[0]) == before


# --- headers, over a real socket (the HTTP parser is part of what is tried) ----------------


def _exchange(address: str, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes, read the answer until the server closes; its status and body."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65_536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _request(
    method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: sleeve", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_KEY = API_KEY.encode()
_PNG = image_bytes(RED)
# (id, request, status)
HEADERS: list[tuple[str, bytes, int]] = [
    ("request-id-64kb", _request("GET", "/healthz", [(b"X-Request-ID", b"a" * 65_536)]), 200),
    ("request-id-not-utf8", _request("GET", "/healthz", [(b"X-Request-ID", b"\xff\xfe\x80")]), 200),
    (
        "request-id-sql",
        _request("GET", "/healthz", [(b"X-Request-ID", b"'; DROP TABLE jobs")]),
        200,
    ),
    ("request-id-nul", b"GET /healthz HTTP/1.1\r\nHost: s\r\nX-Request-ID: a\x00b\r\n\r\n", 400),
    (
        "1000-headers",
        _request("GET", "/healthz", [(b"X-H%d" % i, b"v") for i in range(1_000)]),
        200,
    ),
    (
        "api-key-not-utf8",
        _request("POST", "/v1/models/v1/promote", [(b"X-API-Key", b"\xff\xfe" + _KEY)]),
        401,
    ),
    (
        "api-key-latin1",
        _request("POST", "/v1/models/v1/promote", [(b"X-API-Key", _KEY + b"\xe9")]),
        401,
    ),
    (
        "api-key-64kb",
        _request("POST", "/v1/models/v1/promote", [(b"X-API-Key", b"k" * 65_536)]),
        401,
    ),
    (
        "api-key-sql",
        _request("POST", "/v1/models/v1/promote", [(b"X-API-Key", b"' OR '1'='1")]),
        401,
    ),
    ("api-key-empty", _request("POST", "/v1/models/v1/promote", [(b"X-API-Key", b"")]), 401),
    (
        "api-key-twice",
        _request("POST", "/v1/models/v1/promote", [(b"X-API-Key", b"wrong"), (b"X-API-Key", _KEY)]),
        401,
    ),
    (
        "content-type-garbage",
        _request("POST", "/v1/predict", [(b"Content-Type", b"\xff\xfe;;;==; boundary")], _PNG),
        415,
    ),
    (
        "content-type-64kb-boundary",
        _request(
            "POST",
            "/v1/predict",
            [(b"Content-Type", b"multipart/form-data; boundary=" + b"b" * 65_536)],
            _PNG,
        ),
        400,
    ),
    (
        "content-type-no-boundary",
        _request("POST", "/v1/predict", [(b"Content-Type", b"multipart/form-data")], _PNG),
        400,
    ),
    (
        "content-type-64kb-parameters",
        _request(
            "POST",
            "/v1/scrape-runs",
            [(b"Content-Type", b"application/json" + b"; a=b" * 13_000), (b"X-API-Key", _KEY)],
            b'{"source": "nowhere"}',
        ),
        422,
    ),
    (
        "content-type-text-for-json",
        _request(
            "POST",
            "/v1/scrape-runs",
            [(b"Content-Type", b"text/plain"), (b"X-API-Key", _KEY)],
            b"{}",
        ),
        422,
    ),
    (
        "content-length-huge",
        b"POST /v1/predict HTTP/1.1\r\nHost: s\r\nContent-Length: 99999999999999999999\r\n\r\n",
        400,
    ),
    (
        "content-length-negative",
        b"POST /v1/predict HTTP/1.1\r\nHost: s\r\nContent-Length: -1\r\n\r\n",
        400,
    ),
    ("path-8kb", _request("GET", "/v1/models/" + "v" * 8_192, []), 422),
    ("path-64kb", _request("GET", "/v1/models/" + "v" * 65_536, []), 400),
    ("path-raw-8-bit", b"GET /v1/models/\xff\xfe HTTP/1.1\r\nHost: s\r\n\r\n", 400),
]


@sqlite_only
async def test_hostile_headers_over_a_real_socket(
    settings: Settings, registry: tuple[Database, ObjectStore], registered: Any
) -> None:
    """uvicorn refuses what HTTP forbids (NUL, a bad Content-Length, raw 8-bit bytes in the
    path) with its own 400; everything else reaches the app and gets its precise answer."""
    before = await row_counts(registry[0])
    async with serve_on_socket(create_app(settings)) as address:
        wrong = []
        for name, request, status in HEADERS:
            got, body = await asyncio.to_thread(_exchange, address, request)
            if got != status or b"Traceback" in body or len(body) > 20_000:
                wrong.append(f"{name}: {got} {body[:200]!r}")
        assert wrong == []
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            await assert_still_serving(client)
    assert await row_counts(registry[0]) == before
