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
# The ranks of policies/opa/authz.rego (classification_rank), lowest first.
CLASSIFICATIONS = ("public", "internal", "confidential", "secret")

_TENANT_RE = re.compile(TENANT_NAME_PATTERN)
_CLIENT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{1,99}$")
# A Kubernetes resource quantity as people write it in a quota (no exponent forms).
_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_CLUSTER_ROLE_RE = re.compile(r"^[a-z0-9][a-z0-9:.-]{0,252}$")


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
class ResourceQuotas:
    """Compute a tenant's namespace may request (Kubernetes ResourceQuota).

    ``cpu`` and ``memory`` are Kubernetes quantities (``"16"``, ``"64Gi"``); ``None`` leaves
    that resource unbounded. ``gpus`` counts ``nvidia.com/gpu`` and is also the training
    quota the OPA policy checks (``quotas.gpus``).
    """

    cpu: str | None = None
    memory: str | None = None
    gpus: int = 0
    pods: int | None = None


@dataclass(frozen=True)
class RateLimits:
    """Gateway limits of the tenant (OPA ``quotas``); ``None`` takes the platform default."""

    requests_per_minute: int | None = None
    tokens_per_day: int | None = None


@dataclass(frozen=True)
class GroupBinding:
    """A Keycloak group (as the API server sees it in the token) bound to a ClusterRole."""

    group: str
    cluster_role: str


@dataclass(frozen=True)
class TenantSpec:
    """One tenant (department or project) as declared in ``tenants.yaml``."""

    name: str
    display_name: str
    users: tuple[TenantUser, ...] = ()
    machine_clients: tuple[MachineClientSpec, ...] = ()
    quotas: ResourceQuotas = field(default_factory=ResourceQuotas)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # None: the platform defaults of policies/opa/data.json (``data.llmflow.defaults``).
    allowed_models: tuple[str, ...] | None = None
    classification_ceiling: str | None = None
    # Empty: the tenant's own group gets ``view`` in its namespace.
    role_bindings: tuple[GroupBinding, ...] = ()
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
        _check_limits(tenant)


def _check_limits(tenant: TenantSpec) -> None:
    owner = f"tenant {tenant.name!r}"
    for label, value in (("cpu", tenant.quotas.cpu), ("memory", tenant.quotas.memory)):
        if value is not None and not _QUANTITY_RE.match(value):
            raise TenantSpecError(
                f"{owner}: quotas.{label} {value!r} is not a Kubernetes quantity "
                "(e.g. '16', '500m', '64Gi')"
            )
    counts = {
        "quotas.nvidia.com/gpu": tenant.quotas.gpus,
        "quotas.pods": tenant.quotas.pods,
        "rateLimits.requestsPerMinute": tenant.rate_limits.requests_per_minute,
        "rateLimits.tokensPerDay": tenant.rate_limits.tokens_per_day,
    }
    for label, count in counts.items():
        if count is not None and (isinstance(count, bool) or count < 0):
            raise TenantSpecError(f"{owner}: {label} must be a non-negative integer")
    ceiling = tenant.classification_ceiling
    if ceiling is not None and ceiling not in CLASSIFICATIONS:
        raise TenantSpecError(
            f"{owner}: classificationCeiling {ceiling!r} must be one of {list(CLASSIFICATIONS)}"
        )
    if tenant.allowed_models is not None and not all(tenant.allowed_models):
        raise TenantSpecError(f"{owner}: allowedModels entries must be non-empty model ids")
    for binding in tenant.role_bindings:
        if not binding.group or not _CLUSTER_ROLE_RE.match(binding.cluster_role):
            raise TenantSpecError(
                f"{owner}: each kubernetes.roleBindings entry needs a 'group' and a "
                f"ClusterRole name; got {binding!r}"
            )


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
    known = {
        "name",
        "displayName",
        "users",
        "machineClients",
        "quotas",
        "rateLimits",
        "allowedModels",
        "classificationCeiling",
        "kubernetes",
    }
    models = item.get("allowedModels")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise TenantSpecError(f"tenant {name!r}: allowedModels must be a list of model ids")
    ceiling = item.get("classificationCeiling")
    return TenantSpec(
        name=name,
        display_name=str(item.get("displayName") or name),
        users=tuple(_user(u, name) for u in item.get("users") or []),
        machine_clients=tuple(_machine_client(c, name) for c in item.get("machineClients") or []),
        quotas=_quotas(_section(item, "quotas", name), name),
        rate_limits=_rate_limits(_section(item, "rateLimits", name), name),
        allowed_models=tuple(models) if models is not None else None,
        classification_ceiling=str(ceiling) if ceiling is not None else None,
        role_bindings=_role_bindings(_section(item, "kubernetes", name), name),
        extra={k: v for k, v in item.items() if k not in known},
    )


def _section(item: Mapping[str, Any], key: str, tenant: str) -> Mapping[str, Any]:
    value = item.get(key) or {}
    if not isinstance(value, dict):
        raise TenantSpecError(f"tenant {tenant!r}: {key!r} must be a mapping")
    return value


def _int(value: Any, label: str, tenant: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TenantSpecError(f"tenant {tenant!r}: {label} must be an integer, got {value!r}")
    return value


def _quantity(value: Any) -> str | None:
    # YAML reads `cpu: 16` as an int and `cpu: 0.5` as a float; quotas keep the text form.
    return None if value is None else str(value)


def _quotas(raw: Mapping[str, Any], tenant: str) -> ResourceQuotas:
    unknown = set(raw) - {"cpu", "memory", "nvidia.com/gpu", "pods"}
    if unknown:
        raise TenantSpecError(
            f"tenant {tenant!r}: unknown quotas {sorted(unknown)}; "
            "known: cpu, memory, nvidia.com/gpu, pods"
        )
    return ResourceQuotas(
        cpu=_quantity(raw.get("cpu")),
        memory=_quantity(raw.get("memory")),
        gpus=_int(raw.get("nvidia.com/gpu"), "quotas.nvidia.com/gpu", tenant) or 0,
        pods=_int(raw.get("pods"), "quotas.pods", tenant),
    )


def _rate_limits(raw: Mapping[str, Any], tenant: str) -> RateLimits:
    return RateLimits(
        requests_per_minute=_int(
            raw.get("requestsPerMinute"), "rateLimits.requestsPerMinute", tenant
        ),
        tokens_per_day=_int(raw.get("tokensPerDay"), "rateLimits.tokensPerDay", tenant),
    )


def _role_bindings(raw: Mapping[str, Any], tenant: str) -> tuple[GroupBinding, ...]:
    bindings = raw.get("roleBindings") or []
    if not isinstance(bindings, list):
        raise TenantSpecError(f"tenant {tenant!r}: kubernetes.roleBindings must be a list")
    out: list[GroupBinding] = []
    for entry in bindings:
        if not isinstance(entry, dict):
            raise TenantSpecError(f"tenant {tenant!r}: roleBindings entry {entry!r}")
        out.append(
            GroupBinding(
                group=str(entry.get("group") or ""),
                cluster_role=str(entry.get("clusterRole") or ""),
            )
        )
    return tuple(out)


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
