"""The ERP facade end to end: an ERP's Keycloak client-credentials token → ``POST
/v1/apps/{app}/run`` through the running API → Dify (a replay of 1.14.2's service API on a
real port) → the answer, the run record, the audit entry; idempotent retries, streaming,
async runs with an HMAC-signed callback verified independently, forged tokens and other
tenants' apps refused, PII guarded both ways.

Keycloak and Dify cannot run here: tests/keycloak_issuer.py mints Keycloak-shaped tokens and
serves the JWKS; tests/dify_service_fake.py replays Dify's service API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dify_service_fake import FakeDifyService, ScriptedApp
from keycloak_issuer import JwksHttpServer, KeycloakRealm, serve_jwks
from local_server import LocalServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmflow.settings import AuthSettings

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TENANT = "dept-finance"
OTHER = "dept-hr"
ERP_CLIENT = "erp-sap-finance"


def policies_with_app_run(src: Path, dst: Path) -> Path:
    """The shipped policies, plus the ``app.run`` action if this checkout's Rego lacks it.

    ``app.run`` is the facade's action (docs/erp-facade.md): granted like ``model.use`` (every
    realm role, and API keys with role ``model``), never across tenants. Until the edit is in
    policies/opa/authz.rego the test applies exactly that edit to a copy.
    """
    shutil.copytree(src, dst)
    rego = dst / "opa" / "authz.rego"
    text = rego.read_text()
    if '"app.run"' in text:
        return dst
    edits = [
        ('"audit.read", "pii.use",\n}', '"audit.read", "pii.use", "app.run",\n}'),
        (
            '"operator": {"kb.read", "search", "model.use", "audit.read", "pii.use"},',
            '"operator": {"kb.read", "search", "model.use", "audit.read", "pii.use", "app.run"},',
        ),
        ('"training.submit", "pii.use",\n\t},', '"training.submit", "pii.use", "app.run",\n\t},'),
        (
            '"viewer": {"kb.read", "search", "model.use", "pii.use"},',
            '"viewer": {"kb.read", "search", "model.use", "pii.use", "app.run"},',
        ),
        ('"model": {"model.use", "pii.use"},', '"model": {"model.use", "pii.use", "app.run"},'),
    ]
    for old, new in edits:
        assert old in text, f"authz.rego changed: cannot apply {old!r}"
        text = text.replace(old, new)
    rego.write_text(text)
    for generated in (dst / "opa").glob("*_test.rego"):
        generated.unlink()
    return dst


class CallbackReceiver(LocalServer):
    """The ERP's callback endpoint: fails the first ``fail_first`` deliveries with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/erp/callback", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        self.deliveries.append((dict(request.headers), await request.body()))
        if len(self.deliveries) <= self.fail_first:
            return Response("busy", status_code=503)
        return JSONResponse({"ok": True})


def independent_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from docs/erp-facade.md (not from our code)."""
    ts = headers["x-llmflow-timestamp"]
    expected = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    given = headers["x-llmflow-signature"].removeprefix("v1=")
    return abs(time.time() - int(ts)) < 300 and hmac.compare_digest(expected, given)


@pytest.fixture(scope="module")
def realm() -> KeycloakRealm:
    return KeycloakRealm("llmflow", base_url="https://sso.llmflow.test")


@pytest.fixture(scope="module")
def jwks(realm: KeycloakRealm) -> Iterator[JwksHttpServer]:
    yield from serve_jwks(realm)


@pytest.fixture(scope="module")
def dify() -> Iterator[FakeDifyService]:
    server = FakeDifyService()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver(fail_first=2)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def platform(
    runtime: Any,
    realm: KeycloakRealm,
    jwks: JwksHttpServer,
    dify: FakeDifyService,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Any]]:
    """The runtime accepting the realm's tokens, the app.run policy, registered apps."""
    from llmflow.dify.facade import FacadeService, facade, install_facade
    from llmflow.dify.secrets import runtime_box

    settings = runtime.settings
    before = (settings.auth, settings.policies_dir, settings.facade)
    for name in ("jwt_verifier", "policy"):
        cached = runtime._cache.pop(name, None)
        if cached is not None:
            await cached.aclose()
    settings.auth = AuthSettings(issuer=realm.issuer, jwks_url=jwks.url, audiences=["llmflow-api"])
    settings.policies_dir = policies_with_app_run(
        settings.policies_dir, tmp_path_factory.mktemp("policies") / "policies"
    )
    settings.facade = settings.facade.model_copy(
        update={"allow_http_callbacks": True, "callback_backoff_s": 0.05}
    )
    service = FacadeService(runtime, settings.facade, runtime_box(runtime))
    install_facade(runtime, service)
    apps: dict[str, ScriptedApp] = {
        "po-summary": dify.add_app("workflow", "po-summary"),
        "policy-chat": dify.add_app("chat", "policy-chat"),
        "hr-only": dify.add_app("workflow", "hr-only"),
    }
    registry = facade(runtime).apps
    await registry.register(TENANT, "po-summary", "workflow", dify.url, apps["po-summary"].key)
    await registry.register(TENANT, "policy-chat", "chat", dify.url, apps["policy-chat"].key)
    await registry.register(OTHER, "hr-only", "workflow", dify.url, apps["hr-only"].key)
    try:
        yield {"apps": apps}
    finally:
        await service.drain()
        await service.aclose()
        for name in ("jwt_verifier", "policy"):
            cached = runtime._cache.pop(name, None)
            if cached is not None:
                await cached.aclose()
        settings.auth, settings.policies_dir, settings.facade = before


@pytest.fixture(scope="module")
async def api(runtime: Any, platform: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
        yield client


def erp_token(
    realm: KeycloakRealm, tenant: str = TENANT, client: str = ERP_CLIENT
) -> dict[str, str]:
    token = realm.token(realm.service_account_claims(client, tenant))
    return {"Authorization": f"Bearer {token}"}


async def audit_rows(runtime: Any, action: str, resource_id: str) -> list[dict[str, Any]]:
    from sqlalchemy import text

    async with runtime.sessions() as s:
        rows = await s.execute(
            text(
                "SELECT actor, actor_kind, decision, details FROM audit_events "
                "WHERE action = :a AND resource_id = :r ORDER BY created_at"
            ),
            {"a": action, "r": resource_id},
        )
        return [dict(r._mapping) for r in rows]


async def test_erp_runs_a_workflow_app_and_is_audited(
    api: httpx.AsyncClient, realm: KeycloakRealm, runtime: Any, dify: FakeDifyService
) -> None:
    body = {"inputs": {"po_number": "PO-2026-0042", "vendor": "한빛상사"}}
    r = await api.post("/v1/apps/po-summary/run", json=body, headers=erp_token(realm))
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "succeeded"
    assert run["outputs"] == {"summary": "요약: PO-2026-0042 한빛상사"}
    assert run["workflow_run_id"] and r.headers["location"] == f"/v1/runs/{run['id']}"
    sent = dify.received[-1]
    assert sent["inputs"] == body["inputs"] and sent["user"] == ERP_CLIENT
    assert sent["response_mode"] == "blocking"
    assert "app-" not in r.text  # the Dify key is never returned

    got = await api.get(f"/v1/runs/{run['id']}", headers=erp_token(realm))
    assert got.status_code == 200
    assert got.json()["outputs"] == run["outputs"]
    assert got.json()["dify"]["status"] == "succeeded"  # Dify's own view of the run

    decisions = await audit_rows(runtime, "app.run", "po-summary")
    assert decisions and decisions[-1]["decision"] == "allow"
    assert decisions[-1]["actor_kind"] == "service"
    finished = await audit_rows(runtime, "app.run.finished", "po-summary")
    assert any(row["details"].get("run_id") == run["id"] for row in finished)


async def test_chat_app_answer_with_citations(api: httpx.AsyncClient, realm: KeycloakRealm) -> None:
    body = {"query": "연차 휴가는 며칠인가요?", "inputs": {}}
    r = await api.post("/v1/apps/policy-chat/run", json=body, headers=erp_token(realm))
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["answer"] == "답변: 연차 휴가는 며칠인가요?"
    assert run["conversation_id"] and run["message_id"]
    assert run["citations"][0]["document_name"] == "규정.pdf"
    missing = await api.post(
        "/v1/apps/policy-chat/run", json={"inputs": {}}, headers=erp_token(realm)
    )
    assert missing.status_code == 422


async def test_idempotent_retry_returns_the_same_run(
    api: httpx.AsyncClient, realm: KeycloakRealm, dify: FakeDifyService
) -> None:
    body = {"inputs": {"po_number": "PO-7", "vendor": "가나물산"}}
    headers = {**erp_token(realm), "Idempotency-Key": "erp-batch-7:line-1"}
    first = await api.post("/v1/apps/po-summary/run", json=body, headers=headers)
    calls = len(dify.received)
    again = await api.post("/v1/apps/po-summary/run", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["replayed"] is True and again.headers["idempotent-replayed"] == "true"
    assert len(dify.received) == calls  # Dify ran once
    changed = await api.post(
        "/v1/apps/po-summary/run", json={"inputs": {"po_number": "PO-8"}}, headers=headers
    )
    assert changed.status_code == 422
    assert "Idempotency-Key" in changed.json()["detail"]
    # Another tenant's identical key is a different run.
    other = await api.post(
        "/v1/apps/hr-only/run",
        json=body,
        headers={**erp_token(realm, OTHER), "Idempotency-Key": "erp-batch-7:line-1"},
    )
    assert other.status_code == 200 and other.json()["id"] != first.json()["id"]


async def test_streaming_is_reframed(api: httpx.AsyncClient, realm: KeycloakRealm) -> None:
    body = {"inputs": {"po_number": "PO-9", "vendor": "다라상회"}, "response_mode": "streaming"}
    async with api.stream(
        "POST", "/v1/apps/po-summary/run", json=body, headers=erp_token(realm)
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = (await r.aread()).decode()
    frames = [f for f in raw.split("\n\n") if f.strip()]
    events = [f.split("\n")[0].removeprefix("event: ") for f in frames if f.startswith("event:")]
    assert events[0] == "run.started" and events[-1] == "run.completed"
    assert "run.step" in events and ": ping" in frames
    deltas = [
        json.loads(f.split("data: ", 1)[1])["text"]
        for f in frames
        if f.startswith("event: run.delta")
    ]
    assert "".join(deltas) == "요약: PO-9 다라상회"
    done = json.loads(frames[-1].split("data: ", 1)[1])
    assert done["status"] == "succeeded" and done["outputs"]["summary"] == "요약: PO-9 다라상회"
    stored = await api.get(f"/v1/runs/{done['id']}", headers=erp_token(realm))
    assert stored.json()["status"] == "succeeded"


async def test_async_run_delivers_a_signed_callback(
    api: httpx.AsyncClient, realm: KeycloakRealm, runtime: Any, receiver: CallbackReceiver
) -> None:
    from llmflow.dify.facade import facade

    body = {
        "inputs": {"po_number": "PO-10", "vendor": "마바상사"},
        "response_mode": "async",
        "callback_url": f"{receiver.url}/erp/callback",
    }
    r = await api.post("/v1/apps/po-summary/run", json=body, headers=erp_token(realm))
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    assert r.json()["status"] == "running" and r.headers["location"] == f"/v1/runs/{run_id}"
    await facade(runtime).drain()
    assert len(receiver.deliveries) == 3  # two 503s, then delivered (retries with back-off)
    secret = await facade(runtime).apps.callback_secret(TENANT)
    headers, payload = receiver.deliveries[-1]
    assert independent_verify(secret, headers, payload)
    assert not independent_verify(secret, headers, payload.replace(b"PO-10", b"PO-11"))
    assert [h["x-llmflow-delivery-attempt"] for h, _ in receiver.deliveries] == ["1", "2", "3"]
    delivered = json.loads(payload)
    assert delivered["id"] == run_id and delivered["outputs"]["summary"] == "요약: PO-10 마바상사"
    stored = (await api.get(f"/v1/runs/{run_id}", headers=erp_token(realm))).json()
    assert stored["callback"] == {"status": "delivered", "attempts": 3}
    insecure = {**body, "callback_url": "ftp://erp.test/cb"}
    assert (
        await api.post("/v1/apps/po-summary/run", json=insecure, headers=erp_token(realm))
    ).status_code == 422


async def test_forged_and_wrong_identities_are_refused(
    api: httpx.AsyncClient, realm: KeycloakRealm
) -> None:
    body = {"inputs": {"po_number": "PO-1"}}
    forged = KeycloakRealm("llmflow").token(realm.service_account_claims(ERP_CLIENT, TENANT))
    r = await api.post(
        "/v1/apps/po-summary/run", json=body, headers={"Authorization": f"Bearer {forged}"}
    )
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (await api.post("/v1/apps/po-summary/run", json=body)).status_code == 401
    # A person's token is not a machine identity.
    user = realm.token(realm.claims(tenant=TENANT, roles=("developer",)))
    r = await api.post(
        "/v1/apps/po-summary/run", json=body, headers={"Authorization": f"Bearer {user}"}
    )
    assert r.status_code == 403 and "machine clients" in r.json()["detail"]


async def test_other_tenants_apps_and_runs_are_invisible(
    api: httpx.AsyncClient, realm: KeycloakRealm
) -> None:
    body = {"inputs": {"po_number": "PO-1"}}
    r = await api.post("/v1/apps/hr-only/run", json=body, headers=erp_token(realm))
    assert r.status_code == 404  # dept-finance has no app hr-only; dept-hr's is not looked up
    own = await api.post("/v1/apps/hr-only/run", json=body, headers=erp_token(realm, OTHER))
    assert own.status_code == 200
    peek = await api.get(f"/v1/runs/{own.json()['id']}", headers=erp_token(realm))
    assert peek.status_code == 404


async def test_pii_is_guarded_both_ways(
    api: httpx.AsyncClient, realm: KeycloakRealm, dify: FakeDifyService
) -> None:
    rrn = "880101-1234568"
    body = {"inputs": {"memo": f"담당자 주민등록번호 {rrn} 확인 요청"}}
    r = await api.post("/v1/apps/po-summary/run", json=body, headers=erp_token(realm))
    assert r.status_code == 200, r.text
    sent = json.dumps(dify.received[-1], ensure_ascii=False)
    assert rrn not in sent and "<KR_RRN_1>" in sent  # the prompt surface pseudonymises
    # The app's answer repeats the pseudonym; the ERP gets its own value back.
    assert r.json()["outputs"]["summary"] == f"요약: 담당자 주민등록번호 {rrn} 확인 요청"
    assert r.json()["pii"] == {"KR_RRN": 1}  # counts per entity type, never values


async def test_example_client_reads_the_facades_answers(
    api: httpx.AsyncClient, realm: KeycloakRealm, receiver: CallbackReceiver, runtime: Any
) -> None:
    """platform/examples/llmflow_client.py against answers recorded from the running API."""
    import sys

    from llmflow.dify.facade import facade

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "platform" / "examples"))
    import llmflow_client as example

    body = {"inputs": {"po_number": "PO-77", "vendor": "사아물산"}}
    blocking = await api.post("/v1/apps/po-summary/run", json=body, headers=erp_token(realm))
    streamed = await api.post(
        "/v1/apps/po-summary/run",
        headers=erp_token(realm),
        json={**body, "response_mode": "streaming"},
    )
    refused = await api.post("/v1/apps/nope/run", json=body, headers=erp_token(realm))
    token = realm.token(realm.service_account_claims(ERP_CLIENT, TENANT))

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            assert b"grant_type=client_credentials" in request.content
            return httpx.Response(200, json={"access_token": token, "expires_in": 300})
        assert request.headers["authorization"] == f"Bearer {token}"
        sent = json.loads(request.content)
        recorded = {"blocking": blocking, "streaming": streamed}[sent["response_mode"]]
        if "/nope/" in request.url.path:
            recorded = refused
        return httpx.Response(
            recorded.status_code, headers=recorded.headers, content=recorded.content
        )

    mock = httpx.MockTransport(answer)
    creds = example.KeycloakClientCredentials(
        "https://sso.test/token", ERP_CLIENT, "s", transport=mock
    )
    with example.LlmflowApps("https://api.test", creds, transport=mock) as apps:
        run = apps.run("po-summary", inputs=body["inputs"], idempotency_key="po-77")
        assert run.status == "succeeded" and run.outputs == {"summary": "요약: PO-77 사아물산"}
        events = [e.event for e in apps.stream("po-summary", inputs=body["inputs"])]
        assert events[0] == "run.started" and events[-1] == "run.completed"
        with pytest.raises(example.FacadeError) as exc:
            apps.run("nope", inputs={})
        assert exc.value.status == 404
    # The example's receiver-side check accepts the facade's real delivery.
    async_body = {**body, "response_mode": "async", "callback_url": f"{receiver.url}/erp/callback"}
    accepted = await api.post("/v1/apps/po-summary/run", json=async_body, headers=erp_token(realm))
    assert accepted.status_code == 202
    await facade(runtime).drain()
    secret = await facade(runtime).apps.callback_secret(TENANT)
    headers, payload = receiver.deliveries[-1]
    assert example.verify_callback(secret, headers, payload)
    assert not example.verify_callback("whsec_other", headers, payload)


async def test_pii_block_and_dify_failures_are_reported(
    api: httpx.AsyncClient, realm: KeycloakRealm, runtime: Any, dify: FakeDifyService
) -> None:
    from llmflow.dify.facade import facade

    registry = facade(runtime).apps
    blocked_app = dify.add_app("workflow", "ai-proto")
    await registry.register("project-ai", "ai-proto", "workflow", dify.url, blocked_app.key)
    calls = len(dify.received)
    # project-ai's policy refuses RRNs in prompts outright: nothing reaches Dify.
    r = await api.post(
        "/v1/apps/ai-proto/run",
        headers=erp_token(realm, "project-ai"),
        json={"inputs": {"memo": "주민등록번호 880101-1234568"}},
    )
    assert r.status_code == 422 and r.json()["errors"] == [{"entity_type": "KR_RRN"}]
    assert len(dify.received) == calls
    # A workflow that fails inside Dify is a finished run with status failed.
    broken = dify.add_app("workflow", "broken", fail=True)
    await registry.register(TENANT, "broken", "workflow", dify.url, broken.key)
    r = await api.post("/v1/apps/broken/run", json={"inputs": {"x": "1"}}, headers=erp_token(realm))
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert "quota" in r.json()["error"]["message"]
    # A key Dify no longer accepts (rotated in Dify, not here) is reported, not hidden.
    await registry.register(TENANT, "stale", "workflow", dify.url, "app-rotatedaway000000")
    r = await api.post("/v1/apps/stale/run", json={"inputs": {"x": "1"}}, headers=erp_token(realm))
    assert r.json()["status"] == "failed"
    assert r.json()["error"] == {
        "code": "unauthorized",
        "message": "Access token is invalid",
        "dify_status": 401,
    }


async def test_an_async_run_survives_the_death_of_its_process(
    api: httpx.AsyncClient,
    realm: KeycloakRealm,
    runtime: Any,
    dify: FakeDifyService,
    receiver: CallbackReceiver,
) -> None:
    """The API process dies while Dify runs the workflow; another process (a replica, or the
    restarted one) finishes the run from Dify's record and calls back once."""
    import asyncio

    from sqlalchemy import text

    from llmflow.dify.facade import FacadeService, facade
    from llmflow.dify.secrets import runtime_box

    slow = dify.add_app("workflow", "slow-po", stall_s=1.0)
    await facade(runtime).apps.register(TENANT, "slow-po", "workflow", dify.url, slow.key)
    receiver.fail_first = 0
    rrn = "880101-1234568"
    body = {
        "inputs": {"po_number": "PO-600", "memo": f"담당자 {rrn}"},
        "response_mode": "async",
        "callback_url": f"{receiver.url}/erp/callback",
    }
    headers = {**erp_token(realm), "Idempotency-Key": "po-600"}
    r = await api.post("/v1/apps/slow-po/run", json=body, headers=headers)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    for _ in range(200):  # Dify's first streamed event carries its ids: stored at once
        stored = (await api.get(f"/v1/runs/{run_id}", headers=erp_token(realm))).json()
        if stored["workflow_run_id"]:
            break
        await asyncio.sleep(0.02)
    assert stored["workflow_run_id"] and stored["status"] == "running"
    assert dify.received[-1]["response_mode"] == "streaming"
    assert rrn not in json.dumps(dify.received[-1], ensure_ascii=False)

    # The process dies: its task ends without a word, and its lease runs out.
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == f"facade-run-{run_id}"]
    task.cancel()
    await asyncio.wait([task])
    async with runtime.sessions() as s:
        await s.execute(
            text("UPDATE facade_runs SET lease_until = now() - interval '1 second' WHERE id = :id"),
            {"id": run_id},
        )
        await s.commit()
    # A retry with the same key meanwhile gets the same run back; Dify is not called again.
    again = await api.post("/v1/apps/slow-po/run", json=body, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == run_id

    settings = runtime.settings.facade.model_copy(update={"recovery_poll_s": 0.05})
    other = FacadeService(runtime, settings, runtime_box(runtime))
    try:
        assert await other.recover() == 1
        await other.drain(timeout_s=60)
    finally:
        await other.aclose()

    delivered = [(h, b) for h, b in receiver.deliveries if h["x-llmflow-run-id"] == run_id]
    assert len(delivered) == 1  # exactly once
    secret = await facade(runtime).apps.callback_secret(TENANT)
    assert independent_verify(secret, *delivered[0])
    payload = json.loads(delivered[0][1])
    assert payload["status"] == "succeeded" and payload["recovered"] is True
    # The pseudonym map died with the process: the answer keeps the pseudonym, flagged.
    assert payload["outputs"] == {"summary": "요약: PO-600 담당자 <KR_RRN_1>"}
    assert payload["pii_restored"] is False and payload["pii"] == {"KR_RRN": 1}
    assert [x["app"] for x in dify.received].count("slow-po") == 1
    final = (await api.get(f"/v1/runs/{run_id}", headers=erp_token(realm))).json()
    assert final["status"] == "succeeded"
    assert final["callback"] == {"status": "delivered", "attempts": 1}
    async with runtime.sessions() as s:
        raw = (
            await s.execute(text("SELECT * FROM facade_runs WHERE id = :id"), {"id": run_id})
        ).first()
    assert raw is not None and rrn not in json.dumps(dict(raw._mapping), default=str)


async def test_an_async_run_the_pii_policy_blocks_fails_with_a_callback(
    api: httpx.AsyncClient,
    realm: KeycloakRealm,
    runtime: Any,
    dify: FakeDifyService,
    receiver: CallbackReceiver,
) -> None:
    from llmflow.dify.facade import facade

    blocked_app = dify.add_app("workflow", "ai-proto-async")
    await facade(runtime).apps.register(
        "project-ai", "ai-proto-async", "workflow", dify.url, blocked_app.key
    )
    receiver.fail_first = 0
    calls = len(dify.received)
    r = await api.post(
        "/v1/apps/ai-proto-async/run",
        headers=erp_token(realm, "project-ai"),
        json={
            "inputs": {"memo": "주민등록번호 880101-1234568"},
            "response_mode": "async",
            "callback_url": f"{receiver.url}/erp/callback",
        },
    )
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    await facade(runtime).drain()
    assert len(dify.received) == calls  # nothing reached Dify
    [(headers, payload)] = [
        (h, b) for h, b in receiver.deliveries if h["x-llmflow-run-id"] == run_id
    ]
    secret = await facade(runtime).apps.callback_secret("project-ai")
    assert independent_verify(secret, headers, payload)
    run = json.loads(payload)
    assert run["status"] == "failed" and run["error"]["code"] == "pii_blocked"
    stored = await api.get(f"/v1/runs/{run_id}", headers=erp_token(realm, "project-ai"))
    assert stored.json()["status"] == "failed"  # not left 'running'


async def test_a_keyed_blocking_run_whose_process_died_is_failed_not_in_flight_forever(
    api: httpx.AsyncClient, realm: KeycloakRealm, runtime: Any, dify: FakeDifyService
) -> None:
    """The process serving a keyed blocking run dies mid-run: the client's retry gets 409
    while the lease holds, then — once another process's recovery has failed the run
    ``interrupted`` — the failed run, never a second call to Dify."""
    import asyncio

    from sqlalchemy import text

    from llmflow.dify.facade import FacadeService, facade
    from llmflow.dify.secrets import runtime_box

    slow = dify.add_app("workflow", "slow-block-po", stall_s=1.0)
    await facade(runtime).apps.register(TENANT, "slow-block-po", "workflow", dify.url, slow.key)
    body = {"inputs": {"po_number": "PO-610"}}
    headers = {**erp_token(realm), "Idempotency-Key": "po-610"}
    calls = [x["app"] for x in dify.received].count("slow-block-po")
    first = asyncio.create_task(api.post("/v1/apps/slow-block-po/run", json=body, headers=headers))
    for _ in range(100):
        if [x["app"] for x in dify.received].count("slow-block-po") > calls:
            break
        await asyncio.sleep(0.02)
    in_flight = await api.post("/v1/apps/slow-block-po/run", json=body, headers=headers)
    assert in_flight.status_code == 409
    # The process dies: the request's work ends without a word, the lease runs out.
    first.cancel()
    await asyncio.wait([first])
    async with runtime.sessions() as s:
        run_id = (
            await s.execute(
                text(
                    "UPDATE facade_runs SET lease_until = now() - interval '1 second' "
                    "WHERE tenant_id = :t AND idempotency_key = 'po-610' RETURNING id"
                ),
                {"t": TENANT},
            )
        ).scalar_one()
        await s.commit()
    assert (
        await api.post("/v1/apps/slow-block-po/run", json=body, headers=headers)
    ).status_code == 409

    other = FacadeService(runtime, runtime.settings.facade, runtime_box(runtime))
    try:
        assert await other.recover() == 1
        await other.drain(timeout_s=60)
    finally:
        await other.aclose()
    retry = await api.post("/v1/apps/slow-block-po/run", json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    run = retry.json()
    assert run["id"] == run_id and run["status"] == "failed"
    assert run["error"]["code"] == "interrupted" and run["recovered"] is True
    assert [x["app"] for x in dify.received].count("slow-block-po") == calls + 1  # once
    finished = await audit_rows(runtime, "app.run.finished", "slow-block-po")
    assert [r["details"]["error_code"] for r in finished] == ["interrupted"]
