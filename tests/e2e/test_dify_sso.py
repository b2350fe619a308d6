"""Keycloak sign-on into the Dify console, end to end through the running API.

The browser is played by an httpx client following redirects by hand: ``/sso/dify/login``
→ Keycloak's authorization endpoint (PKCE) → our callback → Dify's session cookies → the
console accepts them. Then a role change in Keycloak, a refused login, and offboarding from
Keycloak's admin API (users disabled or out of the tenant group lose their Dify membership).

Keycloak and Dify cannot run here: tests/dify_members_fake.py replays Keycloak's
authorization-code endpoints and Dify 1.14.2's account/membership endpoints;
tests/unit/keycloak_fixtures/fake_keycloak.py replays Keycloak's admin REST API.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from dify_members_fake import FakeDifyConsole, FakeKeycloakOidc, KeycloakUser
from keycloak_issuer import KeycloakRealm
from pydantic import SecretStr

from llmflow.settings import AuthSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from keycloak_fixtures.fake_keycloak import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    FakeKeycloak,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CLIENT, SECRET = "dify-console", "dify-console-secret"
ADMIN_KEY = "dify-admin-key-for-tests"
TENANT = "dept-hr"
MINJI = KeycloakUser("minji.kim", TENANT, ("developer",), "Minji.Kim@llmflow.test")


@pytest.fixture(scope="module")
def realm() -> KeycloakRealm:
    return KeycloakRealm("llmflow", base_url="https://sso.llmflow.test")


@pytest.fixture(scope="module")
def keycloak(realm: KeycloakRealm) -> Iterator[FakeKeycloakOidc]:
    server = FakeKeycloakOidc(realm, CLIENT, SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dify() -> Iterator[FakeDifyConsole]:
    server = FakeDifyConsole(ADMIN_KEY, secure=True, web_url="https://dify.test")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def api(
    runtime: Any, realm: KeycloakRealm, keycloak: FakeKeycloakOidc, dify: FakeDifyConsole
) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app
    from llmflow.dify.sso import DifyInstance, DifySsoSettings

    settings = runtime.settings
    before = (settings.auth, settings.dify_sso)
    cached = runtime._cache.pop("jwt_verifier", None)
    if cached is not None:
        await cached.aclose()
    # Public issuer in 'iss'; JWKS and token endpoint on the internal (backchannel) URL.
    certs = f"{keycloak.url}/realms/llmflow/protocol/openid-connect/certs"
    settings.auth = AuthSettings(issuer=realm.issuer, jwks_url=certs, audiences=["llmflow-api"])
    settings.dify_sso = DifySsoSettings(
        client_id=CLIENT,
        client_secret=SecretStr(SECRET),
        instances={
            TENANT: DifyInstance(
                api_url=dify.url,
                web_url="https://dify.test",
                workspace_id=dify.workspace.id,
                admin_api_key=SecretStr(ADMIN_KEY),
            )
        },
    )
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as c:
            yield c
    finally:
        cached = runtime._cache.pop("jwt_verifier", None)
        if cached is not None:
            await cached.aclose()
        settings.auth, settings.dify_sso = before


async def browser_login(
    api: httpx.AsyncClient, keycloak: FakeKeycloakOidc, tenant: str | None = TENANT
) -> httpx.Response:
    """What a browser does: our login → Keycloak (public URL) → our callback."""
    api.cookies.clear()
    start = await api.get("/sso/dify/login", params={"tenant": tenant} if tenant else None)
    assert start.status_code == 302
    target = urlsplit(start.headers["location"])
    assert target.netloc == "sso.llmflow.test"  # the public authorization endpoint
    query = parse_qs(target.query)
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == [CLIENT]
    async with httpx.AsyncClient() as browser:  # Keycloak's public host is the fake here
        signed_in = await browser.get(f"{keycloak.url}{target.path}?{target.query}")
    assert signed_in.status_code == 302
    back = urlsplit(signed_in.headers["location"])
    return await api.get(f"{back.path}?{back.query}")


def dify_cookies(response: httpx.Response) -> dict[str, Any]:
    jar: dict[str, Any] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name, morsel in cookie.items():
            if morsel.value:
                jar[name] = morsel
    return jar


async def console(
    dify: FakeDifyConsole, cookies: dict[str, Any], path: str, **kw: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=dify.url) as client:
        jar = {name: m.value for name, m in cookies.items()}
        header = "; ".join(f"{k}={v}" for k, v in jar.items())
        method = "POST" if "json" in kw else "GET"
        return await client.request(
            method, f"/console/api{path}", headers={"Cookie": header, **kw.pop("headers", {})}, **kw
        )


async def test_first_login_provisions_the_account_and_hands_over_the_session(
    api: httpx.AsyncClient, keycloak: FakeKeycloakOidc, dify: FakeDifyConsole, runtime: Any
) -> None:
    keycloak.login_as(MINJI)
    done = await browser_login(api, keycloak)
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "https://dify.test/apps"
    cookies = dify_cookies(done)
    assert {"__Host-access_token", "__Host-refresh_token", "__Host-csrf_token"} <= set(cookies)
    assert cookies["__Host-access_token"]["httponly"] and cookies["__Host-access_token"]["secure"]
    assert not cookies["__Host-csrf_token"]["httponly"]  # the console's JS echoes it
    # Dify accepts the session: the account was invited with the mapped role and activated.
    profile = await console(dify, cookies, "/account/profile")
    assert profile.status_code == 200, profile.text
    assert profile.json()["email"] == "minji.kim@llmflow.test"
    assert profile.json()["role"] == "editor"  # developer → editor
    assert profile.json()["name"] == "Minji Kim"
    assert profile.json()["interface_language"] == "ko-KR"
    account = dify.by_email(MINJI.email)
    assert account is not None and account.status == "active" and not dify.invites
    csrf = cookies["__Host-csrf_token"].value
    renamed = await console(
        dify, cookies, "/account/name", json={"name": "김민지"}, headers={"X-CSRF-Token": csrf}
    )
    assert renamed.status_code == 200
    # The user never saw a password: it is sealed in our database, not in any response.
    assert account.password and account.password not in done.text
    from sqlalchemy import text

    async with runtime.sessions() as s:
        sealed = (
            await s.execute(
                text("SELECT password_sealed FROM dify_sso_accounts WHERE email = :e"),
                {"e": "minji.kim@llmflow.test"},
            )
        ).scalar_one()
    assert sealed.startswith("v1.") and account.password not in sealed


async def test_next_login_reuses_the_account_and_follows_role_changes(
    api: httpx.AsyncClient, keycloak: FakeKeycloakOidc, dify: FakeDifyConsole
) -> None:
    keycloak.login_as(KeycloakUser("minji.kim", TENANT, ("developer", "operator"), MINJI.email))
    before = len([e for e in dify.log if e[1].endswith("invite-email")])
    done = await browser_login(api, keycloak)
    assert done.status_code == 302, done.text
    assert dify.role_of(MINJI.email) == "admin"  # operator → admin, the highest wins
    assert len([e for e in dify.log if e[1].endswith("invite-email")]) == before
    profile = await console(dify, dify_cookies(done), "/account/profile")
    assert profile.status_code == 200 and profile.json()["role"] == "admin"


async def test_refusals(
    api: httpx.AsyncClient, keycloak: FakeKeycloakOidc, dify: FakeDifyConsole, runtime: Any
) -> None:
    nobody = KeycloakUser("guest", TENANT, (), "guest@llmflow.test")
    keycloak.login_as(nobody)
    r = await browser_login(api, keycloak)
    assert r.status_code == 403 and "no Keycloak realm role" in r.json()["detail"]
    assert dify.by_email("guest@llmflow.test") is None
    # The tenant is the token's claim: a hint for another tenant is refused.
    keycloak.login_as(MINJI)
    r = await browser_login(api, keycloak, tenant="dept-finance")
    assert r.status_code == 403 and "dept-hr" in r.json()["detail"]
    # A callback without this browser's state cookie.
    api.cookies.clear()
    r = await api.get("/sso/dify/callback", params={"code": "x", "state": "y"})
    assert r.status_code == 401
    from sqlalchemy import text

    async with runtime.sessions() as s:
        rows = (
            (
                await s.execute(
                    text(
                        "SELECT decision FROM audit_events WHERE action = 'dify.login' "
                        "ORDER BY created_at"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert "allow" in rows and "deny" in rows


def _admin(url: str) -> httpx.Client:
    token = httpx.post(
        f"{url}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": ADMIN_USER,
            "password": ADMIN_PASSWORD,
        },
    ).json()["access_token"]
    return httpx.Client(
        base_url=f"{url}/admin/realms", headers={"Authorization": f"Bearer {token}"}
    )


def _id(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def seed_keycloak(url: str) -> dict[str, str]:
    """Realm llmflow with /tenants/dept-hr and three users (admin REST API)."""
    with _admin(url) as kc:
        created = kc.post(f"{url}/admin/realms", json={"realm": "llmflow", "enabled": True})
        assert created.status_code == 201, created.text
        profile = kc.get("/llmflow/users/profile").json()
        profile["attributes"].append({"name": "tenant", "displayName": "Tenant"})
        kc.put("/llmflow/users/profile", json=profile)
        for role in ("developer", "viewer"):
            kc.post("/llmflow/roles", json={"name": role})
        tenants = _id(kc.post("/llmflow/groups", json={"name": "tenants"}))
        group = _id(kc.post(f"/llmflow/groups/{tenants}/children", json={"name": TENANT}))
        ids = {}
        for username, email, enabled, in_group in (
            ("minji.kim", MINJI.email, True, True),
            ("left.team", "left@llmflow.test", True, False),
            ("disabled", "disabled@llmflow.test", False, True),
        ):
            uid = _id(
                kc.post(
                    "/llmflow/users",
                    json={
                        "username": username,
                        "email": email,
                        "enabled": enabled,
                        "attributes": {"tenant": [TENANT]},
                    },
                )
            )
            if in_group:
                kc.put(f"/llmflow/users/{uid}/groups/{group}")
            kc.post(f"/llmflow/users/{uid}/role-mappings/realm", json=[{"name": "viewer"}])
            ids[username] = uid
        return ids


async def test_offboarding_removes_who_keycloak_no_longer_entitles(
    api: httpx.AsyncClient, keycloak: FakeKeycloakOidc, dify: FakeDifyConsole, runtime: Any
) -> None:
    from llmflow.dify.sso import KeycloakDirectory, offboard_tenant
    from llmflow.tenancy.keycloak_settings import KeycloakAdminSettings

    # Three people got Dify sessions while they were entitled.
    for user in (
        KeycloakUser("minji.kim", TENANT, ("operator",), MINJI.email),
        KeycloakUser("left.team", TENANT, ("viewer",), "left@llmflow.test"),
        KeycloakUser("disabled", TENANT, ("viewer",), "disabled@llmflow.test"),
    ):
        keycloak.login_as(user)
        assert (await browser_login(api, keycloak)).status_code == 302
    keycloak.login_as(KeycloakUser("disabled", TENANT, ("viewer",), "disabled@llmflow.test"))
    session = dify_cookies(await browser_login(api, keycloak))
    assert (await console(dify, session, "/account/profile")).status_code == 200

    admin_api = FakeKeycloak()
    url = admin_api.start()
    try:
        seed_keycloak(url)
        directory = KeycloakDirectory(
            KeycloakAdminSettings(
                server_url=url,
                realm="llmflow",
                username=ADMIN_USER,
                password=SecretStr(ADMIN_PASSWORD),
            )
        )
        entitled = await directory.entitlements(TENANT)
    finally:
        admin_api.stop()
    assert entitled == {"minji.kim@llmflow.test": "normal"}  # viewer now; others lost access
    sso = runtime.settings.dify_sso
    dry = await offboard_tenant(sso, TENANT, entitled, dry_run=True)
    assert sorted(dry.removed) == ["disabled@llmflow.test", "left@llmflow.test"]
    assert dify.role_of("left@llmflow.test") == "normal"  # a dry run changes nothing
    report = await offboard_tenant(sso, TENANT, entitled)
    assert sorted(report.removed) == ["disabled@llmflow.test", "left@llmflow.test"]
    assert report.role_changed == [("minji.kim@llmflow.test", "admin", "normal")]
    assert "owner@llmflow.test" in report.kept  # the workspace owner is never touched
    assert dify.role_of("left@llmflow.test") is None
    assert (await console(dify, session, "/account/profile")).status_code == 401
