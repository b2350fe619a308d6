"""Errors of the tenant control plane."""

from __future__ import annotations

from llmflow.errors import InvalidRequest, LLMFlowError


class TenantSpecError(InvalidRequest):
    """``tenants.yaml`` (or a template) cannot be applied as written."""

    code = "invalid_tenant_spec"
    title = "Invalid tenant specification"


class KeycloakProvisioningError(LLMFlowError):
    """Keycloak refused or failed an admin call while applying a plan."""

    status = 502
    code = "keycloak_provisioning_failed"
    title = "Keycloak provisioning failed"


class SecretUnavailable(LLMFlowError):
    """A referenced secret could not be read from the mounted Secrets directory."""

    status = 500
    code = "secret_unavailable"
    title = "Secret unavailable"


class TenantReconcileError(LLMFlowError):
    """A system of the tenant control plane refused or failed a call while planning or
    applying; the message names the system, the object and the server's answer."""

    status = 502
    code = "tenant_reconcile_failed"
    title = "Tenant reconciliation failed"
