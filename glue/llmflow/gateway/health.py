"""Active health checks of the gateway's backends, feeding their circuit breakers.

The circuit breaker (:mod:`llmflow.gateway.upstream`) learns that a replica is down only from
failed requests. A background task of each gateway process also probes every distinct
backend URL every ``gateway.health_interval_s`` (default 10 s) with a short timeout
(``gateway.health_timeout_s``):

* vLLM replicas, TEI and Infinity: ``GET /health`` (200 when the engine is up; vLLM answers
  503 once its engine has died);
* external providers: ``GET /v1/models`` with the backend's API key when
  ``gateway.health_external`` is ``models``; skipped by default (``skip``), their breakers
  stay driven by traffic alone.

A failed probe (connection error, timeout, status >= 400) opens the replica's breaker at
once, so requests go to the other replicas or the fallback models without first failing on
it; every further failed probe keeps it open. A passing probe closes a breaker the checks
opened; a breaker that traffic opened is made due for its half-open probe request at once,
so traffic returns without waiting ``breaker_reset_s``. ``llmflow_gateway_backend_up``
(1/0 per backend) and :meth:`BackendHealth.snapshot` expose the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from llmflow.gateway import metrics
from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.upstream import Backend, BackendPool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProbeTarget:
    """One distinct backend URL and how to probe it."""

    backend: Backend
    path: str
    up: bool | None = None
    checked_at: float | None = None
    tripped: bool = False
    """The checks (not traffic) opened its breaker."""


def probe_targets(pool: BackendPool, settings: GatewaySettings) -> list[ProbeTarget]:
    """Every distinct backend URL of the routing table with its probe path (external
    providers only when ``health_external`` is ``models``)."""
    paths: dict[str, tuple[Backend, str | None]] = {}
    for route in settings.models:
        for backend in pool.backends(route.name):
            if route.provider == "external":
                path = "/v1/models" if settings.health_external == "models" else None
            else:
                path = "/health"
            known = paths.get(backend.url)
            if known is None or (known[1] is None and path is not None):
                paths[backend.url] = (backend, path)
    return [ProbeTarget(b, p) for b, p in paths.values() if p is not None]


class BackendHealth:
    """Probes the backends in the background; ``start()`` it, ``aclose()`` stops it."""

    def __init__(self, pool: BackendPool, settings: GatewaySettings) -> None:
        self.settings = settings
        self.targets = probe_targets(pool, settings)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.targets:
            self._task = asyncio.create_task(self._run(), name="gateway-health-checks")

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a broken round must not end the checks
                log.exception("gateway health checks failed")
            await asyncio.sleep(self.settings.health_interval_s)

    async def check(self) -> None:
        """Probe every target once, concurrently, and update the breakers."""
        results = await asyncio.gather(*(self._probe(t) for t in self.targets))
        now = time.monotonic()
        for target, up in zip(self.targets, results, strict=True):
            self._apply(target, up, now)

    async def _probe(self, target: ProbeTarget) -> bool:
        backend = target.backend
        try:
            response = await backend.client.get(
                target.path, headers=backend.headers(), timeout=self.settings.health_timeout_s
            )
        except httpx.HTTPError:
            return False
        return response.status_code < 400

    def _apply(self, target: ProbeTarget, up: bool, now: float) -> None:
        breaker = target.backend.breaker
        if not up:
            breaker.trip(now)
            target.tripped = True
        elif target.tripped:
            breaker.success()
            target.tripped = False
        elif breaker.state == "open":
            breaker.probe_now(now)
        if up is not target.up and (target.up is not None or not up):
            log.warning(
                "gateway backend %s is %s",
                target.backend.url,
                "up" if up else "down",
                extra={"backend": target.backend.url, "up": up},
            )
        target.up, target.checked_at = up, now
        metrics.BACKEND_UP.labels(target.backend.url).set(1 if up else 0)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per backend URL: the last probe's result and the breaker's state."""
        return {
            t.backend.url: {"up": t.up, "breaker": t.backend.breaker.state, "probe": t.path}
            for t in self.targets
        }

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
