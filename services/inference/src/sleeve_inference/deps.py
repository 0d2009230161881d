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
    if not hmac.compare_digest(given.encode(), settings.api_key.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "wrong API key")


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ModelsDep = Annotated[ModelHolder, Depends(_models)]
ServingDep = Annotated[Serving, Depends(_serving)]
UrlFetcherDep = Annotated[UrlFetcher, Depends(_url_fetcher)]
ApiKey = Depends(_require_api_key)
