"""Planning: compare the desired realm with a :class:`Snapshot` and list the changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keycloak import KeycloakAdmin

from llmflow.tenancy.keycloak_changes import Action, Change, ObjectKind, Principal
from llmflow.tenancy.keycloak_snapshot import PrincipalState, Rep, Snapshot
from llmflow.tenancy.keycloak_template import (
    MANAGED_SCOPE,
    OWNER_ATTRIBUTE,
    TENANT_ATTRIBUTE,
    TENANTS_GROUP,
    DesiredState,
)
from llmflow.tenancy.secrets import SecretSource
from llmflow.tenancy.spec import REALM_ROLES, SecretRef

# Fields sent on create but reconciled through their own endpoints afterwards.
_CLIENT_SEPARATE_FIELDS = frozenset({"defaultClientScopes", "optionalClientScopes"})


def differences(desired: Any, current: Any, prefix: str = "") -> list[str]:
    """Paths where ``desired`` is not contained in ``current``.

    Only keys the desired representation names are compared: Keycloak returns many
    server-side defaults that the template rightly leaves unset. Lists of strings compare as
    sets (Keycloak stores redirect URIs, web origins and permissions as sets).
    """
    if isinstance(desired, Mapping):
        if not isinstance(current, Mapping):
            return [prefix or "."]
        paths: list[str] = []
        for key, value in desired.items():
            paths += differences(value, current.get(key), f"{prefix}.{key}" if prefix else key)
        return paths
    if isinstance(desired, list) and all(isinstance(v, str) for v in desired):
        if not isinstance(current, list) or set(desired) != {str(v) for v in current}:
            return [prefix]
        return []
    if isinstance(desired, list):
        if not isinstance(current, list) or len(desired) != len(current):
            return [prefix]
        return [p for d, c in zip(desired, current, strict=True) for p in differences(d, c, prefix)]
    return [] if desired == current else [prefix]


def _summary(paths: list[str]) -> str:
    shown = ", ".join(paths[:4])
    return f"{shown} (+{len(paths) - 4} more)" if len(paths) > 4 else shown


# ---------------------------------------------------------------------- planner


class Planner:
    """Builds the ordered change list for one desired state and snapshot."""

    def __init__(
        self,
        desired: DesiredState,
        snap: Snapshot,
        secrets: SecretSource,
        admin: KeycloakAdmin,
        create_missing_users: bool,
    ) -> None:
        self.desired = desired
        self.template = desired.template
        self.snap = snap
        self.secrets = secrets
        self.admin = admin
        self.create_missing_users = create_missing_users
        self.changes: list[Change] = []

    def add(self, kind: ObjectKind, name: str, action: Action, detail: str = "", **kw: Any) -> None:
        self.changes.append(Change(kind=kind, name=name, action=action, detail=detail, **kw))

    def run(self) -> list[Change]:
        """All changes, no-ops included, in apply order."""
        self._realm()
        self._realm_roles()
        self._user_profile()
        self._client_scope()
        self._clients()
        self._groups()
        self._machine_clients()
        self._principals()
        self._removed_tenants()
        return self.changes

    def _realm(self) -> None:
        name = self.template.realm
        settings = dict(self.template.settings)
        if self.snap.realm is None:
            self.add(ObjectKind.REALM, name, Action.CREATE, payload={"realm": name, **settings})
            return
        diff = differences(settings, self.snap.realm)
        if diff:
            changed = {k: settings[k] for k in {p.split(".")[0] for p in diff}}
            self.add(ObjectKind.REALM, name, Action.UPDATE, _summary(diff), payload=changed)
        else:
            self.add(ObjectKind.REALM, name, Action.NOOP)

    def _realm_roles(self) -> None:
        for role in self.template.roles:
            current = self.snap.roles.get(role["name"])
            if current is None:
                self.add(ObjectKind.ROLE, role["name"], Action.CREATE, payload=role)
            elif diff := differences(role, current):
                self.add(ObjectKind.ROLE, role["name"], Action.UPDATE, _summary(diff), payload=role)
            else:
                self.add(ObjectKind.ROLE, role["name"], Action.NOOP)

    def _user_profile(self) -> None:
        desired = self.template.tenant_attribute
        attributes = (self.snap.user_profile or {}).get("attributes") or []
        current = next((a for a in attributes if a.get("name") == TENANT_ATTRIBUTE), None)
        if current is None:
            self.add(
                ObjectKind.USER_PROFILE_ATTRIBUTE,
                TENANT_ATTRIBUTE,
                Action.CREATE,
                "declared before any user gets a value",
                payload=desired,
            )
        elif diff := differences(desired, current):
            self.add(
                ObjectKind.USER_PROFILE_ATTRIBUTE,
                TENANT_ATTRIBUTE,
                Action.UPDATE,
                _summary(diff),
                payload=desired,
            )
        else:
            self.add(ObjectKind.USER_PROFILE_ATTRIBUTE, TENANT_ATTRIBUTE, Action.NOOP)

    def _client_scope(self) -> None:
        scope = {k: v for k, v in self.template.client_scope.items() if k != "protocolMappers"}
        name = scope["name"]
        current = self.snap.scopes.get(name)
        if current is None:
            self.add(ObjectKind.CLIENT_SCOPE, name, Action.CREATE, payload=scope)
        elif diff := differences(scope, current):
            self.add(
                ObjectKind.CLIENT_SCOPE,
                name,
                Action.UPDATE,
                _summary(diff),
                payload={**current, **scope},
                target={"scope_id": current["id"]},
            )
        else:
            self.add(ObjectKind.CLIENT_SCOPE, name, Action.NOOP)
        existing = {m["name"]: m for m in self.snap.scope_mappers}
        for mapper in self.template.client_scope.get("protocolMappers", []):
            label = f"{name}/{mapper['name']}"
            found = existing.pop(mapper["name"], None)
            if found is None:
                self.add(ObjectKind.PROTOCOL_MAPPER, label, Action.CREATE, payload=mapper)
            elif diff := differences(mapper, found):
                self.add(
                    ObjectKind.PROTOCOL_MAPPER,
                    label,
                    Action.UPDATE,
                    _summary(diff),
                    payload={**mapper, "id": found["id"]},
                    target={"mapper_id": found["id"]},
                )
            else:
                self.add(ObjectKind.PROTOCOL_MAPPER, label, Action.NOOP)
        for stale in existing.values():
            # The scope is ours: a mapper the template no longer lists would keep putting a
            # claim into every token.
            self.add(
                ObjectKind.PROTOCOL_MAPPER,
                f"{name}/{stale['name']}",
                Action.DELETE,
                target={"mapper_id": stale["id"]},
            )
        if name in self.snap.realm_default_scopes:
            self.add(ObjectKind.REALM_DEFAULT_SCOPE, name, Action.NOOP)
        else:
            self.add(ObjectKind.REALM_DEFAULT_SCOPE, name, Action.CREATE)

    def _known_scope(self, name: str) -> bool:
        return name == MANAGED_SCOPE or name in self.snap.scopes

    def _client(
        self, kind: ObjectKind, rep: Mapping[str, Any], secret_ref: SecretRef | None
    ) -> None:
        client_id = rep["clientId"]
        current = self.snap.clients.get(client_id)
        secret = self.secrets.get(secret_ref) if secret_ref else None
        if current is None:
            detail = f"secret from {secret_ref}" if secret else "secret generated by Keycloak"
            self.add(
                kind,
                client_id,
                Action.CREATE,
                detail if not rep.get("publicClient") else "",
                payload=rep,
                secret_ref=secret_ref if secret else None,
            )
            return
        compared = {k: v for k, v in rep.items() if k not in _CLIENT_SEPARATE_FIELDS}
        if diff := differences(compared, current):
            self.add(
                kind,
                client_id,
                Action.UPDATE,
                _summary(diff),
                payload={**current, **compared},
                target={"client_uuid": current["id"]},
            )
        else:
            self.add(kind, client_id, Action.NOOP)
        have = self.snap.client_default_scopes.get(client_id, set())
        for scope in rep.get("defaultClientScopes", []):
            if scope not in have and self._known_scope(scope):
                self.add(
                    ObjectKind.CLIENT_DEFAULT_SCOPE,
                    f"{client_id}/{scope}",
                    Action.CREATE,
                    target={"client_uuid": current["id"], "scope": scope},
                )
        if secret is not None:
            value = self.admin.get_client_secrets(current["id"]).get("value")
            if value != secret:
                self.add(
                    ObjectKind.CLIENT_SECRET,
                    client_id,
                    Action.UPDATE,
                    f"set from {secret_ref}",
                    target={"client_uuid": current["id"]},
                    secret_ref=secret_ref,
                )

    def _clients(self) -> None:
        for rep in self.template.clients:
            self._client(ObjectKind.CLIENT, rep, self.template.secret_refs.get(rep["clientId"]))

    def _groups(self) -> None:
        for name in self.template.top_groups:
            if name in self.snap.top_groups:
                self.add(ObjectKind.GROUP, f"/{name}", Action.NOOP)
            else:
                self.add(ObjectKind.GROUP, f"/{name}", Action.CREATE, payload={"name": name})
        for tenant in self.desired.tenants:
            rep = {
                "name": tenant.name,
                "attributes": {
                    TENANT_ATTRIBUTE: [tenant.name],
                    "displayName": [tenant.display_name],
                },
            }
            path = f"/{TENANTS_GROUP}/{tenant.name}"
            current = self.snap.tenant_groups.get(tenant.name)
            if current is None:
                self.add(ObjectKind.GROUP, path, Action.CREATE, payload=rep)
            elif diff := differences(rep, current):
                self.add(
                    ObjectKind.GROUP,
                    path,
                    Action.UPDATE,
                    _summary(diff),
                    payload={**current, **rep},
                    target={"group_id": current["id"]},
                )
            else:
                self.add(ObjectKind.GROUP, path, Action.NOOP)

    def _machine_clients(self) -> None:
        for tenant in self.desired.tenants:
            for spec in tenant.machine_clients:
                rep = self.template.machine_client_for(tenant, spec)
                self._client(ObjectKind.MACHINE_CLIENT, rep, spec.effective_secret_ref())

    def _desired_principals(self) -> dict[Principal, tuple[str, set[str], Rep]]:
        wanted: dict[Principal, tuple[str, set[str], Rep]] = {}
        for tenant in self.desired.tenants:
            for user in tenant.users:
                rep: Rep = {"username": user.username, "enabled": True}
                if user.email:
                    rep["email"] = user.email
                if user.first_name:
                    rep["firstName"] = user.first_name
                if user.last_name:
                    rep["lastName"] = user.last_name
                wanted[Principal(username=user.username)] = (tenant.name, set(user.roles), rep)
            for client in tenant.machine_clients:
                key = Principal(service_account_of=client.client_id)
                wanted[key] = (tenant.name, set(client.roles), {})
        return wanted

    def _principals(self) -> None:
        for principal, (tenant, roles, rep) in self._desired_principals().items():
            state = self.snap.principals.get(principal)
            if state is None and principal.username is not None:
                if not self.create_missing_users:
                    continue
                # Created with its tenant value: the attribute is declared earlier in the plan.
                payload = {**rep, "attributes": {TENANT_ATTRIBUTE: [tenant]}}
                self.add(
                    ObjectKind.USER,
                    str(principal),
                    Action.CREATE,
                    f"tenant={tenant}",
                    payload=payload,
                    principal=principal,
                )
                state = PrincipalState(rep=payload, group_paths=set(), realm_roles=set())
            elif state is None:
                # The service-account user appears with its client, earlier in this apply.
                state = PrincipalState(rep={}, group_paths=set(), realm_roles=set())
            if state.tenant != tenant:
                kind = (
                    ObjectKind.SERVICE_ACCOUNT if principal.service_account_of else ObjectKind.USER
                )
                self.add(
                    kind,
                    str(principal),
                    Action.UPDATE,
                    f"tenant: {state.tenant or '(none)'} -> {tenant}",
                    payload={TENANT_ATTRIBUTE: tenant},
                    principal=principal,
                )
            self._membership(principal, state, tenant)
            self._principal_roles(principal, state, roles)

    def _membership(self, principal: Principal, state: PrincipalState, tenant: str | None) -> None:
        want = f"/{TENANTS_GROUP}/{tenant}" if tenant else None
        for path in sorted(state.group_paths):
            if path.startswith(f"/{TENANTS_GROUP}/") and path != want:
                self.add(
                    ObjectKind.GROUP_MEMBERSHIP,
                    f"{principal} in {path}",
                    Action.DELETE,
                    payload={"path": path},
                    principal=principal,
                )
        if want and want not in state.group_paths:
            self.add(
                ObjectKind.GROUP_MEMBERSHIP,
                f"{principal} in {want}",
                Action.CREATE,
                payload={"path": want},
                principal=principal,
            )

    def _principal_roles(
        self, principal: Principal, state: PrincipalState, roles: set[str]
    ) -> None:
        have = state.realm_roles & set(REALM_ROLES)
        add, remove = sorted(roles - have), sorted(have - roles)
        if add or remove:
            detail = " ".join([f"+{r}" for r in add] + [f"-{r}" for r in remove])
            self.add(
                ObjectKind.USER_ROLES,
                str(principal),
                Action.UPDATE,
                detail,
                payload={"add": add, "remove": remove},
                principal=principal,
            )

    def _removed_tenants(self) -> None:
        declared = {t.name for t in self.desired.tenants}
        wanted = self._desired_principals()
        for principal, state in sorted(self.snap.principals.items(), key=lambda kv: str(kv[0])):
            if principal in wanted or principal.service_account_of:
                continue
            if state.tenant is not None:
                self.add(
                    ObjectKind.USER,
                    str(principal),
                    Action.UPDATE,
                    f"tenant: {state.tenant} -> (none)",
                    payload={TENANT_ATTRIBUTE: None},
                    principal=principal,
                )
            self._membership(principal, state, None)
        declared_clients = {c.client_id for t in self.desired.tenants for c in t.machine_clients}
        for client_id, rep in sorted(self.snap.machine_clients.items()):
            if client_id not in declared_clients:
                owner = (rep.get("attributes") or {}).get(OWNER_ATTRIBUTE)
                self.add(
                    ObjectKind.MACHINE_CLIENT,
                    client_id,
                    Action.DELETE,
                    f"tenant {owner}",
                    target={"client_uuid": rep["id"]},
                )
        for name, group in sorted(self.snap.tenant_groups.items()):
            if name not in declared:
                self.add(
                    ObjectKind.GROUP,
                    f"/{TENANTS_GROUP}/{name}",
                    Action.DELETE,
                    "tenant no longer declared",
                    target={"group_id": group["id"]},
                )
