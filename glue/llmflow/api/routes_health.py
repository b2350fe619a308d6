"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from llmflow.api.deps import RuntimeDep

if TYPE_CHECKING:
    from llmflow.gateway.service import GatewayService

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is not ready"}})
async def readyz(rt: RuntimeDep) -> Any:
    """Ready when PostgreSQL answers and the chunk index is reachable.

    Where this process runs the LLM gateway, its backends' last health checks are added as
    details (``gateway``); backends that are down, and the models left with no backend up,
    are reported under ``degraded`` without making the pod unready: a model server is a
    dependency, and taking the glue out of its Service would not bring it back."""
    checks: dict[str, str] = {}
    try:
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        index = await rt.index()
        await index.count("readyz-probe")
        checks["milvus"] = "ok"
    except Exception as exc:
        checks["milvus"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": checks}
    gateway = rt.cached_gateway()
    if gateway is not None and gateway.health is not None:
        body.update(gateway_health(gateway))
    return JSONResponse(body, status_code=200 if ok else 503)


def gateway_health(gateway: GatewayService) -> dict[str, Any]:
    """``gateway``: each probed backend's last check and breaker; ``degraded`` (only when
    something is down): the backends whose last check failed and the models none of whose
    probed backends is up. Backends not probed (external providers by default) or not yet
    checked count as neither up nor down."""
    assert gateway.health is not None
    backends = gateway.health.snapshot()
    out: dict[str, Any] = {"gateway": {"backends": backends}}
    down = sorted(url for url, state in backends.items() if state["up"] is False)
    if not down:
        return out
    unavailable = []
    for route in gateway.settings.models:
        urls = [b.url for b in gateway.pool.backends(route.name)]
        if urls and all(backends.get(u, {}).get("up") is False for u in urls):
            unavailable.append(route.name)
    out["degraded"] = {"gateway_backends_down": down, "gateway_models_unavailable": unavailable}
    return out


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
