"""Prometheus metrics of one app instance (its own registry, so tests can build many apps).

``Metrics`` is also a pure ASGI middleware: it sees every answer, a 500 from an unhandled
error included, and costs less per request than Starlette's ``BaseHTTPMiddleware``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sleeve_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sleeve_http_request_seconds", "HTTP request latency", ["route"], registry=self.registry
        )
        self.images_predicted = Counter(
            "sleeve_images_predicted", "images given a genre prediction", registry=self.registry
        )
        self.batch_size = Histogram(
            "sleeve_batch_size",
            "images per model batch",
            buckets=_BATCH_SIZES,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "sleeve_batch_seconds", "model run time per batch", registry=self.registry
        )
        self.queue_depth = Gauge(
            "sleeve_queue_images", "images waiting for a model runner", registry=self.registry
        )
        self.in_flight = Gauge(
            "sleeve_in_flight_images",
            "images admitted and not yet answered",
            registry=self.registry,
        )
        self.rejections = Counter(
            "sleeve_rejections",
            "requests shed by admission control or their deadline",
            ["reason"],
            registry=self.registry,
        )
        self.model = Gauge(
            "sleeve_model_info",
            "the model being served (value 1), by version and execution provider",
            ["version", "provider"],
            registry=self.registry,
        )

    def watch(self, *, queue_depth: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Read the gauges from their owners when scraped."""
        self.queue_depth.set_function(queue_depth)
        self.in_flight.set_function(in_flight)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def serving(self, version: str, provider: str) -> None:
        """Record the model now served (one series at a time)."""
        self.model.clear()
        self.model.labels(version, provider).set(1)


class MetricsMiddleware:
    """Counts every HTTP answer by route template and status, and times it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
