"""Requests and latency of the glue API per route template (Prometheus)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmflow.observability.metrics import child

REQUESTS = Counter("llmflow_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("llmflow_http_request_seconds", "HTTP request latency", ["route", "method"])


def observe(route: str, method: str, status: int, start: float) -> None:
    """Count one answered request; ``start`` is its ``time.perf_counter()`` on arrival."""
    child(REQUESTS, route, method, str(status)).inc()
    child(LATENCY, route, method).observe(time.perf_counter() - start)


class HttpMetrics:
    """Requests and latency per route template, as a plain ASGI middleware.

    Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs every request in a
    task group and re-streams the response through a memory channel; on the gateway's hot
    path that cost more than the rest of the middleware stack together.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            observe(getattr(route, "path", "unmatched"), scope["method"], status, start)
