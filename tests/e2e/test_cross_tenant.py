"""Cross-tenant corpus against the running API (issue 5): two tenants with the same knowledge
base name and look-alike documents; every way a caller controls a request (body, path, query
string, headers, KB names, metadata filters, query text, credentials) is tried, and no result,
document id, source name or knowledge-base id of the other tenant may ever appear in a
response. Errors are 4xx problem details (Dify's own error shape on ``/retrieval``).

Both credential kinds run the corpus: LLMFlow API keys and Keycloak access tokens from the
local realm of tests/keycloak_issuer.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from keycloak_issuer import JwksHttpServer, KeycloakRealm, serve_jwks

from llmflow.settings import AuthSettings

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ALPHA, BETA = "xt-alpha", "xt-beta"
KB = "rules"  # the same name in both tenants

DOC = """# {org} 사내 규정

## 제3조(연차 휴가)

연차 휴가 신청은 {portal}에서 한다. 문서 번호 {marker}. 원격 근무 규정과 보안 규정을 따른다.
"""

MILVUS_INJECTIONS = [
    'rules" or tenant_id != "x',
    'rules" || tenant_id == "xt-beta',
    "x') || (1==1",
    'rules"] or kb_id != ["',
    "tenant_id != ''",
]
CYPHER_INJECTIONS = [
    "x' OR 1=1 //",
    "}) MATCH (n) DETACH DELETE n //",
    "rules'}) MATCH (d:Document) RETURN d //",
]
INJECTIONS = MILVUS_INJECTIONS + CYPHER_INJECTIONS
FORGED_HEADERS = [
    {"X-Tenant-Id": BETA},
    {"X-Tenant": BETA},
    {"X-Tenant-Id": BETA, "X-Tenant": BETA, "X-Forwarded-Tenant": BETA},
]
FORGED_QUERY = {"tenant": BETA, "tenant_id": BETA, "x-tenant-id": BETA}
FORGED_BODY = {"tenant": BETA, "tenant_id": BETA, "tenantId": BETA}


@dataclass
class Tenant:
    name: str
    marker: str
    source: str
    kb_id: str = ""
    document_ids: list[str] = field(default_factory=list)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def secrets(self) -> list[str]:
        """What must never appear in another tenant's responses."""
        return [self.marker, self.source, self.kb_id, *self.document_ids]


@dataclass
class Ledger:
    """Every response the corpus got, checked for the other tenant's identifiers."""

    requests: int = 0
    refused: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def check(self, r: httpx.Response, victim: Tenant, *, dify: bool = False) -> None:
        self.requests += 1
        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
        try:
            sent = unquote(str(r.request.url)) + r.request.content.decode(errors="replace")
        except httpx.RequestNotRead:
            sent = unquote(str(r.request.url))
        for secret in victim.secrets:
            if secret in sent:
                continue  # the caller's own input echoed back (problem "instance"/"detail")
            assert secret not in r.text, (r.request.method, str(r.request.url), r.text[:500])
        assert r.status_code < 500, (str(r.request.url), r.text[:500])
        if r.status_code >= 400:
            self.refused += 1
            if dify:
                assert set(r.json()) == {"error_code", "error_msg"}, r.text
            else:
                assert r.headers["content-type"] == "application/problem+json", r.text
                assert r.json()["status"] == r.status_code


@pytest.fixture(scope="module")
async def api(runtime: Any) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):  # starts the in-process ingest worker
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
            yield client


@pytest.fixture(scope="module")
def realm() -> KeycloakRealm:
    return KeycloakRealm("llmflow", base_url="https://sso.llmflow.test")


@pytest.fixture(scope="module")
def jwks(realm: KeycloakRealm) -> Iterator[JwksHttpServer]:
    yield from serve_jwks(realm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_jobs(api: httpx.AsyncClient, h: dict[str, str], ids: list[str]) -> list[Any]:
    for _ in range(600):
        r = await api.get("/v1/jobs", params=[("ids", i) for i in ids], headers=h)
        jobs: list[Any] = r.json()
        if all(j["status"] in ("succeeded", "failed", "skipped") for j in jobs):
            return jobs
        await asyncio.sleep(0.2)
    raise AssertionError(f"jobs did not finish: {jobs}")


async def make_tenant(api: httpx.AsyncClient, runtime: Any, t: Tenant) -> Tenant:
    issue = runtime.api_keys.create
    t.keys = {
        "editor": bearer((await issue(t.name, roles=["editor", "reader"])).key),
        "reader": bearer((await issue(t.name)).key),
        "scoped": bearer((await issue(t.name, [KB])).key),
        "other-kb": bearer((await issue(t.name, ["other-kb"], roles=["editor"])).key),
    }
    h = t.keys["editor"]
    r = await api.post("/v1/kb", json={"name": KB}, headers=h)
    assert r.status_code == 201, r.text
    t.kb_id = r.json()["id"]
    text = DOC.format(org=t.name, portal=f"{t.name}-portal", marker=t.marker)
    files = [("files", (t.source, text.encode(), "text/markdown"))]
    r = await api.post(f"/v1/kb/{KB}/documents", files=files, headers=h)
    assert r.status_code == 202, r.text
    (job,) = await wait_jobs(api, h, [j["job_id"] for j in r.json()["jobs"]])
    assert job["status"] == "succeeded", job
    t.document_ids = [job["document_id"]]
    return t


@pytest.fixture(scope="module")
async def tenants(api: httpx.AsyncClient, runtime: Any) -> tuple[Tenant, Tenant]:
    alpha = await make_tenant(api, runtime, Tenant(ALPHA, "ALPHA-7731", "alpha-handbook.md"))
    beta = await make_tenant(api, runtime, Tenant(BETA, "BETA-9924", "beta-handbook.md"))
    return alpha, beta


def search_body(**kw: Any) -> dict[str, Any]:
    return {"query": "연차 휴가 신청", "knowledge_bases": [KB], "mode": "hybrid", **kw}


async def own_results_only(
    api: httpx.AsyncClient, ledger: Ledger, me: Tenant, victim: Tenant, h: dict[str, str]
) -> None:
    """The baseline: a plain search finds the caller's own document, not the victim's."""
    r = await api.post("/v1/search", json=search_body(), headers=h)
    ledger.check(r, victim)
    assert r.status_code == 200, r.text
    texts = " ".join(hit["text"] for hit in r.json()["results"])
    assert me.marker in texts


async def run_corpus(
    api: httpx.AsyncClient,
    ledger: Ledger,
    me: Tenant,
    victim: Tenant,
    creds: dict[str, dict[str, str]],
    label: str,
) -> None:
    """The corpus for one attacker (``me``); ``creds`` has ``read`` and ``write`` headers of
    ``me`` and, where the credential kind has them, ``scoped``/``other-kb``/``reader``."""
    read, write = creds["read"], creds["write"]
    victim_doc = victim.document_ids[0]
    await own_results_only(api, ledger, me, victim, read)

    # -- tenant forged in headers, query string and body
    for extra in FORGED_HEADERS:
        for method, path, body in (
            ("GET", "/v1/kb", None),
            ("GET", f"/v1/kb/{KB}", None),
            ("GET", f"/v1/kb/{KB}/documents", None),
            ("POST", "/v1/search", search_body()),
        ):
            r = await api.request(method, path, json=body, headers={**read, **extra})
            ledger.check(r, victim)
            assert r.status_code == 200, r.text
    r = await api.get("/v1/kb", params=FORGED_QUERY, headers=read)
    ledger.check(r, victim)
    assert [k["tenant_id"] for k in r.json()] == [me.name] * len(r.json())
    r = await api.get(f"/v1/kb/{KB}/documents", params=FORGED_QUERY, headers=read)
    ledger.check(r, victim)
    assert [d["id"] for d in r.json()] == me.document_ids
    r = await api.post(
        "/v1/search", params=FORGED_QUERY, json=search_body(**FORGED_BODY), headers=read
    )
    ledger.check(r, victim)
    assert r.status_code == 200
    assert all(h["citation"]["document_id"] in me.document_ids for h in r.json()["results"])
    forged_kb = f"forged-{label}-{me.name}"
    r = await api.post(
        "/v1/kb",
        params=FORGED_QUERY,
        json={"name": forged_kb, **FORGED_BODY},
        headers={**write, "X-Tenant-Id": victim.name},
    )
    ledger.check(r, victim)
    assert r.status_code == 201 and r.json()["tenant_id"] == me.name, r.text

    # -- tenant forged in the path; the victim's ids used in our paths
    for path in (
        f"/v1/kb/{victim.name}",
        f"/v1/kb/{victim.name}/documents",
        f"/v1/tenants/{victim.name}/kb/{KB}",
        f"/v1/{victim.name}/kb/{KB}/documents",
        f"/v1/kb/{KB}/documents/{victim_doc}",
        f"/v1/kb/{quote('../' + victim.name, safe='')}/documents",
        f"/v1/kb/{victim.kb_id}/documents",
        f"/v1/jobs/{victim_doc}",
    ):
        r = await api.get(path, headers=read)
        ledger.check(r, victim)
        assert r.status_code in (403, 404), (path, r.text)
    r = await api.delete(f"/v1/kb/{KB}/documents/{victim_doc}", headers=write)
    ledger.check(r, victim)
    assert r.status_code == 404, r.text

    # -- Milvus filter and Cypher injection in KB names, metadata conditions and query text
    for bad in INJECTIONS:
        r = await api.post("/v1/search", json=search_body(knowledge_bases=[bad]), headers=read)
        ledger.check(r, victim)
        assert r.status_code in (403, 404), (bad, r.text)
        r = await api.post("/v1/search", json=search_body(knowledge_bases=[KB, bad]), headers=read)
        ledger.check(r, victim)
        assert r.status_code in (403, 404), (bad, r.text)
        r = await api.get(f"/v1/kb/{quote(bad, safe='')}/documents", headers=read)
        ledger.check(r, victim)
        assert r.status_code in (403, 404), (bad, r.text)
        r = await api.post("/v1/kb", json={"name": bad}, headers=write)
        ledger.check(r, victim)
        assert r.status_code == 422, (bad, r.text)
        r = await api.post("/v1/search", json=search_body(query=bad), headers=read)
        ledger.check(r, victim)
        assert r.status_code == 200, r.text
        for name in (["document_name"], ["tenant_id"], [bad]):
            for op, value in (("is", bad), ("is not", bad), ("contains", victim.name)):
                cond = {
                    "logical_operator": "or",
                    "conditions": [{"name": name, "comparison_operator": op, "value": value}],
                }
                r = await api.post(
                    "/v1/search", json=search_body(metadata_condition=cond), headers=read
                )
                ledger.check(r, victim)
                assert r.status_code in (200, 422), r.text

    # -- grants and roles, where the credential kind has them
    if "scoped" in creds:  # a key bound to KB "rules" asks for another KB: 403 either way
        for name in (forged_kb, "no-such-kb", *INJECTIONS[:2]):
            r = await api.post(
                "/v1/search", json=search_body(knowledge_bases=[name]), headers=creds["scoped"]
            )
            ledger.check(r, victim)
            assert r.status_code == 403, r.text
    if "other-kb" in creds:  # a key bound to another KB cannot use "rules"
        oh = creds["other-kb"]
        for method, path in (
            ("GET", f"/v1/kb/{KB}"),
            ("GET", f"/v1/kb/{KB}/documents"),
            ("DELETE", f"/v1/kb/{KB}/documents/{me.document_ids[0]}"),
        ):
            r = await api.request(method, path, headers=oh)
            ledger.check(r, victim)
            assert r.status_code == 403, r.text
        r = await api.post("/v1/search", json=search_body(), headers=oh)
        ledger.check(r, victim)
        assert r.status_code == 403 and "outside the subject's knowledge-base grant" in r.text
        r = await api.get("/v1/kb", headers=oh)
        ledger.check(r, victim)
        assert r.json() == []
    reader = creds["reader"]  # read-only credentials never write
    files = [("files", ("x.md", b"# x\n\nx", "text/markdown"))]
    for method, path, kw in (
        ("POST", f"/v1/kb/{KB}/documents", {"files": files}),
        ("DELETE", f"/v1/kb/{KB}/documents/{me.document_ids[0]}", {}),
        ("DELETE", f"/v1/kb/{KB}", {}),
        ("POST", "/v1/kb", {"json": {"name": "reader-made"}}),
    ):
        r = await api.request(method, path, headers={**reader, "X-Tenant-Id": me.name}, **kw)
        ledger.check(r, victim)
        assert r.status_code == 403, (method, path, r.text)
    r = await api.get(f"/v1/kb/{KB}/documents", headers=read)
    assert [d["id"] for d in r.json()] == me.document_ids  # nothing was deleted


async def test_api_keys_never_cross_tenants(
    api: httpx.AsyncClient, tenants: tuple[Tenant, Tenant]
) -> None:
    alpha, beta = tenants
    ledger = Ledger()
    for me, victim in ((alpha, beta), (beta, alpha)):
        creds = {
            "read": me.keys["reader"],
            "write": me.keys["editor"],
            "scoped": me.keys["scoped"],
            "other-kb": me.keys["other-kb"],
            "reader": me.keys["scoped"],
        }
        await run_corpus(api, ledger, me, victim, creds, "key")

    # Dify's External Knowledge API: the key's tenant decides, the body cannot
    for me, victim in ((alpha, beta), (beta, alpha)):
        for key in ("reader", "scoped"):
            h = me.keys[key]
            body = {
                "knowledge_id": KB,
                "query": "연차 휴가 신청",
                "retrieval_setting": {"top_k": 5, "score_threshold": 0.0},
                **FORGED_BODY,
            }
            r = await api.post("/retrieval", json=body, headers={**h, "X-Tenant-Id": victim.name})
            ledger.check(r, victim, dify=True)
            assert r.status_code == 200 and me.marker in json.dumps(r.json(), ensure_ascii=False)
            for bad in INJECTIONS:
                r = await api.post("/retrieval", json={**body, "knowledge_id": bad}, headers=h)
                ledger.check(r, victim, dify=True)
                expected = (403, 1002) if key == "scoped" else (404, 2001)
                assert (r.status_code, r.json()["error_code"]) == expected, r.text
                cond = {
                    "conditions": [
                        {"name": ["document_name"], "comparison_operator": "is", "value": bad}
                    ]
                }
                r = await api.post(
                    "/retrieval", json={**body, "query": bad, "metadata_condition": cond}, headers=h
                )
                ledger.check(r, victim, dify=True)
                assert r.status_code == 200 and r.json()["records"] == []
        # a key bound to another KB of the same tenant
        r = await api.post(
            "/retrieval",
            json={"knowledge_id": KB, "query": "연차", "retrieval_setting": {"top_k": 3}},
            headers=me.keys["other-kb"],
        )
        ledger.check(r, victim, dify=True)
        assert (r.status_code, r.json()["error_code"]) == (403, 1002)

    # the other tenant's key on this tenant's KB id and document id
    r = await api.get(f"/v1/kb/{KB}/documents/{alpha.document_ids[0]}", headers=beta.keys["reader"])
    ledger.check(r, alpha)
    assert r.status_code == 404
    print(f"\ncross-tenant corpus (API keys): {ledger}")
    assert ledger.requests > 250 and ledger.refused > 100


async def test_keycloak_tokens_never_cross_tenants(
    api: httpx.AsyncClient,
    runtime: Any,
    tenants: tuple[Tenant, Tenant],
    realm: KeycloakRealm,
    jwks: JwksHttpServer,
) -> None:
    alpha, beta = tenants
    before = runtime.settings.auth
    verifier = runtime._cache.pop("jwt_verifier", None)
    if verifier is not None:
        await verifier.aclose()
    runtime.settings.auth = AuthSettings(
        issuer=realm.issuer, jwks_url=jwks.url, audiences=["llmflow-api"]
    )
    ledger = Ledger()
    try:

        def token(tenant: str, role: str, **kw: Any) -> dict[str, str]:
            return bearer(realm.token(realm.claims(tenant=tenant, roles=(role,), **kw)))

        for me, victim in ((alpha, beta), (beta, alpha)):
            creds = {
                "read": token(me.name, "viewer", username=f"viewer-{me.name}"),
                "write": token(me.name, "developer", username=f"dev-{me.name}"),
                "reader": token(me.name, "operator", username=f"ops-{me.name}"),
            }
            await run_corpus(api, ledger, me, victim, creds, "jwt")
            # groups of the other tenant and a platform-admin role change nothing
            for h in (
                token(me.name, "viewer", groups=[f"/tenants/{victim.name}"]),
                token(me.name, "platform-admin", username=f"admin-{me.name}"),
            ):
                await own_results_only(api, ledger, me, victim, {**h, "X-Tenant-Id": victim.name})
                r = await api.get("/v1/kb", params=FORGED_QUERY, headers=h)
                ledger.check(r, victim)
                assert {k["tenant_id"] for k in r.json()} == {me.name}
            # through APISIX: the token in X-Access-Token, a forged tenant header beside it
            access = token(me.name, "viewer")["Authorization"].split()[1]
            r = await api.post(
                "/v1/search",
                json=search_body(),
                headers={"X-Access-Token": access, "X-Tenant-Id": victim.name},
            )
            ledger.check(r, victim)
            assert r.status_code == 200
    finally:
        verifier = runtime._cache.pop("jwt_verifier", None)
        if verifier is not None:
            await verifier.aclose()
        runtime.settings.auth = before
    print(f"\ncross-tenant corpus (Keycloak tokens): {ledger}")
    assert ledger.requests > 250 and ledger.refused > 80
