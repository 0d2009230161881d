"""Fetch images from clients' URLs without letting a client reach our own network (SSRF guard).

The guard resolves the host itself and refuses the URL if any address it resolves to is not
publicly routable, unless the address lies in ``allowed_networks``. It then connects to the
address it checked, keeping the Host header and, for https, SNI and certificate checks on the
host name, so a second DNS answer cannot rebind the name to another address. Redirects are
followed by hand and every hop is checked again before anything connects to it.

UrlFetchError.kind: invalid_url, forbidden_address, unresolvable, unreachable, timeout,
too_large, too_many_redirects, http_error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self
from urllib.parse import urljoin, urlsplit

import httpx

from sleeve_common.exceptions import SleeveError

if TYPE_CHECKING:
    from sleeve_common.settings import Settings

__all__ = ["FetchErrorKind", "Resolver", "StaticResolver", "UrlFetchError", "UrlFetcher"]

logger = logging.getLogger(__name__)

FetchErrorKind = Literal[
    "invalid_url",
    "forbidden_address",
    "unresolvable",
    "unreachable",
    "timeout",
    "too_large",
    "too_many_redirects",
    "http_error",
]
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolve ``(host, port)`` to IP addresses as text; raise OSError when the name does not."""

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_.-]+")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
# Prefixes whose last 32 bits are an IPv4 address the packet ends up at: NAT64, IPv4-compatible.
_EMBEDDING_V4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))


class UrlFetchError(SleeveError):
    """A URL could not be fetched; ``kind`` is a stable code, the message says what was wrong."""

    def __init__(self, kind: FetchErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: FetchErrorKind = kind


class StaticResolver:
    """A resolver answering from a fixed table, for tests: names not in it do not resolve."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self._table = {name.lower(): list(addresses) for name, addresses in table.items()}

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        """Return the table's addresses for ``host``; ``port`` is ignored."""
        if host not in self._table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the table")
        return self._table[host]


async def _getaddrinfo(host: str, port: int) -> Sequence[str]:
    """The system resolver, every address family (numeric forms like 0x7f000001 included)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class _Target:
    """One checked hop: the URL as written, where to connect, and what to say the host is."""

    url: str
    host: str
    addresses: tuple[_IPAddress, ...]
    template: httpx.URL  # the URL with a placeholder host, replaced by each address
    headers: dict[str, str]
    extensions: dict[str, str]


class UrlFetcher:
    """Fetches image URLs for predictions; one pooled httpx client, closed by ``aclose()``."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout_s: float,
        max_redirects: int,
        allowed_networks: tuple[_IPNetwork, ...] = (),
        user_agent: str = "Sleeve",
        resolver: Resolver = _getaddrinfo,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 16,
    ) -> None:
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._max_redirects = max_redirects
        self._allowed = allowed_networks
        self._resolver = resolver
        # No keep-alive: the pool keys connections by the address alone, so a TLS connection
        # verified for one host name could otherwise carry a request for another host there.
        self._client = httpx.AsyncClient(
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,  # no proxies, netrc credentials or CA bundles from the environment
            verify=ssl_context if ssl_context is not None else True,
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # one site's cookies
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlFetcher:
        """A fetcher with the configured limits, allowed networks and User-Agent."""
        return cls(
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.url_fetch_timeout_s,
            max_redirects=settings.url_fetch_max_redirects,
            allowed_networks=settings.url_allowed_networks,
            user_agent=settings.user_agent,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        await self._client.aclose()

    async def fetch(self, url: str) -> bytes:
        """The body at ``url``, after redirects; UrlFetchError says why it cannot be had."""
        try:
            async with asyncio.timeout(self._timeout_s):
                for _ in range(self._max_redirects + 1):
                    target = await self._check(url)
                    outcome = await self._get(target)
                    if isinstance(outcome, bytes):
                        return outcome
                    url = outcome
        except TimeoutError:
            raise UrlFetchError(
                "timeout", f"the fetch took longer than {self._timeout_s:g} s"
            ) from None
        raise UrlFetchError("too_many_redirects", f"more than {self._max_redirects} redirects")

    async def _check(self, url: str) -> _Target:
        """Parse ``url``, resolve its host and refuse it unless every address may be reached."""
        scheme, host, port, template = _parse(url)
        literal = _ip_literal(host)
        if literal is not None:
            addresses: tuple[_IPAddress, ...] = (literal,)
        else:
            try:
                found = await self._resolver(host, port)
            except OSError as exc:
                raise UrlFetchError("unresolvable", f"{host} does not resolve ({exc})") from None
            addresses = tuple(ipaddress.ip_address(a.partition("%")[0]) for a in found)
            if not addresses:
                raise UrlFetchError("unresolvable", f"{host} resolves to no address")
        for address in addresses:
            reason = _not_public(address)
            if reason is not None and not self._is_allowed(address):
                logger.info("refused a URL: %s resolves to %s (%s)", host, address, reason)
                raise UrlFetchError(
                    "forbidden_address",
                    f"{host} points to a non-public address ({reason}); only public addresses"
                    " can be fetched",
                )
        bracketed = f"[{host}]" if ":" in host else host
        is_name = literal is None and scheme == "https"
        return _Target(
            url=url,
            host=host,
            addresses=addresses,
            template=template,
            headers={
                "Host": bracketed if port == _DEFAULT_PORTS[scheme] else f"{bracketed}:{port}"
            },
            extensions={"sni_hostname": host} if is_name else {},
        )

    def _is_allowed(self, address: _IPAddress) -> bool:
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return any(a in net for a in (address, mapped) if a is not None for net in self._allowed)

    async def _get(self, target: _Target) -> bytes | str:
        """GET a checked target at each of its addresses in turn until one connects."""
        error: httpx.ConnectError | None = None
        for address in target.addresses:
            try:
                return await self._get_from(target, address)
            except httpx.ConnectError as exc:
                logger.info("cannot connect to %s at %s: %s", target.host, address, exc)
                error = exc
            except httpx.TimeoutException:
                raise UrlFetchError("timeout", f"{target.host} did not answer in time") from None
            except httpx.HTTPError as exc:
                message = f"fetching from {target.host} failed: {str(exc) or type(exc).__name__}"
                raise UrlFetchError("unreachable", message) from None
        raise UrlFetchError("unreachable", f"cannot connect to {target.host}: {error}")

    async def _get_from(self, target: _Target, address: _IPAddress) -> bytes | str:
        """The body, or the absolute URL the answer redirects to."""
        url = target.template.copy_with(host=str(address))
        async with self._client.stream(
            "GET", url, headers=target.headers, extensions=target.extensions
        ) as response:
            if response.is_redirect:
                return urljoin(target.url, response.headers["location"])
            if not response.is_success:
                status = f"{response.status_code} {response.reason_phrase}".strip()
                raise UrlFetchError("http_error", f"{target.host} answered HTTP {status}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise UrlFetchError(
                    "too_large", f"{target.host} announces {declared} bytes, over {self._max_bytes}"
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise UrlFetchError(
                        "too_large", f"{target.host} sent more than {self._max_bytes} bytes"
                    )
            return bytes(body)


def _parse(url: str) -> tuple[str, str, int, httpx.URL]:
    """Scheme, ASCII host, port and request URL template of ``url``, or invalid_url."""
    if len(url) > _MAX_URL_LENGTH:
        raise UrlFetchError("invalid_url", f"the URL is over {_MAX_URL_LENGTH} characters long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlFetchError("invalid_url", f"the URL cannot be parsed: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise UrlFetchError(
            "invalid_url", f"only http and https URLs can be fetched, not {parts.scheme!r}"
        )
    if "@" in parts.netloc:
        raise UrlFetchError("invalid_url", "URLs with a user name or password are refused")
    host = parts.hostname
    if not host:
        raise UrlFetchError("invalid_url", "the URL has no host")
    if ":" not in host:  # IPv6 literals were checked by urlsplit; names go to ASCII
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = ""
        if not _HOST_NAME.fullmatch(host):
            raise UrlFetchError("invalid_url", f"{parts.hostname!r} is not a valid host name")
    port = _DEFAULT_PORTS[parts.scheme] if port is None else port
    query = f"?{parts.query}" if parts.query else ""
    try:  # httpx percent-encodes what needs it; each address replaces the placeholder host
        template = httpx.URL(f"{parts.scheme}://0.0.0.0:{port}{parts.path or '/'}{query}")
    except httpx.InvalidURL as exc:
        raise UrlFetchError("invalid_url", f"the URL's path or query is malformed: {exc}") from None
    return parts.scheme, host, port, template


def _ip_literal(host: str) -> _IPAddress | None:
    """The address ``host`` spells in standard notation; other numeric forms go to the resolver."""
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def _not_public(address: _IPAddress) -> str | None:
    """Why ``address`` (or the IPv4 address it embeds) is not publicly routable, or None."""
    candidates: list[_IPAddress] = []
    if isinstance(address, ipaddress.IPv6Address):  # the IPv4 address first: it names the reason
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if int(address) > 1 and any(address in net for net in _EMBEDDING_V4):  # not :: or ::1
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
        candidates += [v4 for v4 in embedded if v4 is not None]
    for candidate in [*candidates, address]:
        for reason, matches in (
            ("unspecified", candidate.is_unspecified),
            ("loopback", candidate.is_loopback),
            ("link-local", candidate.is_link_local),
            ("multicast", candidate.is_multicast),
            ("shared 100.64.0.0/10", candidate in _SHARED),
            ("reserved", candidate.is_reserved),
            ("private", candidate.is_private),
            ("not global", not candidate.is_global),
        ):
            if matches:
                return reason
    return None
