"""Keycloak access-token verification against a local RS256 issuer and a real JWKS server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from keycloak_issuer import (
    JwksHttpServer,
    KeycloakRealm,
    RealmKey,
    dead_url,
    serve_jwks,
    sign_hs256,
    sign_rs,
    split,
    unsigned,
)
from pydantic import ValidationError

from llmflow.auth.jwks import parse_jwks
from llmflow.auth.jwt import JwtVerifier, principal_from_claims
from llmflow.auth.principal import Principal
from llmflow.errors import ServiceUnavailable, Unauthorized
from llmflow.settings import AuthSettings


class Clock:
    """Monotonic time the test moves by hand (JWKS cache ages only)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def realm() -> KeycloakRealm:
    return KeycloakRealm()


@pytest.fixture
def jwks(realm: KeycloakRealm) -> Iterator[JwksHttpServer]:
    # Function scope: tests rotate keys and take the server down.
    yield from serve_jwks(realm)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def settings_for(realm: KeycloakRealm, jwks_url: str, **overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {
        "issuer": realm.issuer,
        "jwks_url": jwks_url,
        "audiences": ["llmflow-api"],
        "jwks_cache_ttl_s": 300,
        "jwks_min_refetch_interval_s": 10,
        "leeway_s": 30,
    }
    values.update(overrides)
    return AuthSettings(**values)


@pytest.fixture
async def verifier(
    realm: KeycloakRealm, jwks: JwksHttpServer, clock: Clock
) -> AsyncIterator[JwtVerifier]:
    v = JwtVerifier(settings_for(realm, jwks.url), clock=clock)
    try:
        yield v
    finally:
        await v.aclose()


async def rejected(verifier: JwtVerifier, token: str, reason: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        await verifier.authenticate(token)
    detail = info.value.detail
    assert reason in detail, detail
    for part in token.split("."):
        assert len(part) < 8 or part not in detail  # the message never echoes the token
    return info.value


# --- the happy path: Keycloak's tokens map onto principals ---------------------------------


async def test_keycloak_user_token_becomes_a_principal(
    verifier: JwtVerifier, realm: KeycloakRealm
) -> None:
    claims = realm.claims(tenant="dept-hr", roles=("developer",), username="minji.kim")
    p = await verifier.authenticate(realm.token(claims))
    assert p.tenant_id == "dept-hr"
    assert p.subject == claims["sub"]
    assert p.kind == "user"
    assert p.client_id == "llmflow-web"
    assert p.username == "minji.kim"
    assert p.groups == frozenset({"/tenants/dept-hr"})
    assert {"developer", "reader", "editor", "offline_access"} <= p.roles
    assert p.knowledge_bases == frozenset()
    assert p.may_read("handbook") and p.may_edit() and p.may_edit("handbook")


async def test_audience_as_string_and_as_list(verifier: JwtVerifier, realm: KeycloakRealm) -> None:
    single = realm.claims(audience=["llmflow-api"])
    assert single["aud"] == "llmflow-api"  # Keycloak's serialization of one audience
    assert (await verifier.authenticate(realm.token(single))).tenant_id == "dept-hr"
    several = realm.claims(audience=["account", "llmflow-api"])
    assert isinstance(several["aud"], list)
    assert (await verifier.authenticate(realm.token(several))).tenant_id == "dept-hr"


async def test_service_account_token_is_a_service(
    verifier: JwtVerifier, realm: KeycloakRealm
) -> None:
    claims = realm.service_account_claims("erp-finance", "dept-finance")
    p = await verifier.authenticate(realm.token(claims))
    assert (p.kind, p.client_id, p.tenant_id) == ("service", "erp-finance", "dept-finance")
    assert p.groups == frozenset() and "viewer" in p.roles and "reader" in p.roles
    assert not p.may_edit() and p.username is None  # no profile scope: no preferred_username


@pytest.mark.parametrize(
    ("variant", "kind"),
    [
        ({"keycloak": 25}, "service"),  # 'clientId' before Keycloak 26
        ({"profile_scope": True}, "service"),
        ({"profile_scope": True, "drop": "client_id"}, "service"),  # username signal alone
        ({"drop": "client_id"}, "user"),  # no signal left
    ],
)
def test_service_account_signals(realm: KeycloakRealm, variant: dict[str, Any], kind: str) -> None:
    drop = variant.pop("drop", None)
    claims = realm.service_account_claims("ERP-HR", "dept-hr", **variant)
    claims.pop(drop or "", None)
    p = principal_from_claims(claims)
    assert p.kind == kind and p.client_id == "ERP-HR"


def test_realm_roles_also_come_from_the_top_level_roles_claim(realm: KeycloakRealm) -> None:
    # a token issued to a client with the llmflow scope but without Keycloak's 'roles' scope
    claims = realm.claims(roles=("viewer",))
    del claims["realm_access"]
    p = principal_from_claims(claims)
    assert "viewer" in p.roles and p.may_read("handbook") and not p.may_edit()


def test_a_user_named_like_another_clients_service_account_is_a_user(
    realm: KeycloakRealm,
) -> None:
    claims = realm.claims(username="service-account-erp-finance", azp="llmflow-web")
    assert principal_from_claims(claims).kind == "user"


@pytest.mark.parametrize(
    ("realm_roles", "reads", "edits"),
    [
        (("platform-admin",), True, True),
        (("developer",), True, True),
        (("operator",), True, False),
        (("viewer",), True, False),
        ((), False, False),  # only Keycloak's default roles: no data access
        (("editor", "reader"), False, False),  # realm roles cannot impersonate API-key roles
    ],
)
def test_realm_roles_map_to_data_plane_roles(
    realm: KeycloakRealm, realm_roles: tuple[str, ...], reads: bool, edits: bool
) -> None:
    p = principal_from_claims(realm.claims(roles=realm_roles))
    assert set(realm_roles) - {"editor", "reader"} <= p.roles
    assert p.may_read("handbook") is reads
    assert p.may_edit() is edits and p.may_edit("handbook") is edits


def test_api_key_semantics_are_unchanged() -> None:
    reader = Principal("acme", "apikey:1", frozenset({"rules"}), frozenset({"reader"}))
    assert reader.kind == "api_key"
    assert reader.may_read("rules") and not reader.may_read("other") and not reader.may_edit()
    editor = Principal("acme", "apikey:2", roles=frozenset({"editor", "reader"}))
    assert editor.may_edit() and editor.may_edit("any") and editor.may_read("any")
    bound_editor = Principal("acme", "apikey:3", frozenset({"rules"}), frozenset({"editor"}))
    assert bound_editor.may_edit("rules") and not bound_editor.may_edit()
    assert not bound_editor.may_edit("other")


def test_principal_is_still_importable_from_apikeys() -> None:
    from llmflow.auth.apikeys import Principal as Legacy

    assert Legacy is Principal


# --- claims -----------------------------------------------------------------------------


async def test_time_claims_and_leeway(verifier: JwtVerifier, realm: KeycloakRealm) -> None:
    now = int(time.time())
    assert "nbf" not in realm.claims()  # Keycloak does not emit nbf: it must not be required
    within_leeway = realm.claims(issued_at=now - 310)  # expired 10 s ago, leeway 30 s
    assert (await verifier.authenticate(realm.token(within_leeway))).tenant_id == "dept-hr"
    await rejected(verifier, realm.token(realm.claims(issued_at=now - 400)), "expired")
    await rejected(verifier, realm.token({**realm.claims(), "nbf": now + 120}), "not yet valid")
    await rejected(verifier, realm.token(realm.claims(issued_at=now + 120)), "not yet valid")
    ok_nbf = {**realm.claims(), "nbf": now - 5}
    assert (await verifier.authenticate(realm.token(ok_nbf))).tenant_id == "dept-hr"


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub"])
async def test_required_claims(verifier: JwtVerifier, realm: KeycloakRealm, claim: str) -> None:
    claims = realm.claims()
    del claims[claim]
    await rejected(verifier, realm.token(claims), f"'{claim}'")


async def test_issuer_audience_type_and_tenant(verifier: JwtVerifier, realm: KeycloakRealm) -> None:
    internal = {**realm.claims(), "iss": "http://keycloak.identity:8080/realms/llmflow"}
    await rejected(verifier, realm.token(internal), "issuer is not")
    await rejected(verifier, realm.token(realm.claims(audience=["account"])), "audience")
    id_token = {**realm.claims(), "typ": "ID"}
    await rejected(verifier, realm.token(id_token), "not an access token")
    await rejected(verifier, realm.token(realm.claims(tenant=None)), "no 'tenant' claim")
    await rejected(
        verifier, realm.token(realm.claims(tenant="../dept-finance")), "not a valid tenant"
    )
    listed = {**realm.claims(), "tenant": ["dept-hr", "dept-finance"]}
    await rejected(verifier, realm.token(listed), "no 'tenant' claim")


async def test_forged_tokens_are_rejected(verifier: JwtVerifier, realm: KeycloakRealm) -> None:
    claims = realm.claims()
    header = realm.header()
    await rejected(verifier, unsigned({**header, "alg": "none"}, claims), "'none' is not accepted")
    await rejected(verifier, unsigned({**header, "alg": "None"}, claims), "not accepted")
    confusion = sign_hs256(realm.signing.public_pem, {**header, "alg": "HS256"}, claims)
    await rejected(verifier, confusion, "'HS256' is not accepted")
    good = realm.token(claims)
    head, _, sig = split(good)
    forged_payload = realm.token({**claims, "tenant": "dept-finance"}).split(".")[1]
    await rejected(verifier, f"{head}.{forged_payload}.{sig}", "signature does not verify")
    other = KeycloakRealm("other-realm")
    await rejected(verifier, other.token(claims), "not published by the issuer")
    same_kid = other.token(claims, key=RealmKey("other-realm", private=other.signing.private))
    await rejected(verifier, same_kid, "not published")
    impostor = RealmKey("llmflow", private=other.signing.private)
    faked_kid = {**realm.header(), "kid": realm.signing.kid}
    await rejected(verifier, sign_rs(impostor.private, faked_kid, claims), "does not verify")
    await rejected(verifier, "eyJhbGciOiJSUzI1NiJ9.e30", "malformed")
    await rejected(verifier, "not-base64!.x.y", "malformed")
    await rejected(verifier, sign_rs(realm.signing.private, {"alg": "RS256"}, claims), "'kid'")
    crit = {**realm.header(), "crit": ["exp"]}
    await rejected(verifier, sign_rs(realm.signing.private, crit, claims), "'crit'")


async def test_the_encryption_key_never_verifies_a_signature(
    verifier: JwtVerifier, realm: KeycloakRealm
) -> None:
    # Keycloak's RSA-OAEP key shares the JWKS; a token "signed" with it must not pass.
    enc = realm.encryption
    token = sign_rs_with(enc, realm.claims())
    await rejected(verifier, token, "not published by the issuer")


def sign_rs_with(key: RealmKey, claims: dict[str, Any]) -> str:
    return sign_rs(key.private, {"alg": "RS256", "typ": "JWT", "kid": key.kid}, claims)


def test_jwks_parsing_keeps_only_allowed_signature_keys(realm: KeycloakRealm) -> None:
    doc = realm.jwks()
    assert {k["use"] for k in doc["keys"]} == {"sig", "enc"}
    for key in doc["keys"]:
        assert {"kid", "kty", "alg", "use", "n", "e", "x5c", "x5t", "x5t#S256"} <= set(key)
    keys = parse_jwks(doc, ["RS256"])
    assert set(keys) == {realm.signing.kid}
    assert set(keys[realm.signing.kid]) == {"RS256"}
    rs512 = RealmKey("llmflow", alg="RS512")
    assert rs512.kid not in parse_jwks({"keys": [rs512.jwk()]}, ["RS256"])
    no_alg = {k: v for k, v in realm.signing.jwk().items() if k != "alg"}
    assert set(parse_jwks({"keys": [no_alg]}, ["RS256", "PS256", "ES256"])[no_alg["kid"]]) == {
        "RS256",
        "PS256",
    }
    with pytest.raises(ValueError):
        parse_jwks({"error": "nope"}, ["RS256"])


async def test_a_key_published_for_another_algorithm_is_not_used(
    realm: KeycloakRealm, jwks: JwksHttpServer, clock: Clock
) -> None:
    rs512 = RealmKey("llmflow", alg="RS512")
    realm.extra.append(rs512)
    jwks.publish()
    v = JwtVerifier(settings_for(realm, jwks.url, algorithms=["RS256", "RS512"]), clock=clock)
    try:
        header = {"alg": "RS512", "typ": "JWT", "kid": rs512.kid}
        good = sign_rs(rs512.private, header, realm.claims(), 512)
        assert (await v.authenticate(good)).tenant_id == "dept-hr"
        downgraded = sign_rs(rs512.private, {**header, "alg": "RS256"}, realm.claims())
        with pytest.raises(Unauthorized, match="does not match signing key"):
            await v.authenticate(downgraded)
    finally:
        realm.extra.clear()
        await v.aclose()


def test_settings_refuse_symmetric_and_none_algorithms() -> None:
    for algs in (["HS256"], ["RS256", "none"], []):
        with pytest.raises(ValidationError, match=r"auth\.algorithms"):
            AuthSettings(issuer="https://sso/realms/x", algorithms=algs)
    assert AuthSettings(algorithms=["RS256", "PS256"]).algorithms == ["RS256", "PS256"]


# --- JWKS cache ---------------------------------------------------------------------------


async def test_jwks_is_fetched_once_and_cached_for_its_ttl(
    verifier: JwtVerifier, realm: KeycloakRealm, jwks: JwksHttpServer, clock: Clock
) -> None:
    for _ in range(5):
        await verifier.authenticate(realm.token())
    assert jwks.hits == 1
    clock.now += 299
    await verifier.authenticate(realm.token())
    assert jwks.hits == 1
    clock.now += 2  # past the 300 s TTL
    await verifier.authenticate(realm.token())
    assert jwks.hits == 2


async def test_key_rotation_is_picked_up_on_the_unknown_kid(
    verifier: JwtVerifier, realm: KeycloakRealm, jwks: JwksHttpServer, clock: Clock
) -> None:
    before = realm.token()
    await verifier.authenticate(before)
    clock.now += 11  # within the refetch interval a new kid would wait for the TTL
    old = realm.rotate()
    jwks.publish()
    try:
        after = realm.token()
        assert (await verifier.authenticate(after)).tenant_id == "dept-hr"
        assert jwks.hits == 2  # one refetch for the new kid
        assert (await verifier.authenticate(before)).tenant_id == "dept-hr"  # passive key
        realm.retire_passive()
        jwks.publish()
        clock.now += 301  # cache expires: the retired key disappears with it
        await rejected(verifier, before, "not published")
        assert (await verifier.authenticate(after)).tenant_id == "dept-hr"
    finally:
        realm.signing = old
        realm.retire_passive()


async def test_a_flood_of_unknown_kids_costs_one_fetch_per_interval(
    verifier: JwtVerifier, realm: KeycloakRealm, jwks: JwksHttpServer, clock: Clock
) -> None:
    await verifier.authenticate(realm.token())
    assert jwks.hits == 1
    clock.now += 11  # the last fetch is older than the refetch interval
    jwks.delay_s = 0.2  # the refetch is in flight while the other requests arrive
    stranger = KeycloakRealm("attacker")
    forged = [sign_rs_kid(stranger, f"kid-{i}", realm.claims()) for i in range(200)]
    results = await asyncio.gather(
        *(verifier.authenticate(t) for t in forged), return_exceptions=True
    )
    assert all(isinstance(r, Unauthorized) for r in results), results[:3]
    assert jwks.hits == 2  # 200 unknown kids, one refetch
    jwks.delay_s = 0.0
    await rejected(verifier, sign_rs_kid(stranger, "kid-late", realm.claims()), "not published")
    assert jwks.hits == 2  # still inside the interval
    clock.now += 10
    await rejected(verifier, sign_rs_kid(stranger, "kid-later", realm.claims()), "not published")
    assert jwks.hits == 3  # the interval passed: one more
    assert (await verifier.authenticate(realm.token())).tenant_id == "dept-hr"
    assert jwks.hits == 3


def sign_rs_kid(realm: KeycloakRealm, kid: str, claims: dict[str, Any]) -> str:
    return sign_rs(realm.signing.private, {"alg": "RS256", "typ": "JWT", "kid": kid}, claims)


async def test_jwks_down_is_503_and_cached_keys_keep_working(
    verifier: JwtVerifier, realm: KeycloakRealm, jwks: JwksHttpServer, clock: Clock
) -> None:
    await verifier.authenticate(realm.token())
    jwks.status = 503
    clock.now += 301  # the cache expires while Keycloak is down
    assert (await verifier.authenticate(realm.token())).tenant_id == "dept-hr"
    assert jwks.hits == 2
    clock.now += 11
    with pytest.raises(ServiceUnavailable, match="HTTP 503"):
        await verifier.authenticate(sign_rs_kid(realm, "rotated-kid", realm.claims()))
    jwks.status = 200
    clock.now += 11
    await rejected(verifier, sign_rs_kid(realm, "rotated-kid", realm.claims()), "not published")


async def test_jwks_unreachable_before_first_fetch_is_503(
    realm: KeycloakRealm, clock: Clock
) -> None:
    v = JwtVerifier(settings_for(realm, dead_url(), http_timeout_s=2), clock=clock)
    try:
        with pytest.raises(ServiceUnavailable, match="unreachable") as info:
            await v.authenticate(realm.token())
        assert info.value.status == 503
        assert v.jwks.fetches == 1
        with pytest.raises(ServiceUnavailable):  # no hammering: no second fetch yet
            await v.authenticate(realm.token())
        assert v.jwks.fetches == 1
    finally:
        await v.aclose()


async def test_jwks_answering_garbage_is_503(realm: KeycloakRealm, jwks: JwksHttpServer) -> None:
    jwks.document = {"error": "HTTP 404 Not Found"}  # a wrong realm path on a Keycloak proxy
    v = JwtVerifier(settings_for(realm, jwks.url))
    try:
        with pytest.raises(ServiceUnavailable, match="not a JWK set"):
            await v.authenticate(realm.token())
    finally:
        await v.aclose()


def test_default_jwks_url_is_under_the_issuer() -> None:
    from llmflow.auth.jwt import default_jwks_url

    assert (
        default_jwks_url("https://sso.corp/realms/llmflow")
        == "https://sso.corp/realms/llmflow/protocol/openid-connect/certs"
    )
