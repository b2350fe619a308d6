"""``GET /v1/audit`` through the running API: who may read it (operator and platform-admin of
the tenant; a platform-admin in any tenant), what it shows (the decisions and administrative
changes made before), filters and pagination, and fail-closed authorization when the audit
log cannot be written."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from keycloak_issuer import JwksHttpServer, KeycloakRealm, serve_jwks
from sqlalchemy.ext.asyncio import create_async_engine

from llmflow.observability.audit import AuditLog
from llmflow.settings import AuthSettings
from llmflow.storage.database import session_factory

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TENANT, OTHER = "au-hr", "au-fin"


@pytest.fixture(scope="module")
async def api(runtime: Any) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
            yield client


@pytest.fixture(scope="module")
def realm() -> KeycloakRealm:
    return KeycloakRealm("llmflow", base_url="https://sso.llmflow.test")


@pytest.fixture(scope="module")
def jwks(realm: KeycloakRealm) -> Iterator[JwksHttpServer]:
    yield from serve_jwks(realm)


@pytest.fixture
async def jwt_auth(runtime: Any, realm: KeycloakRealm, jwks: JwksHttpServer) -> AsyncIterator[None]:
    before = runtime.settings.auth
    verifier = runtime._cache.pop("jwt_verifier", None)
    if verifier is not None:
        await verifier.aclose()
    runtime.settings.auth = AuthSettings(
        issuer=realm.issuer, jwks_url=jwks.url, audiences=["llmflow-api"]
    )
    try:
        yield
    finally:
        verifier = runtime._cache.pop("jwt_verifier", None)
        if verifier is not None:
            await verifier.aclose()
        runtime.settings.auth = before


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_audit_shows_decisions_and_changes_to_admins_only(
    api: httpx.AsyncClient, runtime: Any, realm: KeycloakRealm, jwt_auth: None
) -> None:
    def user(tenant: str, role: str) -> dict[str, str]:
        return bearer(realm.token(realm.claims(tenant=tenant, roles=(role,), username=role)))

    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    editor = await runtime.api_keys.create(TENANT, roles=["editor", "reader"], name="ops")
    reader = await runtime.api_keys.create(TENANT, ["handbook"])
    eh, rh = bearer(editor.key), bearer(reader.key)
    headers = {**eh, "X-Request-Id": "req-audit-1"}
    r = await api.post("/v1/kb", json={"name": "handbook", "description": "인사"}, headers=headers)
    assert r.status_code == 201, r.text
    r = await api.delete("/v1/kb/handbook", headers=rh)  # a reader may not
    assert r.status_code == 403
    r = await api.post("/v1/kb", json={"name": "other"}, headers=user(OTHER, "developer"))
    assert r.status_code == 201, r.text

    # who may read it
    for h in (user(TENANT, "viewer"), user(TENANT, "developer"), eh, rh):
        r = await api.get("/v1/audit", headers=h)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
    operator = user(TENANT, "operator")
    r = await api.get("/v1/audit", params={"tenant": OTHER}, headers=operator)
    assert r.status_code == 403 and "cross-tenant access denied" in r.json()["detail"]

    r = await api.get("/v1/audit", params={"since": since, "limit": 500}, headers=operator)
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert {e["tenant_id"] for e in events} == {TENANT}
    made = [(e["actor"], e["action"], e["resource_id"], e["decision"]) for e in events]
    assert (f"apikey:{editor.id}", "kb.admin", "handbook", "allow") in made
    assert (f"apikey:{editor.id}", "kb.create", "handbook", "allow") in made
    assert (f"apikey:{reader.id}", "kb.admin", "handbook", "deny") in made
    create = next(e for e in events if e["action"] == "kb.create")
    assert create["request_id"] == "req-audit-1"
    assert create["details"]["route"] == "/v1/kb" and create["details"]["method"] == "POST"
    denied = next(e for e in events if (e["action"], e["decision"]) == ("kb.admin", "deny"))
    assert "cannot administer knowledge bases" in denied["reason"]
    assert editor.key not in r.text and reader.key not in r.text
    assert all(e["action"] != "kb.create" or e["resource_id"] != "other" for e in events)

    # filters
    r = await api.get("/v1/audit", params={"since": since, "decision": "deny"}, headers=operator)
    assert {e["decision"] for e in r.json()["events"]} == {"deny"}
    r = await api.get(
        "/v1/audit", params={"since": since, "actor": f"apikey:{reader.id}"}, headers=operator
    )
    assert {e["actor"] for e in r.json()["events"]} == {f"apikey:{reader.id}"}
    r = await api.get("/v1/audit", params={"action": "kb.create", "since": since}, headers=operator)
    assert [e["resource_id"] for e in r.json()["events"]] == ["handbook"]
    r = await api.get("/v1/audit", params={"until": since}, headers=operator)
    assert all(e["created_at"] < since for e in r.json()["events"])

    # pagination: every event once, newest first
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"since": since, "limit": 2}
    while True:
        r = await api.get("/v1/audit", params=params, headers=operator)
        pages += r.json()["events"]
        if r.json()["next_cursor"] is None:
            break
        params["cursor"] = r.json()["next_cursor"]
    assert len(pages) == len({e["id"] for e in pages}) >= len(events)
    assert [e["created_at"] for e in pages] == sorted(
        (e["created_at"] for e in pages), reverse=True
    )

    # a platform-admin reads any tenant's audit (an administrative action, policies/opa)
    admin = user(TENANT, "platform-admin")
    r = await api.get("/v1/audit", params={"tenant": OTHER, "since": since}, headers=admin)
    assert r.status_code == 200, r.text
    assert {e["tenant_id"] for e in r.json()["events"]} == {OTHER}
    assert ("kb.create", "other") in [(e["action"], e["resource_id"]) for e in r.json()["events"]]

    # bad input is a 422 problem, never a 500
    for bad in ({"cursor": "garbage"}, {"since": "2026-11-01T00:00:00"}, {"limit": 0}):
        r = await api.get("/v1/audit", params=bad, headers=operator)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"

    # reading the audit is itself audited
    r = await api.get(
        "/v1/audit", params={"since": since, "action": "audit.read"}, headers=operator
    )
    assert {e["decision"] for e in r.json()["events"]} == {"allow", "deny"}


async def test_unwritable_audit_refuses_allowed_requests(
    api: httpx.AsyncClient, runtime: Any
) -> None:
    """PostgreSQL cannot take the audit events: an allowed request is refused with 503 (no
    unaudited access), a denied one stays 403."""
    editor = await runtime.api_keys.create("au-dead", roles=["editor", "reader"])
    reader = await runtime.api_keys.create("au-dead", ["handbook"])
    r = await api.post("/v1/kb", json={"name": "handbook"}, headers=bearer(editor.key))
    assert r.status_code == 201, r.text
    live = runtime._cache["audit"]
    engine = create_async_engine("postgresql+psycopg://audit@127.0.0.1:1/audit")
    runtime._cache["audit"] = AuditLog(session_factory(engine))
    try:
        r = await api.get("/v1/kb/handbook", headers=bearer(reader.key))
        assert r.status_code == 503 and r.json()["title"] == "Audit log unavailable", r.text
        r = await api.delete("/v1/kb/handbook", headers=bearer(reader.key))
        assert r.status_code == 403, r.text
        body = {"knowledge_id": "handbook", "query": "x", "retrieval_setting": {"top_k": 1}}
        r = await api.post("/retrieval", json=body, headers=bearer(reader.key))
        assert (r.status_code, r.json()["error_code"]) == (503, 5000)
    finally:
        runtime._cache["audit"] = live
        await engine.dispose()
    r = await api.get("/v1/kb/handbook", headers=bearer(reader.key))
    assert r.status_code == 200
