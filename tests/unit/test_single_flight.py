"""When a cached credential or policy decision expires while many requests are in flight,
one lookup serves them all (no stampede of identical database round trips or audit rows)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmflow.auth.apikeys import ApiKeys
from llmflow.auth.principal import Principal
from llmflow.errors import Unauthorized
from llmflow.gateway.authorize import ModelUsePolicy
from llmflow.gateway.config import ModelRoute

PRINCIPAL = Principal(tenant_id="dept-hr", subject="apikey:1", roles=frozenset({"model"}))


async def test_concurrent_requests_share_one_api_key_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = ApiKeys(sessions=None, cache_ttl_s=10.0)  # type: ignore[arg-type]
    calls = 0

    async def lookup(prefix: str, key: str) -> Principal:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return PRINCIPAL

    monkeypatch.setattr(keys, "_lookup", lookup)
    key = "llmf_abcdefgh_" + "x" * 40
    results = await asyncio.gather(*(keys.authenticate(key) for _ in range(50)))
    assert calls == 1
    assert all(r is PRINCIPAL for r in results)

    keys.cache_ttl_s = 0.0  # expired: the next wave looks it up again, once per wave member
    await asyncio.gather(*(keys.authenticate(key) for _ in range(3)))
    assert calls == 4


async def test_a_failed_lookup_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = ApiKeys(sessions=None)  # type: ignore[arg-type]
    calls = 0

    async def lookup(prefix: str, key: str) -> Principal:
        nonlocal calls
        calls += 1
        raise Unauthorized("unknown API key")

    monkeypatch.setattr(keys, "_lookup", lookup)
    key = "llmf_abcdefgh_" + "y" * 40
    outcomes = await asyncio.gather(
        *(keys.authenticate(key) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, Unauthorized) for o in outcomes)
    assert calls == 5  # each waiter retries: a refusal is never served from a cache


async def test_concurrent_requests_share_one_policy_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decisions: list[tuple[Any, ...]] = []

    async def authorize(rt: Any, principal: Principal, action: str, *args: Any) -> None:
        decisions.append((principal.subject, action))
        await asyncio.sleep(0.05)

    monkeypatch.setattr("llmflow.api.authz.authorize", authorize)
    policy = ModelUsePolicy(rt=None, ttl_s=30.0)  # type: ignore[arg-type]
    route = ModelRoute(name="qwen", backends=[{"url": "http://127.0.0.1:9"}])
    await asyncio.gather(*(policy.authorize(PRINCIPAL, route, "internal") for _ in range(50)))
    assert decisions == [("apikey:1", "model.use")]
    # another classification is another decision
    await policy.authorize(PRINCIPAL, route, "confidential")
    assert len(decisions) == 2
