"""``/readyz`` reports the gateway's backends (where this process runs the gateway) without a
down model server making the glue pod unready.

Real pieces: the runtime's PostgreSQL and Milvus Lite, a scripted OpenAI-compatible upstream
on a real port, and a port nobody listens on as the dead backend; the gateway's own active
health checks decide which is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.scripted import ScriptedUpstream, free_port, serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live() -> Iterator[ScriptedUpstream]:
    with serve(ScriptedUpstream("live")) as upstream:
        yield upstream


async def _drop_gateway(runtime: Any) -> None:
    gateway = runtime._cache.pop("gateway", None)
    if gateway is not None:
        await gateway.close()


@pytest.fixture(scope="module")
async def api(runtime: Any, live: ScriptedUpstream) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    dead = f"http://127.0.0.1:{free_port()}"
    saved = runtime.settings.gateway
    runtime.settings.gateway = GatewaySettings.model_validate(
        {
            "models": [
                {"name": "ready-up", "backends": [{"url": live.url}]},
                {"name": "ready-down", "backends": [{"url": dead}]},
                {"name": "ready-half", "backends": [{"url": live.url}, {"url": dead}]},
                {"name": "ready-ext", "provider": "external", "backends": [{"url": dead + "/x"}]},
            ],
            "health_interval_s": 0.1,
            "health_timeout_s": 0.5,
        }
    )
    await _drop_gateway(runtime)
    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
        client.dead = dead  # type: ignore[attr-defined]
        yield client
    await _drop_gateway(runtime)
    runtime.settings.gateway = saved


async def test_readyz_does_not_create_the_gateway(api: httpx.AsyncClient, runtime: Any) -> None:
    r = await api.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["checks"] == {"postgres": "ok", "milvus": "ok"}
    assert "gateway" not in body and "degraded" not in body
    assert runtime.cached_gateway() is None  # asking did not start one


async def test_a_down_model_backend_is_degraded_not_unready(
    api: httpx.AsyncClient, runtime: Any, live: ScriptedUpstream
) -> None:
    dead = api.dead  # type: ignore[attr-defined]
    gateway = await runtime.gateway()
    assert gateway.health is not None
    deadline = time.monotonic() + 10
    while gateway.health.snapshot().get(dead, {}).get("up") is not False or (
        gateway.health.snapshot()[live.url]["up"] is not True
    ):
        assert time.monotonic() < deadline, "the health checks did not run"
        await asyncio.sleep(0.05)

    r = await api.get("/readyz")
    assert r.status_code == 200, r.text  # the pod stays in its Service
    body = r.json()
    assert body["status"] == "ok"
    backends = body["gateway"]["backends"]
    assert set(backends) == {live.url, dead}  # the external provider is not probed
    assert backends[live.url]["up"] is True and backends[dead]["up"] is False
    assert backends[dead]["breaker"] == "open"
    assert body["degraded"] == {
        "gateway_backends_down": [dead],
        "gateway_models_unavailable": ["ready-down"],  # ready-half still has a live replica
    }


async def test_an_unready_database_still_fails_readyz_with_the_gateway_details(
    api: httpx.AsyncClient, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await runtime.gateway()

    class Broken:
        def connect(self) -> Any:
            raise ConnectionRefusedError("postgres is down")

    monkeypatch.setattr(runtime, "engine", Broken())
    r = await api.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["postgres"] == "error: ConnectionRefusedError"
    assert "backends" in body["gateway"]
