"""Tenant control plane: declared tenants and their provisioning into each system.

Keycloak today (:mod:`llmflow.tenancy.keycloak`); Kubernetes, OPA data, object store, MLflow
and Langfuse reconcilers will read the same :class:`TenantSpec` list.
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy re-exports: ``llmflow.settings`` imports the Keycloak settings model from this
# package, and importing python-keycloak eagerly would cost every process ~0.9 s.
_EXPORTS = {
    "Action": "llmflow.tenancy.keycloak_changes",
    "Change": "llmflow.tenancy.keycloak_changes",
    "DesiredState": "llmflow.tenancy.keycloak_template",
    "KeycloakAdminSettings": "llmflow.tenancy.keycloak_settings",
    "KeycloakProvisioner": "llmflow.tenancy.keycloak",
    "KeycloakProvisioningError": "llmflow.tenancy.errors",
    "MachineClientSpec": "llmflow.tenancy.spec",
    "MountedSecrets": "llmflow.tenancy.secrets",
    "NoSecrets": "llmflow.tenancy.secrets",
    "ObjectKind": "llmflow.tenancy.keycloak_changes",
    "Principal": "llmflow.tenancy.keycloak_changes",
    "REALM_ROLES": "llmflow.tenancy.spec",
    "RealmTemplate": "llmflow.tenancy.keycloak_template",
    "SecretRef": "llmflow.tenancy.spec",
    "SecretSource": "llmflow.tenancy.secrets",
    "SecretUnavailable": "llmflow.tenancy.errors",
    "StaticSecrets": "llmflow.tenancy.secrets",
    "TENANT_NAME_PATTERN": "llmflow.tenancy.spec",
    "TenantSpec": "llmflow.tenancy.spec",
    "TenantSpecError": "llmflow.tenancy.errors",
    "TenantUser": "llmflow.tenancy.spec",
    "apply_async": "llmflow.tenancy.keycloak",
    "connect": "llmflow.tenancy.keycloak",
    "differences": "llmflow.tenancy.keycloak",
    "load_realm_template": "llmflow.tenancy.keycloak_template",
    "load_tenants": "llmflow.tenancy.spec",
    "parse_tenants": "llmflow.tenancy.spec",
    "pending": "llmflow.tenancy.keycloak_changes",
    "plan_async": "llmflow.tenancy.keycloak",
    "validate_tenants": "llmflow.tenancy.spec",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "REALM_ROLES",
    "TENANT_NAME_PATTERN",
    "Action",
    "Change",
    "DesiredState",
    "KeycloakAdminSettings",
    "KeycloakProvisioner",
    "KeycloakProvisioningError",
    "MachineClientSpec",
    "MountedSecrets",
    "NoSecrets",
    "ObjectKind",
    "Principal",
    "RealmTemplate",
    "SecretRef",
    "SecretSource",
    "SecretUnavailable",
    "StaticSecrets",
    "TenantSpec",
    "TenantSpecError",
    "TenantUser",
    "apply_async",
    "connect",
    "differences",
    "load_realm_template",
    "load_tenants",
    "parse_tenants",
    "pending",
    "plan_async",
    "validate_tenants",
]
