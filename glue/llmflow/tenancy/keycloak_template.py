"""The realm template (platform/keycloak/) read into the pieces provisioning reconciles.

Files, all Keycloak representations except the secret references:

* ``realm-llmflow.json`` — a RealmRepresentation that ``kc.sh import`` accepts as is: realm
  settings, realm roles, the ``tenants`` group, clients and the declarative user profile.
  It deliberately has no ``clientScopes`` key: Keycloak skips creating its built-in scopes
  (profile, email, roles, ...) when an import names any client scope.
* ``client-scope-llmflow.json`` — the ``llmflow`` ClientScopeRepresentation and its mappers.
* ``machine-client-template.json`` — the ClientRepresentation of an ERP machine client.
* ``client-secret-refs.yaml`` — clientId → Kubernetes Secret holding that client's secret.

Template variables ``${UPPER_CASE}`` / ``${UPPER_CASE:default}`` follow Keycloak's own import
syntax (environment variables), so the same file works for ``--import-realm``. Lower-case
``${username}``-style values are Keycloak message keys and are left alone.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmflow.tenancy.errors import TenantSpecError
from llmflow.tenancy.spec import MachineClientSpec, SecretRef, TenantSpec

TENANT_ATTRIBUTE = "tenant"
TENANTS_GROUP = "tenants"
MANAGED_SCOPE = "llmflow"
# Client attribute that marks a machine client as owned by a tenant: deletion of a tenant
# deletes exactly the clients carrying it, never a hand-made one.
OWNER_ATTRIBUTE = "llmflow.tenant"
USER_PROFILE_PROVIDER = "org.keycloak.userprofile.UserProfileProvider"
USER_PROFILE_CONFIG_KEY = "kc.user.profile.config"

# Keys of realm-llmflow.json that are separate objects, not realm settings.
_REALM_OBJECT_KEYS = frozenset({"realm", "roles", "groups", "clients", "components", "users"})
_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::([^}]*))?\}")


@dataclass(frozen=True)
class RealmTemplate:
    """The desired realm objects that do not depend on the tenant list."""

    realm: str
    settings: Mapping[str, Any]
    roles: tuple[Mapping[str, Any], ...]
    top_groups: tuple[str, ...]
    clients: tuple[Mapping[str, Any], ...]
    user_profile: Mapping[str, Any]
    client_scope: Mapping[str, Any]
    machine_client: Mapping[str, Any]
    secret_refs: Mapping[str, SecretRef] = field(default_factory=dict)

    @property
    def tenant_attribute(self) -> Mapping[str, Any]:
        """The declared ``tenant`` user-profile attribute (UPAttribute)."""
        for attribute in self.user_profile.get("attributes", []):
            if attribute.get("name") == TENANT_ATTRIBUTE:
                return dict(attribute)
        raise TenantSpecError("realm template declares no 'tenant' user-profile attribute")

    def machine_client_for(self, tenant: TenantSpec, spec: MachineClientSpec) -> dict[str, Any]:
        """The ClientRepresentation of one ERP machine client of ``tenant``."""
        values = {
            "CLIENT_ID": spec.client_id,
            "CLIENT_NAME": f"{tenant.display_name}: {spec.client_id}",
            "TENANT": tenant.name,
        }
        rep = render(copy.deepcopy(dict(self.machine_client)), values)
        if spec.description:
            rep["description"] = spec.description
        return dict(rep)


@dataclass(frozen=True)
class DesiredState:
    """Everything provisioning should make true: the realm template plus the tenants."""

    template: RealmTemplate
    tenants: tuple[TenantSpec, ...] = ()


def render(value: Any, variables: Mapping[str, str]) -> Any:
    """Substitute ``${NAME}``/``${NAME:default}`` variables in every string of ``value``.

    An unknown name without a default is an error: a realm with a literal ``${...}`` in a
    redirect URI would reject every login silently.
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in variables:
                return variables[name]
            if default is not None:
                return default
            raise TenantSpecError(f"template variable ${{{name}}} has no value and no default")

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, list):
        return [render(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: render(item, variables) for key, item in value.items()}
    return value


def load_realm_template(
    template_dir: Path, variables: Mapping[str, str] | None = None
) -> RealmTemplate:
    """Read and render the files of ``template_dir`` (see the module docstring)."""
    variables = dict(variables or {})
    realm = _read_json(template_dir / "realm-llmflow.json")
    # The user profile config is a JSON string inside the component config; parse it before
    # rendering so its message keys and regex survive untouched.
    user_profile = _user_profile_config(realm)
    realm = render(realm, variables)
    scope = render(_read_json(template_dir / "client-scope-llmflow.json"), variables)
    machine = _read_json(template_dir / "machine-client-template.json")
    refs_path = template_dir / "client-secret-refs.yaml"
    refs: dict[str, SecretRef] = {}
    if refs_path.exists():
        raw = yaml.safe_load(refs_path.read_text(encoding="utf-8")) or {}
        for client_id, ref in raw.items():
            refs[client_id] = SecretRef(
                name=ref["name"], key=ref["key"], namespace=ref.get("namespace")
            )
    return RealmTemplate(
        realm=realm["realm"],
        settings={k: v for k, v in realm.items() if k not in _REALM_OBJECT_KEYS},
        roles=tuple(realm.get("roles", {}).get("realm", [])),
        top_groups=tuple(g["name"] for g in realm.get("groups", [])),
        clients=tuple(realm.get("clients", [])),
        user_profile=user_profile,
        client_scope=scope,
        machine_client=machine,
        secret_refs=refs,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TenantSpecError(f"cannot read template {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise TenantSpecError(f"template {path} must be a JSON object")
    return data


def _user_profile_config(realm: Mapping[str, Any]) -> dict[str, Any]:
    components = realm.get("components", {}).get(USER_PROFILE_PROVIDER, [])
    for component in components:
        if component.get("providerId") == "declarative-user-profile":
            raw = component.get("config", {}).get(USER_PROFILE_CONFIG_KEY, [])
            if raw:
                config = json.loads(raw[0])
                if isinstance(config, dict):
                    return config
    raise TenantSpecError("realm template has no declarative-user-profile component config")
