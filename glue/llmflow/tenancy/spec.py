"""Declared tenants: what ``tenants.yaml`` says, validated before any system is touched.

The tenant control plane (``llmflow tenant apply -f tenants.yaml``) reads one file and
reconciles every system from it; this module is the shared, system-neutral part of that
file. Keycloak provisioning (:mod:`llmflow.tenancy.keycloak`) consumes it today.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmflow.tenancy.errors import TenantSpecError

# The tenant name is a Kubernetes namespace suffix, a bucket suffix, a Milvus partition-key
# value and a JWT claim at once: the strictest of those (a DNS label) wins. Keycloak's user
# profile validates the same pattern (platform/keycloak/realm-llmflow.json).
TENANT_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,62}$"
REALM_ROLES = ("platform-admin", "operator", "developer", "viewer")

_TENANT_RE = re.compile(TENANT_NAME_PATTERN)
_CLIENT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{1,99}$")


@dataclass(frozen=True)
class SecretRef:
    """A key of a Kubernetes Secret; the value is resolved at apply time, never stored."""

    name: str
    key: str
    namespace: str | None = None

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"secret {ns}{self.name}[{self.key}]"


@dataclass(frozen=True)
class TenantUser:
    """A person of a tenant; ``roles`` are realm roles (seed 003 §10.1)."""

    username: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    roles: tuple[str, ...] = ("viewer",)


@dataclass(frozen=True)
class MachineClientSpec:
    """An ERP machine identity: a confidential client using client credentials only."""

    client_id: str
    description: str = ""
    roles: tuple[str, ...] = ("viewer",)
    secret_ref: SecretRef | None = None

    def effective_secret_ref(self) -> SecretRef:
        """The declared reference, or the conventional ``kc-client-<clientId>`` Secret."""
        return self.secret_ref or SecretRef(name=f"kc-client-{self.client_id}", key="client-secret")


@dataclass(frozen=True)
class TenantSpec:
    """One tenant (department or project) as declared in ``tenants.yaml``."""

    name: str
    display_name: str
    users: tuple[TenantUser, ...] = ()
    machine_clients: tuple[MachineClientSpec, ...] = ()
    # Sections for other systems (quotas, models, storage ...) are kept verbatim so that the
    # control plane can hand them to their own reconcilers.
    extra: Mapping[str, Any] = field(default_factory=dict)


def validate_tenants(tenants: Sequence[TenantSpec]) -> None:
    """Reject a tenant list that no system could apply consistently.

    Raises :class:`TenantSpecError` naming the offending entry.
    """
    seen_tenants: set[str] = set()
    user_tenant: dict[str, str] = {}
    client_tenant: dict[str, str] = {}
    for tenant in tenants:
        if not _TENANT_RE.match(tenant.name):
            raise TenantSpecError(
                f"tenant name {tenant.name!r} must match {TENANT_NAME_PATTERN} "
                "(lower-case letters, digits and '-', 2-63 characters)"
            )
        if tenant.name in seen_tenants:
            raise TenantSpecError(f"tenant {tenant.name!r} is declared twice")
        seen_tenants.add(tenant.name)
        for user in tenant.users:
            # One user, one tenant: the 'tenant' claim is single-valued by design.
            if user.username in user_tenant:
                raise TenantSpecError(
                    f"user {user.username!r} is declared in tenants "
                    f"{user_tenant[user.username]!r} and {tenant.name!r}; "
                    "a user belongs to exactly one tenant"
                )
            user_tenant[user.username] = tenant.name
            _check_roles(user.roles, f"user {user.username!r}")
        for client in tenant.machine_clients:
            if not _CLIENT_ID_RE.match(client.client_id):
                raise TenantSpecError(
                    f"machine client id {client.client_id!r} must be lower-case letters, "
                    "digits and '-'"
                )
            if client.client_id in client_tenant:
                raise TenantSpecError(f"machine client {client.client_id!r} is declared twice")
            client_tenant[client.client_id] = tenant.name
            _check_roles(client.roles, f"machine client {client.client_id!r}")


def _check_roles(roles: Iterable[str], owner: str) -> None:
    unknown = sorted(set(roles) - set(REALM_ROLES))
    if unknown:
        raise TenantSpecError(f"{owner}: unknown realm roles {unknown}; known: {list(REALM_ROLES)}")


def parse_tenants(document: Mapping[str, Any]) -> list[TenantSpec]:
    """Build validated :class:`TenantSpec` objects from a parsed ``tenants.yaml``."""
    raw = document.get("tenants")
    if not isinstance(raw, list):
        raise TenantSpecError("tenants.yaml needs a top-level list 'tenants'")
    tenants = [_tenant(item) for item in raw]
    validate_tenants(tenants)
    return tenants


def load_tenants(path: Path) -> list[TenantSpec]:
    """Read and validate a ``tenants.yaml`` file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TenantSpecError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise TenantSpecError(f"{path}: expected a mapping at the top level")
    return parse_tenants(document)


def _tenant(item: Any) -> TenantSpec:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise TenantSpecError(f"each tenant needs a 'name': {item!r}")
    name = item["name"]
    known = {"name", "displayName", "users", "machineClients"}
    return TenantSpec(
        name=name,
        display_name=str(item.get("displayName") or name),
        users=tuple(_user(u, name) for u in item.get("users") or []),
        machine_clients=tuple(_machine_client(c, name) for c in item.get("machineClients") or []),
        extra={k: v for k, v in item.items() if k not in known},
    )


def _user(item: Any, tenant: str) -> TenantUser:
    if isinstance(item, str):
        return TenantUser(username=item)
    if not isinstance(item, dict) or not isinstance(item.get("username"), str):
        raise TenantSpecError(f"tenant {tenant!r}: each user needs a 'username': {item!r}")
    return TenantUser(
        username=item["username"],
        email=item.get("email"),
        first_name=item.get("firstName"),
        last_name=item.get("lastName"),
        roles=tuple(item.get("roles") or ("viewer",)),
    )


def _machine_client(item: Any, tenant: str) -> MachineClientSpec:
    if not isinstance(item, dict) or not isinstance(item.get("clientId"), str):
        raise TenantSpecError(f"tenant {tenant!r}: each machine client needs 'clientId': {item!r}")
    ref = item.get("secretRef")
    secret_ref = None
    if ref is not None:
        if not isinstance(ref, dict) or not {"name", "key"} <= ref.keys():
            raise TenantSpecError(
                f"machine client {item['clientId']!r}: secretRef needs 'name' and 'key'"
            )
        secret_ref = SecretRef(name=ref["name"], key=ref["key"], namespace=ref.get("namespace"))
    return MachineClientSpec(
        client_id=item["clientId"],
        description=str(item.get("description") or ""),
        roles=tuple(item.get("roles") or ("viewer",)),
        secret_ref=secret_ref,
    )
