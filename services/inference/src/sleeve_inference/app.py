"""The inference API: ``create_app(settings)``; the lifespan owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from sleeve_common.runtime import open_runtime
from sleeve_common.settings import Settings
from sleeve_inference.errors import UnhandledErrors, install_error_handlers
from sleeve_inference.limits import BodySizeLimit, IdentityEncodingOnly
from sleeve_inference.metrics import Metrics, MetricsMiddleware
from sleeve_inference.model_holder import ModelHolder, model_cache_dir
from sleeve_inference.request_log import RequestLogMiddleware
from sleeve_inference.routes import health, models, page, predict, scoring, v2, work
from sleeve_inference.serving import Serving
from sleeve_inference.url_fetch import UrlFetcher

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_MODEL_REFRESH_S = 30.0
_NO_MODEL_REFRESH_S = 2.0
_MULTIPART_OVERHEAD = 64 * 1024

_DESCRIPTION = """
Sleeve tells an album's genre from its cover art.

* **Predict**: upload one or more covers to `POST /v1/predict`.
* **Models**: the registry, with the evaluation report of each version (metrics and images).
* **Work**: queue scrapes and training runs (needs the `X-API-Key` header).
"""


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings) as runtime:
            holder = ModelHolder(
                runtime,
                cache_dir=model_cache_dir(settings),
                threads=Serving.model_threads(settings),
                on_change=metrics.serving,
            )
            await holder.refresh_or_log()
            if holder.current is None:
                logger.warning("no model to serve yet: %s", holder.last_error)
            serving = Serving(settings, holder, metrics)
            serving.start()
            app.state.runtime = runtime
            app.state.models = holder
            app.state.serving = serving
            app.state.url_fetcher = UrlFetcher.from_settings(settings)
            refresher = asyncio.create_task(_keep_fresh(holder))
            try:
                yield
            finally:
                refresher.cancel()
                await app.state.url_fetcher.aclose()
                await serving.aclose()

    # Swagger UI and ReDoc from files in the package: /docs works offline and behind firewalls.
    app = FastAPIOffline(
        title="Sleeve",
        version="0.1.0",
        summary="Album genre from cover art",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    metrics = Metrics()
    app.state.metrics = metrics
    install_error_handlers(app)
    # The last added runs first: request id and access log, then the 500 for an unhandled
    # error (logged under that id), then metrics (so refusals and 500s are counted), then the
    # size limit, whose 413 a route reading the body passes on directly, and the refusal of
    # compressed bodies.
    app.add_middleware(IdentityEncodingOnly)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes * settings.max_images_per_request + _MULTIPART_OVERHEAD,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(UnhandledErrors)
    app.add_middleware(RequestLogMiddleware)
    for module in (predict, models, work, scoring, health, page, v2):
        app.include_router(module.router)
    return app


async def _keep_fresh(holder: ModelHolder) -> None:
    """Pick up a newly promoted model without a restart; while none is served, look often,
    so the first model is served within seconds of its registration and the progress that
    readiness, 503 answers and the upload page show stays current."""
    while True:
        await asyncio.sleep(_MODEL_REFRESH_S if holder.current else _NO_MODEL_REFRESH_S)
        await holder.refresh_or_log()
