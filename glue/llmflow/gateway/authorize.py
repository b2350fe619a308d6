"""``model.use`` decisions for the gateway, cached briefly.

Every call asks the policy whether this principal may use this model with data of this
classification (``policies/opa``: e.g. ``confidential`` never reaches an external model).
The answer depends only on the principal's identity and roles, the model and the
classification, so it is cached for ``ttl_s``: the policy and its audit record run once per
principal, model and classification per window, not on every token-hungry request. A policy
change therefore takes effect within ``ttl_s`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from llmflow.gateway.config import ModelRoute

if TYPE_CHECKING:
    from llmflow.auth.principal import Principal
    from llmflow.runtime import Runtime


class ModelUsePolicy:
    def __init__(self, rt: Runtime, ttl_s: float = 30.0) -> None:
        self.rt = rt
        self.ttl_s = ttl_s
        self._allowed: dict[tuple[object, ...], float] = {}
        self._pending: dict[tuple[object, ...], asyncio.Lock] = {}
        """One decision per key at a time: when a window ends under load, the requests in
        flight wait for one evaluation (and one audit record) instead of each running it."""

    async def authorize(self, principal: Principal, route: ModelRoute, classification: str) -> None:
        """Raise ``Forbidden`` (with the policy's reason) unless the model may be used."""
        key = (
            principal.tenant_id,
            principal.subject,
            principal.kind,
            tuple(sorted(principal.roles)),
            tuple(sorted(principal.groups)),
            route.name,
            route.provider,
            classification,
        )
        if time.monotonic() - self._allowed.get(key, float("-inf")) < self.ttl_s:
            return
        async with self._pending.setdefault(key, asyncio.Lock()):
            if time.monotonic() - self._allowed.get(key, float("-inf")) < self.ttl_s:
                return  # decided by the request this one waited for
            await self._decide(principal, route, classification, key)

    async def _decide(
        self,
        principal: Principal,
        route: ModelRoute,
        classification: str,
        key: tuple[object, ...],
    ) -> None:
        from llmflow.api.authz import authorize
        from llmflow.auth.policy import model_resource

        await authorize(
            self.rt,
            principal,
            "model.use",
            # an in-process agent runs inside the platform: for the policy it is internal
            # (its own LLM calls pass the gateway again, with their own decision)
            model_resource(
                principal.tenant_id,
                route.name,
                "internal" if route.provider == "agent" else route.provider,
            ),
            {"data_classification": classification},
        )
        now = time.monotonic()
        self._allowed[key] = now
        if len(self._allowed) > 50_000:  # bound the cache: drop the expired entries
            self._allowed = {k: t for k, t in self._allowed.items() if now - t < self.ttl_s}
            self._pending = {k: lock for k, lock in self._pending.items() if lock.locked()}
