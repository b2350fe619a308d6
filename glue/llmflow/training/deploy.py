"""Deploy a registered adapter: load it into every vLLM replica of its base model, put it in
the gateway's routing table, promote or roll back by alias.

The routing table has a static part (``settings.gateway.models``, from Helm values) and a
dynamic part, the adapters deployed here, kept in PostgreSQL (``training_adapter_routes``).
:func:`refresh_gateway` merges the dynamic part into a process' table and rebuilds its gateway;
a glue replica does it when it deploys and whenever :func:`refresh_gateway` is called (the API
runs it at startup and ``llmflow train deploy`` on the replica it talks to). Replicas that did
not deploy learn a new route on their next refresh; until then they answer 404 for it, never a
wrong model. vLLM replicas learn the adapter from ``POST /v1/load_lora_adapter`` (here, and
again by the gateway's ``_ensure_adapter`` on first use after a vLLM restart).

Adapter model names are ``<tenant>/<name>``, so that two tenants' adapters cannot collide.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httpx

from llmflow.errors import Conflict, NotFound, ServiceUnavailable
from llmflow.training.store import AdapterRoute, AdapterRouteStore

if TYPE_CHECKING:
    from llmflow.gateway.config import GatewaySettings, ModelRoute
    from llmflow.runtime import Runtime

log = logging.getLogger(__name__)


def adapter_model_name(tenant_id: str, name: str) -> str:
    return f"{tenant_id}/{name}"


def merged_gateway_settings(static: GatewaySettings, routes: list[AdapterRoute]) -> GatewaySettings:
    """The static table plus the deployed adapters (each served by its base's backends).
    An adapter whose base route is gone is left out with a warning."""
    from llmflow.gateway.config import GatewaySettings, ModelRoute

    models = [m for m in static.models if not _is_dynamic(m, routes)]
    known = {m.name: m for m in models}
    for r in routes:
        base = known.get(r.lora_base)
        if base is None:
            log.warning(
                "adapter route %s: base model %s is not routed; skipped", r.name, r.lora_base
            )
            continue
        models.append(
            ModelRoute(
                name=r.name,
                kind=base.kind,
                provider=base.provider,
                backends=[b.model_copy() for b in base.backends],
                lora_base=r.lora_base,
                lora_path=r.lora_path,
            )
        )
    data = static.model_dump()
    data["models"] = [m.model_dump() for m in models]
    return GatewaySettings.model_validate(data)


def _is_dynamic(route: ModelRoute, routes: list[AdapterRoute]) -> bool:
    return route.lora_base is not None and any(r.name == route.name for r in routes)


async def refresh_gateway(runtime: Runtime) -> GatewaySettings:
    """Merge the deployed adapters into this process' routing table; the gateway is rebuilt
    on its next use (the old one's connections are closed)."""
    routes = await AdapterRouteStore(runtime.sessions).all()
    static = runtime.settings.gateway
    merged = merged_gateway_settings(static, routes)
    if merged != runtime.settings.gateway:
        runtime.settings.gateway = merged
        await runtime.reload_gateway()
    return merged


class AdapterDeployer:
    """Loads adapters into vLLM replicas and records their routes."""

    def __init__(self, runtime: Runtime, timeout_s: float = 120.0) -> None:
        self.runtime = runtime
        self.routes = AdapterRouteStore(runtime.sessions)
        self.timeout_s = timeout_s

    async def deploy(
        self,
        tenant_id: str,
        name: str,
        base_model: str,
        lora_path: str,
        registered_model: str,
        version: str,
        alias: str | None,
    ) -> AdapterRoute:
        """Make ``<tenant>/<name>`` serve ``lora_path`` on every replica of ``base_model``.
        Redeploying the name with another version replaces it (unload, load)."""
        model = adapter_model_name(tenant_id, name)
        gateway = self.runtime.settings.gateway
        base = gateway.route(base_model)
        if base is None or base.lora_base is not None:
            raise NotFound(f"the base model {base_model!r} is not in the gateway's routing table")
        existing = gateway.route(model)
        if existing is not None and existing.lora_base is None:
            raise Conflict(f"{model!r} is a static model of the gateway")
        route = AdapterRoute(
            model, tenant_id, base_model, lora_path, registered_model, version, alias
        )
        await self._load_everywhere(base, model, lora_path)
        await self.routes.upsert(route)
        await refresh_gateway(self.runtime)
        return route

    async def _load_everywhere(self, base: ModelRoute, model: str, lora_path: str) -> None:
        async def one(url: str, api_key: str | None) -> None:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=self.timeout_s) as c:
                try:
                    # a new version under the same name: vLLM keeps the first path it loaded
                    await c.post("/v1/unload_lora_adapter", json={"lora_name": model},
                                 headers=headers)  # fmt: skip
                    r = await c.post(
                        "/v1/load_lora_adapter",
                        json={"lora_name": model, "lora_path": lora_path},
                        headers=headers,
                    )
                except httpx.HTTPError as exc:
                    raise ServiceUnavailable(f"vLLM replica {url} unreachable: {exc}") from exc
                if r.status_code >= 400:
                    raise ServiceUnavailable(
                        f"vLLM replica {url} refused the adapter {model}: "
                        f"HTTP {r.status_code} {r.text[:300]}"
                    )

        await asyncio.gather(
            *(
                one(b.url, b.api_key.get_secret_value() if b.api_key else None)
                for b in base.backends
            )
        )
