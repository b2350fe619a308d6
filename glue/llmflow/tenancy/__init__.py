"""Tenant control plane: declared tenants and their provisioning into each system.

One :class:`TenantSpec` list (``tenants.yaml``) and one reconciler per system behind
:class:`Reconciler` (``observe`` → ``plan`` → ``apply``): Keycloak
(:mod:`llmflow.tenancy.keycloak`, wrapped by :mod:`~llmflow.tenancy.keycloak_reconciler`),
Kubernetes, OPA data, object store, MLflow and Langfuse, driven together by
:class:`ControlPlane` (``llmflow tenant apply|plan|delete``).
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy re-exports: ``llmflow.settings`` imports the Keycloak settings model from this
# package, and importing python-keycloak eagerly would cost every process ~0.9 s.
_EXPORTS = {
    "Action": "llmflow.tenancy.keycloak_changes",
    "CLASSIFICATIONS": "llmflow.tenancy.spec",
    "Change": "llmflow.tenancy.keycloak_changes",
    "ControlPlane": "llmflow.tenancy.control_plane",
    "DesiredState": "llmflow.tenancy.keycloak_template",
    "GroupBinding": "llmflow.tenancy.spec",
    "KeycloakAdminSettings": "llmflow.tenancy.keycloak_settings",
    "KeycloakProvisioner": "llmflow.tenancy.keycloak",
    "KeycloakProvisioningError": "llmflow.tenancy.errors",
    "KeycloakReconciler": "llmflow.tenancy.keycloak_reconciler",
    "KubernetesReconciler": "llmflow.tenancy.kubernetes",
    "LangfuseReconciler": "llmflow.tenancy.langfuse",
    "MachineClientSpec": "llmflow.tenancy.spec",
    "MlflowReconciler": "llmflow.tenancy.mlflow",
    "MountedSecrets": "llmflow.tenancy.secrets",
    "NoSecrets": "llmflow.tenancy.secrets",
    "ObjectKind": "llmflow.tenancy.keycloak_changes",
    "ObjectStoreReconciler": "llmflow.tenancy.buckets",
    "OpaDataReconciler": "llmflow.tenancy.opa_data",
    "Operation": "llmflow.tenancy.reconciler",
    "PlannedChange": "llmflow.tenancy.reconciler",
    "Principal": "llmflow.tenancy.keycloak_changes",
    "PurgeReport": "llmflow.tenancy.purge",
    "REALM_ROLES": "llmflow.tenancy.spec",
    "RateLimits": "llmflow.tenancy.spec",
    "RealmTemplate": "llmflow.tenancy.keycloak_template",
    "Reconciler": "llmflow.tenancy.reconciler",
    "ResourceQuotas": "llmflow.tenancy.spec",
    "SecretRef": "llmflow.tenancy.spec",
    "SecretSource": "llmflow.tenancy.secrets",
    "SecretUnavailable": "llmflow.tenancy.errors",
    "StaticSecrets": "llmflow.tenancy.secrets",
    "SystemPlan": "llmflow.tenancy.control_plane",
    "TENANT_NAME_PATTERN": "llmflow.tenancy.spec",
    "TenantPlan": "llmflow.tenancy.control_plane",
    "TenantReconcileError": "llmflow.tenancy.errors",
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
    "purge_tenant_data": "llmflow.tenancy.purge",
    "validate_tenants": "llmflow.tenancy.spec",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CLASSIFICATIONS",
    "REALM_ROLES",
    "TENANT_NAME_PATTERN",
    "Action",
    "Change",
    "ControlPlane",
    "DesiredState",
    "GroupBinding",
    "KeycloakAdminSettings",
    "KeycloakProvisioner",
    "KeycloakProvisioningError",
    "KeycloakReconciler",
    "KubernetesReconciler",
    "LangfuseReconciler",
    "MachineClientSpec",
    "MlflowReconciler",
    "MountedSecrets",
    "NoSecrets",
    "ObjectKind",
    "ObjectStoreReconciler",
    "OpaDataReconciler",
    "Operation",
    "PlannedChange",
    "Principal",
    "PurgeReport",
    "RateLimits",
    "RealmTemplate",
    "Reconciler",
    "ResourceQuotas",
    "SecretRef",
    "SecretSource",
    "SecretUnavailable",
    "StaticSecrets",
    "SystemPlan",
    "TenantPlan",
    "TenantReconcileError",
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
    "purge_tenant_data",
    "validate_tenants",
]
