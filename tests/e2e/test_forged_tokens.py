"""JWT authentication through the running API: the forged-token corpus of issue 5 is refused
with 401 problem details and nothing of the token reaches a log; Keycloak users and API keys
reach their own tenant's knowledge bases.

Keycloak itself cannot run here: a local realm (tests/keycloak_issuer.py) mints tokens in
Keycloak's exact access-token format and serves its JWKS over real HTTP on 127.0.0.1. As in a
cluster, the public issuer URL in ``iss`` differs from the internal JWKS URL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from keycloak_issuer import (
    JwksHttpServer,
    KeycloakRealm,
    dead_url,
    serve_jwks,
    sign_hs256,
    sign_rs,
    unsigned,
)

from llmflow.settings import AuthSettings

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

HANDBOOK = """# 인사 규정

## 제12조(연차 휴가)

1년간 80% 이상 출근한 직원에게 15일의 유급 연차 휴가를 준다. 연차 신청은 HR포털에서 한다.
"""


@pytest.fixture(scope="module")
def realm() -> KeycloakRealm:
    return KeycloakRealm("llmflow", base_url="https://sso.llmflow.test")


@pytest.fixture(scope="module")
def jwks(realm: KeycloakRealm) -> Iterator[JwksHttpServer]:
    yield from serve_jwks(realm)


@pytest.fixture(scope="module")
async def api(runtime: Any) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):  # starts the in-process ingest worker
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
            yield client


async def _configure(runtime: Any, auth: AuthSettings | None) -> None:
    """Swap the runtime's auth settings and drop the verifier built for the previous ones."""
    verifier = runtime._cache.pop("jwt_verifier", None)
    if verifier is not None:
        await verifier.aclose()
    if auth is not None:
        runtime.settings.auth = auth


@pytest.fixture
async def jwt_auth(
    runtime: Any, realm: KeycloakRealm, jwks: JwksHttpServer
) -> AsyncIterator[AuthSettings]:
    """The API accepts this realm's tokens: public issuer in ``iss``, internal JWKS URL."""
    before = runtime.settings.auth
    auth = AuthSettings(issuer=realm.issuer, jwks_url=jwks.url, audiences=["llmflow-api"])
    await _configure(runtime, auth)
    try:
        yield auth
    finally:
        await _configure(runtime, before)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forged_corpus(realm: KeycloakRealm) -> dict[str, tuple[str, str]]:
    """name → (token, what the 401 detail must say)."""
    now = int(time.time())
    claims = realm.claims(tenant="dept-hr", roles=("platform-admin",))
    header = realm.header()
    valid = realm.token(claims)
    head, _, sig = valid.split(".")
    other = KeycloakRealm("other-realm")
    tampered_payload = realm.token({**claims, "tenant": "dept-finance"}).split(".")[1]
    return {
        "alg none": (unsigned({**header, "alg": "none"}, claims), "'none' is not accepted"),
        "HS256 with the RSA public key": (
            sign_hs256(realm.signing.public_pem, {**header, "alg": "HS256"}, claims),
            "'HS256' is not accepted",
        ),
        "expired": (realm.token(realm.claims(issued_at=now - 3600)), "expired"),
        "not yet valid (nbf)": (realm.token({**claims, "nbf": now + 3600}), "not yet valid"),
        "not yet valid (iat)": (realm.token(realm.claims(issued_at=now + 3600)), "not yet valid"),
        "wrong iss": (
            realm.token({**claims, "iss": "https://sso.llmflow.test/realms/master"}),
            "issuer is not",
        ),
        "wrong aud": (realm.token(realm.claims(audience=["account"])), "audience"),
        "unknown kid": (
            sign_rs(realm.signing.private, {**header, "kid": "no-such-key"}, claims),
            "not published",
        ),
        "tampered payload": (f"{head}.{tampered_payload}.{sig}", "signature does not verify"),
        "missing tenant": (realm.token(realm.claims(tenant=None)), "no 'tenant' claim"),
        "another realm's key": (other.token(claims), "not published"),
        "another realm's key under our kid": (
            sign_rs(other.signing.private, header, claims),
            "signature does not verify",
        ),
    }


async def test_forged_tokens_are_refused_and_never_logged(
    api: httpx.AsyncClient,
    realm: KeycloakRealm,
    jwt_auth: AuthSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    corpus = forged_corpus(realm)
    for name, (token, reason) in corpus.items():
        for headers in (bearer(token), {"X-Access-Token": token}):
            for method, path, body in (
                ("GET", "/v1/kb", None),
                ("POST", "/v1/search", {"query": "연차", "knowledge_bases": ["jwt-handbook"]}),
            ):
                r = await api.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (name, r.text)
                assert r.headers["content-type"] == "application/problem+json", name
                assert r.headers["www-authenticate"] == "Bearer", name
                problem = r.json()
                assert problem["status"] == 401 and reason in problem["detail"], (name, problem)
                assert token.split(".")[1] not in r.text, name
    assert caplog.records, "rejections are logged (without the token)"
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(rec) for rec in caplog.records)
    for name, (token, _) in corpus.items():
        _, payload, sig = token.split(".")
        assert payload not in logged, f"{name}: payload segment logged"
        assert token not in logged and (not sig or sig not in logged), f"{name}: token logged"
    assert "JWT rejected: token expired" in logged


async def wait_job(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> Any:
    for _ in range(600):
        r = await client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("succeeded", "failed", "skipped"):
            return r.json()
        await asyncio.sleep(0.2)
    raise AssertionError("ingest job did not finish")


async def test_keycloak_users_and_api_keys_reach_their_tenant(
    api: httpx.AsyncClient, runtime: Any, realm: KeycloakRealm, jwt_auth: AuthSettings
) -> None:
    token: Callable[..., str] = lambda **kw: realm.token(realm.claims(**kw))  # noqa: E731
    developer = bearer(token(tenant="dept-hr", roles=("developer",), username="minji.kim"))
    viewer = bearer(token(tenant="dept-hr", roles=("viewer",), username="jisoo.park"))
    outsider = bearer(token(tenant="dept-finance", roles=("platform-admin",), username="cfo"))

    r = await api.post("/v1/kb", json={"name": "jwt-handbook"}, headers=developer)
    assert r.status_code == 201, r.text
    r = await api.post(
        "/v1/kb/jwt-handbook/documents",
        files=[("files", ("leave.md", HANDBOOK.encode(), "text/markdown"))],
        headers=developer,
    )
    assert r.status_code == 202, r.text
    job = await wait_job(api, developer, r.json()["jobs"][0]["job_id"])
    assert job["status"] == "succeeded", job

    # a viewer lists and searches; through APISIX the token arrives as X-Access-Token
    for headers in (viewer, {"X-Access-Token": viewer["Authorization"].split()[1]}):
        r = await api.get("/v1/kb", headers=headers)
        assert r.status_code == 200 and "jwt-handbook" in [k["name"] for k in r.json()], r.text
        r = await api.post(
            "/v1/search",
            json={"query": "연차 휴가는 며칠인가요?", "knowledge_bases": ["jwt-handbook"]},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert "15일" in r.json()["results"][0]["text"]
    r = await api.post("/v1/kb", json={"name": "jwt-viewer-kb"}, headers=viewer)
    assert r.status_code == 403, r.text

    # another tenant's admin never sees it: the tenant comes from the verified token only
    r = await api.get("/v1/kb", headers=outsider)
    assert r.status_code == 200 and "jwt-handbook" not in [k["name"] for k in r.json()]
    r = await api.post(
        "/v1/search",
        json={"query": "연차", "knowledge_bases": ["jwt-handbook"]},
        headers=outsider,
    )
    assert r.status_code == 404, r.text

    # a service account (ERP client credentials) with the viewer role reads its tenant
    erp = bearer(realm.token(realm.service_account_claims("erp-hr", "dept-hr")))
    r = await api.get("/v1/kb", headers=erp)
    assert r.status_code == 200 and "jwt-handbook" in [k["name"] for k in r.json()]

    # API keys keep working next to JWTs
    key = await runtime.api_keys.create("dept-hr", ["jwt-handbook"], name="dify")
    r = await api.post(
        "/v1/search",
        json={"query": "연차 신청", "knowledge_bases": ["jwt-handbook"]},
        headers=bearer(key.key),
    )
    assert r.status_code == 200 and "HR포털" in r.json()["results"][0]["text"], r.text

    # two different credentials in one request are refused, not one of them picked
    r = await api.get("/v1/kb", headers={**viewer, "X-Access-Token": key.key})
    assert r.status_code == 401 and "different credentials" in r.json()["detail"]


async def test_jwt_is_refused_clearly_when_not_configured(
    api: httpx.AsyncClient, runtime: Any, realm: KeycloakRealm
) -> None:
    assert runtime.settings.auth.issuer is None
    r = await api.get("/v1/kb", headers=bearer(realm.token()))
    assert r.status_code == 401 and "not configured" in r.json()["detail"], r.text
    r = await api.get("/v1/kb", headers=bearer("hello"))
    assert r.status_code == 401 and "neither an LLMFlow API key" in r.json()["detail"]
    r = await api.get("/v1/kb")
    assert r.status_code == 401 and "missing credential" in r.json()["detail"]


async def test_unreachable_jwks_is_503(
    api: httpx.AsyncClient, runtime: Any, realm: KeycloakRealm
) -> None:
    before = runtime.settings.auth
    await _configure(
        runtime, AuthSettings(issuer=realm.issuer, jwks_url=dead_url(), http_timeout_s=2)
    )
    try:
        r = await api.get("/v1/kb", headers=bearer(realm.token()))
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        detail = r.json()["detail"]
        assert "keys are unavailable" in detail and "unreachable" in detail
        assert "127.0.0.1" not in detail  # the internal JWKS URL stays in the log
    finally:
        await _configure(runtime, before)
