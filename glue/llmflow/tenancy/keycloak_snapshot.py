"""What the realm holds now: the objects provisioning compares the desired state with.

Only objects provisioning owns or references are read (the template's roles, clients and
scope, the ``/tenants`` subtree, users named in ``tenants.yaml`` or carrying a ``tenant``
value of a known tenant, and machine clients marked with ``llmflow.tenant``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakError, KeycloakGetError

from llmflow.tenancy.errors import KeycloakProvisioningError
from llmflow.tenancy.keycloak_changes import Principal
from llmflow.tenancy.keycloak_template import (
    MANAGED_SCOPE,
    OWNER_ATTRIBUTE,
    TENANT_ATTRIBUTE,
    TENANTS_GROUP,
    DesiredState,
)

Rep = dict[str, Any]


@dataclass
class PrincipalState:
    """A user or service-account user with the parts provisioning manages."""

    rep: Rep
    group_paths: set[str]
    realm_roles: set[str]

    @property
    def tenant(self) -> str | None:
        values = (self.rep.get("attributes") or {}).get(TENANT_ATTRIBUTE) or []
        return str(values[0]) if values else None


@dataclass
class Snapshot:
    """Current state; empty collections when the realm does not exist yet."""

    realm: Rep | None = None
    roles: dict[str, Rep] = field(default_factory=dict)
    user_profile: Rep | None = None
    scopes: dict[str, Rep] = field(default_factory=dict)
    scope_mappers: list[Rep] = field(default_factory=list)
    realm_default_scopes: set[str] = field(default_factory=set)
    clients: dict[str, Rep] = field(default_factory=dict)
    client_default_scopes: dict[str, set[str]] = field(default_factory=dict)
    top_groups: dict[str, Rep] = field(default_factory=dict)
    tenant_groups: dict[str, Rep] = field(default_factory=dict)
    principals: dict[Principal, PrincipalState] = field(default_factory=dict)

    @property
    def machine_clients(self) -> dict[str, Rep]:
        """Clients owned by a tenant (marked with the owner attribute)."""
        return {
            cid: rep
            for cid, rep in self.clients.items()
            if (rep.get("attributes") or {}).get(OWNER_ATTRIBUTE)
        }


def read_snapshot(admin: KeycloakAdmin, desired: DesiredState) -> Snapshot:
    """Read the objects of ``desired.template.realm`` that provisioning compares."""
    try:
        return _read(admin, desired)
    except KeycloakError as exc:
        raise KeycloakProvisioningError(
            f"reading realm {desired.template.realm!r} failed: HTTP {exc.response_code} "
            f"{exc.error_message!r}"
        ) from exc


def _read(admin: KeycloakAdmin, desired: DesiredState) -> Snapshot:
    realm = desired.template.realm
    snap = Snapshot()
    try:
        snap.realm = admin.get_realm(realm)
    except KeycloakGetError as exc:
        if exc.response_code == 404:
            return snap
        raise
    snap.roles = {r["name"]: r for r in admin.get_realm_roles(brief_representation=False)}
    snap.user_profile = admin.get_realm_users_profile()
    snap.scopes = {s["name"]: s for s in admin.get_client_scopes()}
    if MANAGED_SCOPE in snap.scopes:
        snap.scope_mappers = admin.get_mappers_from_client_scope(snap.scopes[MANAGED_SCOPE]["id"])
    snap.realm_default_scopes = {s["name"] for s in admin.get_default_default_client_scopes()}
    snap.clients = {c["clientId"]: c for c in admin.get_clients()}
    wanted = {c["clientId"] for c in desired.template.clients}
    for client_id, rep in snap.clients.items():
        if client_id in wanted or (rep.get("attributes") or {}).get(OWNER_ATTRIBUTE):
            scopes = admin.get_client_default_client_scopes(rep["id"])
            snap.client_default_scopes[client_id] = {s["name"] for s in scopes}
    snap.top_groups = {g["name"]: g for g in admin.get_groups({"briefRepresentation": False})}
    if TENANTS_GROUP in snap.top_groups:
        children = admin.get_group_children(
            snap.top_groups[TENANTS_GROUP]["id"], {"briefRepresentation": False}
        )
        snap.tenant_groups = {g["name"]: g for g in children}
    _read_principals(admin, desired, snap)
    return snap


def _read_principals(admin: KeycloakAdmin, desired: DesiredState, snap: Snapshot) -> None:
    users: dict[str, Rep] = {}
    tenants = {t.name for t in desired.tenants} | set(snap.tenant_groups)
    for tenant in sorted(tenants):
        # Keycloak's attribute search ("q=name:value") finds users a removed or renamed
        # tenant left behind; service-account users never appear in /users searches.
        for rep in admin.get_users({"q": f"{TENANT_ATTRIBUTE}:{tenant}"}):
            users[rep["username"]] = rep
    for tenant_spec in desired.tenants:
        for user in tenant_spec.users:
            if user.username in users:
                continue
            found = admin.get_users({"username": user.username, "exact": True})
            for rep in found:
                if rep["username"] == user.username:
                    users[rep["username"]] = rep
    for username, rep in users.items():
        snap.principals[Principal(username=username)] = _principal_state(admin, rep)
    for client_id, client in snap.machine_clients.items():
        account = admin.get_client_service_account_user(client["id"])
        snap.principals[Principal(service_account_of=client_id)] = _principal_state(admin, account)


def _principal_state(admin: KeycloakAdmin, rep: Rep) -> PrincipalState:
    groups = admin.get_user_groups(rep["id"])
    roles = admin.get_realm_roles_of_user(rep["id"])
    return PrincipalState(
        rep=rep,
        group_paths={g["path"] for g in groups},
        realm_roles={r["name"] for r in roles},
    )
