"""Keycloak provisioning against a fake Keycloak admin server that replays the REST contract.

The fake (tests/unit/keycloak_fixtures/fake_keycloak.py) is a real HTTP server on 127.0.0.1,
so python-keycloak runs unmodified: token request, paths, status codes and bodies.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from keycloak_fixtures.fake_keycloak import ADMIN_PASSWORD, ADMIN_USER, FakeKeycloak

from llmflow.tenancy import (
    Action,
    DesiredState,
    KeycloakAdminSettings,
    KeycloakProvisioner,
    KeycloakProvisioningError,
    MountedSecrets,
    ObjectKind,
    SecretRef,
    StaticSecrets,
    TenantSpec,
    TenantSpecError,
    TenantUser,
    connect,
    load_realm_template,
    load_tenants,
    parse_tenants,
    plan_async,
)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "platform" / "keycloak"
TENANTS = REPO / "platform" / "tenants.example.yaml"
APISIX_SECRET = "apisix-client-secret-from-k8s"
ERP_SECRET = "erp-finance-sap-secret-from-k8s"


@pytest.fixture
def kc() -> Iterator[FakeKeycloak]:
    server = FakeKeycloak()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def secrets() -> StaticSecrets:
    return StaticSecrets(
        {
            ("apisix-oidc", "OIDC_CLIENT_SECRET"): APISIX_SECRET,
            ("kc-client-erp-finance-sap", "client-secret"): ERP_SECRET,
        }
    )


@pytest.fixture
def provisioner(kc: FakeKeycloak, secrets: StaticSecrets) -> KeycloakProvisioner:
    settings = KeycloakAdminSettings(
        server_url=kc.url, username=ADMIN_USER, password=ADMIN_PASSWORD
    )
    return KeycloakProvisioner(connect(settings), secrets=secrets)


@pytest.fixture
def desired() -> DesiredState:
    return DesiredState(
        template=load_realm_template(TEMPLATES), tenants=tuple(load_tenants(TENANTS))
    )


def _users(kc: FakeKeycloak) -> dict[str, dict[str, Any]]:
    return {u["username"]: u for u in kc.realms["llmflow"].users.values()}


def _group_paths(kc: FakeKeycloak, username: str) -> set[str]:
    state = kc.realms["llmflow"]
    uid = _users(kc)[username]["id"]
    return {state.groups[g]["path"] for g in state.user_groups[uid]}


def _roles(kc: FakeKeycloak, username: str) -> set[str]:
    state = kc.realms["llmflow"]
    return state.user_roles[_users(kc)[username]["id"]]


def _client(kc: FakeKeycloak, client_id: str) -> dict[str, Any]:
    state = kc.realms["llmflow"]
    return next(c for c in state.clients.values() if c["clientId"] == client_id)


def _without(desired: DesiredState, tenant: str) -> DesiredState:
    return dataclasses.replace(
        desired, tenants=tuple(t for t in desired.tenants if t.name != tenant)
    )


# ---------------------------------------------------------------------- apply / idempotence


def test_first_apply_creates_the_realm_and_every_object(
    kc: FakeKeycloak, provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    plan = provisioner.plan(desired)
    assert plan[0].kind is ObjectKind.REALM and plan[0].action is Action.CREATE
    provisioner.apply(plan, "llmflow")

    state = kc.realms["llmflow"]
    assert {"platform-admin", "operator", "developer", "viewer"} <= set(state.roles)
    scope = next(s for s in state.scopes.values() if s["name"] == "llmflow")
    mappers = {m["name"]: m for m in scope["protocolMappers"]}
    assert mappers["tenant"]["config"]["claim.name"] == "tenant"
    assert mappers["groups"]["config"]["full.path"] == "true"
    assert mappers["llmflow-api audience"]["config"]["included.client.audience"] == "llmflow-api"
    assert scope["id"] in state.default_default_scopes
    for client_id in (
        "llmflow-api",
        "apisix",
        "dify",
        "langfuse",
        "mlflow",
        "grafana",
        "object-store-console",
        "llamafactory-webui",
        "erp-finance-sap",
    ):
        client = _client(kc, client_id)
        assert scope["id"] in state.client_default_scopes[client["id"]], client_id
    # Secrets: taken from the referenced Kubernetes Secret where one is mounted, generated
    # by Keycloak otherwise.
    assert _client(kc, "apisix")["secret"] == APISIX_SECRET
    assert _client(kc, "grafana")["secret"]
    erp = _client(kc, "erp-finance-sap")
    assert erp["secret"] == ERP_SECRET
    assert erp["serviceAccountsEnabled"] and not erp["standardFlowEnabled"]
    assert erp["attributes"]["llmflow.tenant"] == "dept-finance"

    profile = {a["name"]: a for a in state.user_profile["attributes"]}
    assert {"username", "email", "firstName", "lastName", "tenant"} <= set(profile)
    assert profile["tenant"]["permissions"]["edit"] == ["admin"]

    paths = {g["path"] for g in state.groups.values()}
    assert {"/tenants", "/tenants/dept-finance", "/tenants/dept-hr", "/tenants/project-ai"} <= paths

    users = _users(kc)
    assert users["kim.jiwoo"]["attributes"]["tenant"] == ["dept-finance"]
    assert users["park.minjun"]["attributes"]["tenant"] == ["dept-hr"]
    assert _group_paths(kc, "kim.jiwoo") == {"/tenants/dept-finance"}
    assert {"developer", "operator"} <= _roles(kc, "jung.hyunwoo")
    account = users["service-account-erp-finance-sap"]
    assert account["attributes"]["tenant"] == ["dept-finance"]
    assert _group_paths(kc, "service-account-erp-finance-sap") == {"/tenants/dept-finance"}
    assert "viewer" in _roles(kc, "service-account-erp-finance-sap")


def test_second_plan_is_empty(provisioner: KeycloakProvisioner, desired: DesiredState) -> None:
    provisioner.apply(provisioner.plan(desired), "llmflow")
    assert provisioner.plan(desired) == []
    everything = provisioner.plan(desired, include_noop=True)
    assert everything and all(c.action is Action.NOOP for c in everything)


def test_changing_a_tenants_users_updates_attributes_and_membership(
    kc: FakeKeycloak, provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    provisioner.apply(provisioner.plan(desired), "llmflow")
    finance, hr, ai = desired.tenants
    # kim.jiwoo moves to HR; lee.seoyeon leaves every tenant.
    kim = next(u for u in finance.users if u.username == "kim.jiwoo")
    changed = DesiredState(
        template=desired.template,
        tenants=(
            dataclasses.replace(finance, users=()),
            dataclasses.replace(hr, users=(*hr.users, kim)),
            ai,
        ),
    )
    plan = provisioner.plan(changed)
    described = [c.describe() for c in plan]
    assert any(
        c.kind is ObjectKind.USER
        and c.name == "kim.jiwoo"
        and "dept-finance -> dept-hr" in c.detail
        for c in plan
    ), described
    assert any(
        c.kind is ObjectKind.USER and c.name == "lee.seoyeon" and "(none)" in c.detail for c in plan
    ), described
    provisioner.apply(plan, "llmflow")

    users = _users(kc)
    assert users["kim.jiwoo"]["attributes"]["tenant"] == ["dept-hr"]
    assert "tenant" not in users["lee.seoyeon"]["attributes"]
    assert _group_paths(kc, "kim.jiwoo") == {"/tenants/dept-hr"}
    assert _group_paths(kc, "lee.seoyeon") == set()
    assert provisioner.plan(changed) == []


def test_role_change_is_planned_and_applied(
    kc: FakeKeycloak, provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    provisioner.apply(provisioner.plan(desired), "llmflow")
    finance, hr, ai = desired.tenants
    promoted = tuple(
        dataclasses.replace(u, roles=("operator",)) if u.username == "kim.jiwoo" else u
        for u in finance.users
    )
    changed = DesiredState(
        template=desired.template,
        tenants=(dataclasses.replace(finance, users=promoted), hr, ai),
    )
    plan = provisioner.plan(changed)
    assert [(c.kind, c.name, c.detail) for c in plan] == [
        (ObjectKind.USER_ROLES, "kim.jiwoo", "+operator -developer")
    ]
    provisioner.apply(plan, "llmflow")
    assert {"operator"} == _roles(kc, "kim.jiwoo") & {"developer", "operator", "viewer"}


def test_removing_a_tenant_plans_deletes(
    kc: FakeKeycloak, provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    provisioner.apply(provisioner.plan(desired), "llmflow")
    without_finance = _without(desired, "dept-finance")
    plan = provisioner.plan(without_finance)
    deletes = {(c.kind, c.name) for c in plan if c.action is Action.DELETE}
    assert (ObjectKind.GROUP, "/tenants/dept-finance") in deletes
    assert (ObjectKind.MACHINE_CLIENT, "erp-finance-sap") in deletes
    assert any(
        c.kind is ObjectKind.USER and c.name == "kim.jiwoo" and c.action is Action.UPDATE
        for c in plan
    )
    # Users are never deleted, only released from the tenant.
    assert not any(c.kind is ObjectKind.USER and c.action is Action.DELETE for c in plan)
    provisioner.apply(plan, "llmflow")

    state = kc.realms["llmflow"]
    assert "/tenants/dept-finance" not in {g["path"] for g in state.groups.values()}
    assert not any(c["clientId"] == "erp-finance-sap" for c in state.clients.values())
    assert "service-account-erp-finance-sap" not in _users(kc)
    assert "tenant" not in _users(kc)["kim.jiwoo"]["attributes"]
    assert "/tenants/dept-hr" in {g["path"] for g in state.groups.values()}
    assert provisioner.plan(without_finance) == []


# ---------------------------------------------------------------------- ordering


def test_user_profile_attribute_is_declared_before_any_tenant_value(
    kc: FakeKeycloak, provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    plan = provisioner.plan(desired)
    declared = next(i for i, c in enumerate(plan) if c.kind is ObjectKind.USER_PROFILE_ATTRIBUTE)
    first_value = next(
        i for i, c in enumerate(plan) if c.kind in {ObjectKind.USER, ObjectKind.SERVICE_ACCOUNT}
    )
    assert declared < first_value

    provisioner.apply(plan, "llmflow")
    writes = [(method, path, body) for method, path, body in kc.writes()]
    profile_put = next(
        i for i, (m, p, _) in enumerate(writes) if m == "PUT" and p.endswith("/users/profile")
    )
    tenant_writes = [
        i
        for i, (m, p, body) in enumerate(writes)
        if re.search(r"/users(/[^/]+)?$", p)
        and isinstance(body, dict)
        and "tenant" in (body.get("attributes") or {})
    ]
    assert tenant_writes and profile_put < min(tenant_writes)


def test_fake_drops_undeclared_attributes_like_keycloak(kc: FakeKeycloak) -> None:
    """Why the order matters: before the declaration, Keycloak keeps no 'tenant' value."""
    admin = connect(
        KeycloakAdminSettings(server_url=kc.url, username=ADMIN_USER, password=ADMIN_PASSWORD)
    )
    admin.create_realm({"realm": "llmflow"})
    admin.connection.realm_name = "llmflow"
    user_id = admin.create_user({"username": "early", "attributes": {"tenant": ["dept-hr"]}})
    assert "tenant" not in (admin.get_user(user_id).get("attributes") or {})


# ---------------------------------------------------------------------- drift and secrets


def test_mapper_drift_is_repaired_and_foreign_mappers_removed(
    kc: FakeKeycloak, provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    provisioner.apply(provisioner.plan(desired), "llmflow")
    scope = next(s for s in kc.realms["llmflow"].scopes.values() if s["name"] == "llmflow")
    groups = next(m for m in scope["protocolMappers"] if m["name"] == "groups")
    groups["config"]["full.path"] = "false"
    scope["protocolMappers"].append(
        {"id": "x", "name": "leak", "protocol": "openid-connect", "config": {}}
    )
    plan = provisioner.plan(desired)
    assert {(c.name, c.action) for c in plan} == {
        ("llmflow/groups", Action.UPDATE),
        ("llmflow/leak", Action.DELETE),
    }
    provisioner.apply(plan, "llmflow")
    assert provisioner.plan(desired) == []


def test_secret_rotation_is_planned_without_exposing_the_value(
    kc: FakeKeycloak, provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    provisioner.apply(provisioner.plan(desired), "llmflow")
    rotated = StaticSecrets(
        {
            ("apisix-oidc", "OIDC_CLIENT_SECRET"): "rotated-value",
            ("kc-client-erp-finance-sap", "client-secret"): ERP_SECRET,
        }
    )
    again = KeycloakProvisioner(provisioner._admin, secrets=rotated)
    plan = again.plan(desired)
    assert [(c.kind, c.name) for c in plan] == [(ObjectKind.CLIENT_SECRET, "apisix")]
    assert "rotated-value" not in repr(plan) + plan[0].describe() + json.dumps(
        dict(plan[0].payload)
    )
    again.apply(plan, "llmflow")
    assert _client(kc, "apisix")["secret"] == "rotated-value"


async def test_async_wrapper_plans_in_a_thread(
    provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    plan = await plan_async(provisioner, desired)
    assert plan[0].kind is ObjectKind.REALM


# ---------------------------------------------------------------------- template and spec


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}", item
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")


@pytest.mark.parametrize(
    ("filename", "definition"),
    [
        ("realm-llmflow.json", "realm"),
        ("client-scope-llmflow.json", "clientScope"),
        ("machine-client-template.json", "client"),
    ],
)
def test_templates_match_the_schema_and_carry_no_secrets(filename: str, definition: str) -> None:
    schema = json.loads((TEMPLATES / "templates.schema.json").read_text())
    document = json.loads((TEMPLATES / filename).read_text())
    jsonschema.validate(document, {**schema, "$ref": f"#/$defs/{definition}"})
    # Keycloak fields that carry secret material (ClientRepresentation.secret, a user's
    # credentials, an LDAP bindCredential, a key provider's privateKey): none may be inline.
    secret_fields = {"secret", "clientsecret", "password", "credentials", "bindcredential"}
    secret_fields |= {"privatekey", "secretdata", "registrationaccesstoken"}
    for path, _ in _walk(document):
        assert path.rsplit(".", 1)[-1].lower() not in secret_fields, path
    if definition == "realm":
        component = document["components"]["org.keycloak.userprofile.UserProfileProvider"][0]
        config = json.loads(component["config"]["kc.user.profile.config"][0])
        jsonschema.validate(config, {**schema, "$ref": "#/$defs/upConfig"})
        tenant = next(a for a in config["attributes"] if a["name"] == "tenant")
        assert tenant["permissions"]["edit"] == ["admin"]
        assert tenant["validations"]["pattern"]["pattern"] == "^[a-z][a-z0-9-]{1,62}$"


def test_template_variables_render_with_defaults_and_overrides() -> None:
    default = load_realm_template(TEMPLATES)
    grafana = next(c for c in default.clients if c["clientId"] == "grafana")
    assert grafana["redirectUris"] == ["https://grafana.llmflow.internal/login/generic_oauth"]
    custom = load_realm_template(TEMPLATES, {"LLMFLOW_BASE_DOMAIN": "ai.corp.example"})
    grafana = next(c for c in custom.clients if c["clientId"] == "grafana")
    assert grafana["redirectUris"] == ["https://grafana.ai.corp.example/login/generic_oauth"]
    username = next(a for a in custom.user_profile["attributes"] if a["name"] == "username")
    assert username["displayName"] == "${username}"  # Keycloak message key, left alone


def test_example_tenants_are_the_three_of_the_issue() -> None:
    tenants = load_tenants(TENANTS)
    assert [t.name for t in tenants] == ["dept-finance", "dept-hr", "project-ai"]
    assert any(t.machine_clients for t in tenants)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"tenants": [{"name": "Finance"}]}, "must match"),
        ({"tenants": [{"name": "dept-a"}, {"name": "dept-a"}]}, "declared twice"),
        (
            {"tenants": [{"name": "dept-a", "users": ["x"]}, {"name": "dept-b", "users": ["x"]}]},
            "exactly one tenant",
        ),
        (
            {"tenants": [{"name": "dept-a", "users": [{"username": "x", "roles": ["root"]}]}]},
            "root",
        ),
    ],
)
def test_invalid_tenant_specs_are_rejected(document: dict[str, Any], message: str) -> None:
    with pytest.raises(TenantSpecError, match=message):
        parse_tenants(document)


def test_tenant_spec_is_usable_from_code() -> None:
    spec = TenantSpec(name="dept-legal", display_name="Legal", users=(TenantUser("yoon.ara"),))
    assert spec.users[0].roles == ("viewer",)


def test_a_stale_plan_fails_with_the_change_and_keycloaks_answer(
    provisioner: KeycloakProvisioner, desired: DesiredState
) -> None:
    plan = provisioner.plan(desired)
    provisioner.apply(plan, "llmflow")
    with pytest.raises(KeycloakProvisioningError, match=r"create\s+realm\s+llmflow.*HTTP 409"):
        provisioner.apply(plan, "llmflow")


def test_mounted_secrets_follow_the_secret_volume_layout(tmp_path: Path) -> None:
    (tmp_path / "apisix-oidc").mkdir()
    (tmp_path / "apisix-oidc" / "OIDC_CLIENT_SECRET").write_text("s3cret\n")
    source = MountedSecrets(tmp_path)
    assert source.get(SecretRef(name="apisix-oidc", key="OIDC_CLIENT_SECRET")) == "s3cret"
    assert (
        source.get(SecretRef(name="grafana-oidc", key="GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET"))
        is None
    )
