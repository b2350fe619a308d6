"""Keycloak behind the control plane's interface: the existing provisioner, unchanged.

:mod:`llmflow.tenancy.keycloak` already plans and applies the realm template and the tenants
idempotently; this adapter reads its snapshot, runs its planner and translates each
Keycloak change into a :class:`PlannedChange`, attributing it to a tenant so that ``tenant
delete`` can keep one tenant's group, machine clients and memberships. python-keycloak
blocks, so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmflow.tenancy.keycloak_changes import Action, Change, ObjectKind
from llmflow.tenancy.keycloak_settings import KeycloakAdminSettings
from llmflow.tenancy.keycloak_template import OWNER_ATTRIBUTE, TENANTS_GROUP, DesiredState
from llmflow.tenancy.reconciler import Operation, PlannedChange, Reconciler
from llmflow.tenancy.secrets import MountedSecrets, NoSecrets, SecretSource
from llmflow.tenancy.spec import TenantSpec

if TYPE_CHECKING:
    from keycloak import KeycloakAdmin

    from llmflow.tenancy.keycloak_template import RealmTemplate

SYSTEM = "keycloak"
_OPERATIONS = {
    Action.CREATE: Operation.CREATE,
    Action.UPDATE: Operation.UPDATE,
    Action.DELETE: Operation.DELETE,
    Action.NOOP: Operation.UNCHANGED,
}
_PRINCIPAL_KINDS = {
    ObjectKind.USER,
    ObjectKind.SERVICE_ACCOUNT,
    ObjectKind.GROUP_MEMBERSHIP,
    ObjectKind.USER_ROLES,
}


@dataclass
class KeycloakState:
    """The provisioner's own plan (it needs the admin client) and the tenant of each change."""

    changes: list[tuple[Change, str | None]]


class KeycloakReconciler(Reconciler[KeycloakState]):
    """Realm template + tenant groups, users' ``tenant`` attribute and machine clients."""

    system = SYSTEM

    def __init__(self, settings: KeycloakAdminSettings) -> None:
        # python-keycloak costs ~0.9 s to import: only when Keycloak is configured.
        from llmflow.tenancy.keycloak import KeycloakProvisioner, connect

        self.settings = settings
        self.admin: KeycloakAdmin = connect(settings)
        self.secrets: SecretSource = (
            MountedSecrets(settings.secrets_dir) if settings.secrets_dir else NoSecrets()
        )
        self.provisioner = KeycloakProvisioner(
            self.admin,
            secrets=self.secrets,
            create_missing_users=settings.create_missing_users,
        )
        self._template: RealmTemplate | None = None

    @property
    def target(self) -> str:
        return f"{self.settings.server_url} realm {self.settings.realm}"

    def _desired(self, desired: Sequence[TenantSpec]) -> DesiredState:
        from llmflow.tenancy.keycloak_template import load_realm_template

        if self._template is None:
            self._template = load_realm_template(
                self.settings.template_dir, self.settings.template_vars
            )
        return DesiredState(template=self._template, tenants=tuple(desired))

    def _observe(self, desired: Sequence[TenantSpec]) -> KeycloakState:
        from llmflow.tenancy.keycloak_plan import Planner
        from llmflow.tenancy.keycloak_snapshot import read_snapshot

        state = self._desired(desired)
        admin = self.admin
        admin.connection.realm_name = state.template.realm
        snap = read_snapshot(admin, state)
        planner = Planner(state, snap, self.secrets, admin, self.settings.create_missing_users)
        declared = {
            p: t.name
            for t in desired
            for p in [*(u.username for u in t.users), *(c.client_id for c in t.machine_clients)]
        }
        attributed: list[tuple[Change, str | None]] = []
        for change in planner.run():
            tenant: str | None = None
            prefix = f"/{TENANTS_GROUP}/"
            if change.kind is ObjectKind.GROUP and change.name.startswith(prefix):
                tenant = change.name[len(prefix) :]
            elif change.kind is ObjectKind.MACHINE_CLIENT:
                owner = (snap.clients.get(change.name, {}).get("attributes") or {}).get(
                    OWNER_ATTRIBUTE
                )
                tenant = declared.get(change.name) or (str(owner) if owner else None)
            elif change.kind in _PRINCIPAL_KINDS and change.principal is not None:
                key = change.principal.username or change.principal.service_account_of
                current = snap.principals.get(change.principal)
                tenant = declared.get(str(key)) or (current.tenant if current else None)
            elif change.kind is ObjectKind.CLIENT_SECRET and change.name in declared:
                tenant = declared[change.name]
            attributed.append((change, tenant))
        return KeycloakState(changes=attributed)

    async def observe(self, desired: Sequence[TenantSpec]) -> KeycloakState:
        return await asyncio.to_thread(self._observe, desired)

    def plan(self, desired: Sequence[TenantSpec], actual: KeycloakState) -> list[PlannedChange]:
        return [
            PlannedChange(
                SYSTEM,
                change.kind.value,
                change.name,
                _OPERATIONS[change.action],
                tenant,
                change.detail,
                change,
            )
            for change, tenant in actual.changes
        ]

    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        pending = [c for c in changes if c.pending]
        native: list[Change] = [c.payload for c in pending]
        realm = self.settings.realm
        if self._template is not None:
            realm = self._template.realm
        await asyncio.to_thread(self.provisioner.apply, native, realm)
        return pending
