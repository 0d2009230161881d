"""The SSRF-guarded URL fetcher against real HTTP(S) servers on 127.0.0.1 and ::1.

Nothing here may connect anywhere else: a refused address must be refused before any connection,
which the servers prove by counting the connections they accept.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from support import DISCOGS5

from sleeve_common.settings import Settings
from sleeve_inference.url_fetch import StaticResolver, UrlFetcher, UrlFetchError

MAX_BYTES = 64 * 1024
LOOPBACK_V4 = (ip_network("127.0.0.1/32"),)
CERT_NAME = "covers.test"


@dataclass
class _State:
    """What the servers share: the image, what they saw, and an event that ends slow answers."""

    image: bytes
    release: threading.Event = field(default_factory=threading.Event)
    connections: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        parts = urlsplit(self.path)
        route, _, arg = parts.path.strip("/").partition("/")
        try:
            if route == "image":
                self._send(200, state.image, ("Content-Type", "image/jpeg"))
            elif route == "hops":  # /hops/N redirects N times (relative Location), then the image
                hops = int(arg)
                if hops:
                    self._send(302, b"", ("Location", f"/hops/{hops - 1}"))
                else:
                    self._send(200, state.image)
            elif route == "to":
                self._send(302, b"", ("Location", parse_qs(parts.query)["u"][0]))
            elif route == "slow":
                state.release.wait(timeout=30)
                self._send(200, state.image)
            elif route == "drip":  # a byte at a time: each read is quick, the whole is not
                self._stream(None, chunk=b"x", pause_s=0.05, total=200)
            elif route == "bytes":  # /bytes/N, with Content-Length when ?cl
                size = int(arg)
                self._stream(size if "cl" in parts.query else None, chunk=b"\0" * 8192, total=size)
            elif route == "status":
                self._send(int(arg), b"nope")
            elif route == "cookie":
                self._send(200, state.image, ("Set-Cookie", "session=abc; Path=/"))
            else:
                self._send(404, b"no such route")
        except (ConnectionError, ssl.SSLError):
            pass  # the client hung up, as the fetcher does on purpose when it refuses a body

    def _send(self, status: int, body: bytes, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, length: int | None, *, chunk: bytes, total: int, pause_s: float = 0) -> None:
        """Stream ``total`` bytes; without a length, the body ends when the connection closes."""
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        sent = 0
        while sent < total and not (pause_s and self.server.state.release.wait(pause_s)):
            piece = chunk[: total - sent]
            self.wfile.write(piece)
            sent += len(piece)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    """A threaded HTTP server on one loopback address, optionally speaking TLS."""

    daemon_threads = True

    def __init__(self, host: str, state: _State, tls: ssl.SSLContext | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.state = state
        self.tls = tls
        super().__init__((host, 0), _Handler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.state.lock:
            self.state.connections += 1
        return True

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:  # handshake in the handler's thread, not the accept loop
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass
class Servers:
    state: _State
    v4: _Server
    v6: _Server

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.v4.port}{path}"

    def url6(self, path: str) -> str:
        return f"http://[::1]:{self.v6.port}{path}"

    @property
    def connections(self) -> int:
        return self.state.connections

    def seen(self, prefix: str) -> list[dict[str, str]]:
        return [headers for path, headers in self.state.requests if path.startswith(prefix)]


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """HTTP servers on 127.0.0.1 and ::1 sharing one state, so a connection to either counts."""
    image = sorted(DISCOGS5.rglob("*.jpg"))[0].read_bytes()
    assert len(image) < MAX_BYTES
    state = _State(image=image)
    v4, v6 = _Server("127.0.0.1", state), _Server("::1", state)
    yield Servers(state, v4, v6)
    state.release.set()
    v4.stop()
    v6.stop()


@dataclass
class TlsServer:
    server: _Server
    cert: Path


@pytest.fixture(scope="module")
def tls_server(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """An HTTPS server on 127.0.0.1 whose self-signed certificate names only covers.test."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the HTTPS test needs the openssl command (Debian: openssl)"
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", f"/CN={CERT_NAME}"),
            *("-addext", f"subjectAltName=DNS:{CERT_NAME}"),
            *("-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    context.sni_callback = lambda _sock, name, _ctx: servers.state.server_names.append(name)
    server = _Server("127.0.0.1", servers.state, tls=context)
    yield TlsServer(server, folder / "cert.pem")
    server.stop()


@pytest.fixture
async def make_fetcher() -> AsyncIterator[Callable[..., UrlFetcher]]:
    """Fetchers with small limits that may reach 127.0.0.1 only, unless told otherwise."""
    made: list[UrlFetcher] = []

    def make(**overrides: Any) -> UrlFetcher:
        options: dict[str, Any] = {
            "max_bytes": MAX_BYTES,
            "timeout_s": 5.0,
            "max_redirects": 3,
            "allowed_networks": LOOPBACK_V4,
        }
        made.append(UrlFetcher(**(options | overrides)))
        return made[-1]

    yield make
    for fetcher in made:
        await fetcher.aclose()


async def _refused(fetcher: UrlFetcher, url: str, servers: Servers, kind: str) -> str:
    """Assert the fetch fails with ``kind`` and no server saw a connection; return the message."""
    before = servers.connections
    with pytest.raises(UrlFetchError) as caught:
        await fetcher.fetch(url)
    assert (caught.value.kind, servers.connections) == (kind, before), str(caught.value)
    return str(caught.value)


# --- what gets through ---------------------------------------------------------------------------


async def test_fetches_an_image_from_an_allowed_network(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    body = await make_fetcher(user_agent="SleeveTest/1").fetch(servers.url("/image?id=1"))
    assert body == servers.state.image
    headers = servers.seen("/image?id=1")[-1]
    assert headers["host"] == f"127.0.0.1:{servers.v4.port}"
    assert headers["user-agent"] == "SleeveTest/1"


async def test_fetches_over_ipv6_when_allowed(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    fetcher = make_fetcher(allowed_networks=(ip_network("::1/128"),))
    assert await fetcher.fetch(servers.url6("/image")) == servers.state.image


async def test_connects_to_the_checked_address_and_keeps_the_host_name(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    fetcher = make_fetcher(resolver=StaticResolver({"covers.example": ["127.0.0.1"]}))
    body = await fetcher.fetch(f"http://covers.example:{servers.v4.port}/image?name")
    assert body == servers.state.image
    assert servers.seen("/image?name")[-1]["host"] == f"covers.example:{servers.v4.port}"


async def test_https_pins_the_address_but_verifies_the_host_name(
    servers: Servers, tls_server: TlsServer, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    trust = ssl.create_default_context(cafile=tls_server.cert)
    port = tls_server.server.port
    resolver = StaticResolver({CERT_NAME: ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    fetcher = make_fetcher(resolver=resolver, ssl_context=trust)
    body = await fetcher.fetch(f"https://{CERT_NAME}:{port}/image?tls")
    assert body == servers.state.image
    assert servers.seen("/image?tls")[-1]["host"] == f"{CERT_NAME}:{port}"
    assert servers.state.server_names[-1] == CERT_NAME
    # The same address under a name the certificate does not carry: TLS refuses.
    with pytest.raises(UrlFetchError) as caught:
        await fetcher.fetch(f"https://other.test:{port}/image")
    assert caught.value.kind == "unreachable"
    assert "certificate" in str(caught.value).lower()


async def test_follows_redirects_up_to_the_limit(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    before = len(servers.seen("/hops/"))
    assert await make_fetcher(max_redirects=3).fetch(servers.url("/hops/3")) == servers.state.image
    assert len(servers.seen("/hops/")) - before == 4


async def test_body_of_exactly_max_bytes_is_accepted(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    body = await make_fetcher().fetch(servers.url(f"/bytes/{MAX_BYTES}?cl"))
    assert len(body) == MAX_BYTES


async def test_concurrent_fetches_share_one_fetcher(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    fetcher = make_fetcher(max_connections=2)
    bodies = await asyncio.gather(*(fetcher.fetch(servers.url(f"/image?n={i}")) for i in range(6)))
    assert bodies == [servers.state.image] * 6


async def test_cookies_are_not_carried_between_fetches(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    fetcher = make_fetcher()
    await fetcher.fetch(servers.url("/cookie"))
    await fetcher.fetch(servers.url("/image?after-cookie"))
    assert "cookie" not in servers.seen("/image?after-cookie")[-1]


async def test_from_settings_uses_the_configured_limits(servers: Servers) -> None:
    settings = Settings(
        url_fetch_allowed_networks="127.0.0.1/32", url_fetch_max_redirects=0, user_agent="Cfg/2"
    )
    async with UrlFetcher.from_settings(settings) as fetcher:
        assert await fetcher.fetch(servers.url("/image?cfg")) == servers.state.image
        assert servers.seen("/image?cfg")[-1]["user-agent"] == "Cfg/2"
        with pytest.raises(UrlFetchError) as caught:
            await fetcher.fetch(servers.url("/hops/1"))
        assert caught.value.kind == "too_many_redirects"


# --- addresses the guard refuses before connecting -----------------------------------------------

_FORBIDDEN = [
    ("http://127.0.0.1:{p}/image", "loopback"),
    ("http://2130706433:{p}/image", "loopback"),  # decimal
    ("http://0177.0.0.1:{p}/image", "loopback"),  # octal
    ("http://0x7f000001:{p}/image", "loopback"),  # hex
    ("http://127.1:{p}/image", "loopback"),  # short
    ("http://0:{p}/image", "unspecified"),  # 0.0.0.0, which Linux connects to loopback
    ("http://localhost:{p}/image", "loopback"),
    ("http://[::1]:{p6}/image", "loopback"),
    ("http://[::]:{p6}/image", "unspecified"),
    ("http://[::ffff:7f00:1]:{p}/image", "loopback"),  # IPv4-mapped
    ("http://[::ffff:127.0.0.1]:{p}/image", "loopback"),
    ("http://10.0.0.1/x", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "shared 100.64.0.0/10"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://[fc00::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 around 127.0.0.1
    ("http://[2002:a9fe:a9fe::]/", "link-local"),  # 6to4 around the metadata address
    ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 around 10.0.0.1
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "private"),  # Teredo
    ("http://[::7f00:1]/", "loopback"),  # IPv4-compatible
]


@pytest.mark.parametrize(("template", "reason"), _FORBIDDEN, ids=[t for t, _ in _FORBIDDEN])
async def test_refuses_non_public_addresses(
    template: str, reason: str, servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    url = template.format(p=servers.v4.port, p6=servers.v6.port)
    message = await _refused(make_fetcher(allowed_networks=()), url, servers, "forbidden_address")
    assert f"({reason})" in message


async def test_refuses_names_resolving_to_private_addresses(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    resolver = StaticResolver(
        {"intranet.example": ["10.1.2.3"], "mixed.example": ["127.0.0.1", "10.0.0.1"]}
    )
    fetcher = make_fetcher(resolver=resolver)
    message = await _refused(fetcher, "http://intranet.example/x", servers, "forbidden_address")
    assert "10.1.2.3" not in message  # the client learns nothing of our network's addresses
    # One allowed address does not excuse another that is not.
    url = f"http://mixed.example:{servers.v4.port}/image"
    await _refused(fetcher, url, servers, "forbidden_address")


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{p6}/image",
    ],
)
async def test_refuses_redirects_to_non_public_addresses_before_connecting(
    target: str, servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    location = target.format(p=servers.v4.port, p6=servers.v6.port)
    before = servers.connections
    with pytest.raises(UrlFetchError) as caught:
        await make_fetcher().fetch(servers.url(f"/to?u={quote(location, safe='')}"))
    assert caught.value.kind == "forbidden_address"
    assert servers.connections == before + 1  # the redirecting server, nothing after it


async def test_refuses_redirects_to_other_schemes(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    with pytest.raises(UrlFetchError) as caught:
        await make_fetcher().fetch(servers.url("/to?u=file:///etc/passwd"))
    assert caught.value.kind == "invalid_url"


async def test_refuses_the_loopback_server_without_an_allow_list(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    fetcher = make_fetcher(allowed_networks=())
    await _refused(fetcher, servers.url("/image"), servers, "forbidden_address")


# --- URLs refused on their face ------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "ftp://127.0.0.1:{p}/image",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "/image",
        "http://user:hunter2-secret@127.0.0.1:{p}/image",
        "http://user@127.0.0.1:{p}/image",
        "http://@127.0.0.1:{p}/image",
        "http:///image",
        "http://:{p}/image",
        "http://127.0.0.1:99999/image",
        "http://exa mple.com/",
        "http://" + "a" * 64 + ".example/",
        "http://127.0.0.1:{p}/image?" + "a" * 2048,
    ],
    ids=lambda t: t[:40],
)
async def test_refuses_malformed_urls(
    template: str, servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    url = template.format(p=servers.v4.port)
    message = await _refused(make_fetcher(), url, servers, "invalid_url")
    assert "hunter2" not in message


async def test_an_unresolvable_name(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    # A table, not the system resolver: that would send a DNS query off this machine.
    fetcher = make_fetcher(resolver=StaticResolver({}))
    message = await _refused(fetcher, "http://nothing-here.invalid/x", servers, "unresolvable")
    assert "nothing-here.invalid" in message


# --- limits and answers --------------------------------------------------------------------------


async def test_too_many_redirects(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    before = len(servers.seen("/hops/"))
    with pytest.raises(UrlFetchError) as caught:
        await make_fetcher(max_redirects=3).fetch(servers.url("/hops/4"))
    assert caught.value.kind == "too_many_redirects"
    assert len(servers.seen("/hops/")) - before == 4  # /hops/0 was never asked for


async def test_slow_answer_times_out(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    started = time.monotonic()
    with pytest.raises(UrlFetchError) as caught:
        await make_fetcher(timeout_s=0.3).fetch(servers.url("/slow"))
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 3


async def test_timeout_bounds_the_whole_fetch_not_each_read(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    started = time.monotonic()
    with pytest.raises(UrlFetchError) as caught:
        await make_fetcher(timeout_s=0.5).fetch(servers.url("/to?u=/drip"))
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("query", "words"), [("?cl", "announces"), ("", "sent more than")], ids=["length", "streamed"]
)
async def test_body_over_max_bytes_is_cut(
    query: str, words: str, servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    with pytest.raises(UrlFetchError) as caught:
        await make_fetcher().fetch(servers.url(f"/bytes/{50 * MAX_BYTES}{query}"))
    assert caught.value.kind == "too_large"
    assert words in str(caught.value)


async def test_one_byte_over_max_bytes_is_refused(
    servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    with pytest.raises(UrlFetchError) as caught:
        await make_fetcher().fetch(servers.url(f"/bytes/{MAX_BYTES + 1}"))
    assert caught.value.kind == "too_large"


@pytest.mark.parametrize("status", [404, 500])
async def test_error_statuses(
    status: int, servers: Servers, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    with pytest.raises(UrlFetchError) as caught:
        await make_fetcher().fetch(servers.url(f"/status/{status}?token=s3cr3t-signature"))
    assert caught.value.kind == "http_error"
    assert f"HTTP {status}" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


async def test_refused_connection_is_unreachable(make_fetcher: Callable[..., UrlFetcher]) -> None:
    with socket.socket() as closed:  # a port nobody listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(UrlFetchError) as caught:
            await make_fetcher().fetch(f"http://127.0.0.1:{port}/image")
    assert caught.value.kind == "unreachable"
