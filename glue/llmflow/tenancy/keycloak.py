"""Idempotent Keycloak provisioning: realm template + tenants → plan → apply.

``plan`` compares the desired state with what the realm holds and returns one
:class:`Change` per object that differs; ``apply`` performs them in order. Applying a plan
and planning again yields nothing.

The API is synchronous because ``python-keycloak``'s admin client is (requests); a
provisioning run is a short batch of admin calls from the CLI or a Job, not request-path
work. Async callers (the tenant control plane, an admin endpoint) use :func:`plan_async`
and :func:`apply_async`, which run the same code in a worker thread so the event loop is
never blocked.

Ownership rules, so that re-running never destroys what an administrator made by hand:
the template's roles, clients and the ``llmflow`` scope are created and updated, never
deleted; the ``/tenants/<name>`` groups, machine clients marked ``llmflow.tenant`` and the
mappers of the ``llmflow`` scope are fully reconciled (deleted when no longer declared);
users are never deleted — leaving a tenant removes their ``tenant`` value and membership.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from keycloak import KeycloakAdmin, KeycloakOpenIDConnection
from keycloak.exceptions import KeycloakError

from llmflow.tenancy.errors import KeycloakProvisioningError
from llmflow.tenancy.keycloak_apply import Applier
from llmflow.tenancy.keycloak_changes import Action, Change, pending
from llmflow.tenancy.keycloak_plan import Planner, differences
from llmflow.tenancy.keycloak_settings import KeycloakAdminSettings
from llmflow.tenancy.keycloak_snapshot import read_snapshot
from llmflow.tenancy.keycloak_template import DesiredState
from llmflow.tenancy.secrets import MountedSecrets, NoSecrets, SecretSource

__all__ = [
    "KeycloakProvisioner",
    "apply_async",
    "connect",
    "differences",
    "plan_async",
]


def connect(settings: KeycloakAdminSettings) -> KeycloakAdmin:
    """An admin client for ``settings.realm``, authenticated in ``settings.auth_realm``."""
    settings.require_login()
    connection = KeycloakOpenIDConnection(
        server_url=settings.server_url.rstrip("/") + "/",
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        client_secret_key=(
            settings.client_secret.get_secret_value() if settings.client_secret else None
        ),
        client_id=settings.client_id,
        realm_name=settings.realm,
        user_realm_name=settings.auth_realm,
        verify=settings.verify_tls,
        timeout=settings.timeout_s,
    )
    return KeycloakAdmin(connection=connection)


class KeycloakProvisioner:
    """Plans and applies the desired realm state through the admin REST API."""

    def __init__(
        self,
        admin: KeycloakAdmin,
        *,
        secrets: SecretSource | None = None,
        create_missing_users: bool = True,
    ) -> None:
        self._admin = admin
        self._secrets: SecretSource = secrets or NoSecrets()
        self._create_missing_users = create_missing_users

    @classmethod
    def from_settings(cls, settings: KeycloakAdminSettings) -> KeycloakProvisioner:
        """Provisioner with the admin connection and secret source the settings describe."""
        secrets = MountedSecrets(settings.secrets_dir) if settings.secrets_dir else NoSecrets()
        return cls(
            connect(settings),
            secrets=secrets,
            create_missing_users=settings.create_missing_users,
        )

    # ------------------------------------------------------------------ plan

    def plan(self, desired: DesiredState, *, include_noop: bool = False) -> list[Change]:
        """Changes that make the realm match ``desired``, in the order they must run."""
        self._admin.connection.realm_name = desired.template.realm
        snap = read_snapshot(self._admin, desired)
        planner = Planner(desired, snap, self._secrets, self._admin, self._create_missing_users)
        changes = planner.run()
        return changes if include_noop else pending(changes)

    # ------------------------------------------------------------------ apply

    def apply(self, plan: Iterable[Change], realm: str) -> list[Change]:
        """Perform ``plan`` against ``realm``; returns the changes applied.

        Raises :class:`KeycloakProvisioningError` naming the change that failed; the
        changes before it stay applied, so running plan/apply again continues from there.
        """
        self._admin.connection.realm_name = realm
        applier = Applier(self._admin, realm, self._secrets)
        done: list[Change] = []
        for change in plan:
            if change.action is Action.NOOP:
                continue
            try:
                applier.apply(change)
            except KeycloakError as exc:
                raise KeycloakProvisioningError(
                    f"{change.describe()}: Keycloak answered HTTP {exc.response_code} "
                    f"{exc.error_message!r}"
                ) from exc
            done.append(change)
        return done


async def plan_async(
    provisioner: KeycloakProvisioner, desired: DesiredState, *, include_noop: bool = False
) -> list[Change]:
    """:meth:`KeycloakProvisioner.plan` in a worker thread (python-keycloak blocks)."""
    return await asyncio.to_thread(provisioner.plan, desired, include_noop=include_noop)


async def apply_async(
    provisioner: KeycloakProvisioner, plan: list[Change], realm: str
) -> list[Change]:
    """:meth:`KeycloakProvisioner.apply` in a worker thread (python-keycloak blocks)."""
    return await asyncio.to_thread(provisioner.apply, plan, realm)
