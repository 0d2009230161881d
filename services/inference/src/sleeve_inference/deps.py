"""Route dependencies: what the lifespan made, and the API-key guard for writes."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from sleeve_common.runtime import Runtime
from sleeve_common.settings import Settings
from sleeve_inference.errors import ApiError
from sleeve_inference.model_holder import ModelHolder
from sleeve_inference.serving import Serving
from sleeve_inference.url_fetch import UrlFetcher

__all__ = ["ApiKey", "ModelsDep", "RuntimeDep", "ServingDep", "SettingsDep", "UrlFetcherDep"]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="SLEEVE_API_KEY")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _settings(request: Request) -> Settings:
    return _runtime(request).settings


def _models(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.models
    return holder


def _serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


def _url_fetcher(request: Request) -> UrlFetcher:
    fetcher: UrlFetcher = request.app.state.url_fetcher
    return fetcher


def _require_api_key(
    settings: Annotated[Settings, Depends(_settings)],
    given: Annotated[str | None, Security(_api_key_header)],
) -> None:
    if settings.api_key is None:
        raise ApiError(
            403, "writes_disabled", "this server has no SLEEVE_API_KEY, so writes are off"
        )
    if given is None:
        raise ApiError(401, "unauthorized", "send the API key in the X-API-Key header")
    if not _is_the_key(given, settings.api_key.get_secret_value()):
        raise ApiError(401, "unauthorized", "wrong API key")


def _is_the_key(given: str, key: str) -> bool:
    """Whether the header holds the key, decided by one constant-time comparison of bytes.

    Starlette decodes header bytes as Latin-1, so encoding ``given`` back as Latin-1 gives the
    bytes the client sent; the key is compared as UTF-8, what a client sends for a key that
    is not ASCII (before, such a key could never match: the header's UTF-8 bytes, decoded as
    Latin-1, were encoded again as UTF-8). No length check first: ``compare_digest`` takes
    unequal lengths and tells nothing but the length.
    """
    try:
        sent = given.encode("latin-1")
    except UnicodeEncodeError:  # not from an HTTP header
        return False
    return hmac.compare_digest(sent, key.encode("utf-8"))


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ModelsDep = Annotated[ModelHolder, Depends(_models)]
ServingDep = Annotated[Serving, Depends(_serving)]
UrlFetcherDep = Annotated[UrlFetcher, Depends(_url_fetcher)]
ApiKey = Depends(_require_api_key)
