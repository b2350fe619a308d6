"""The input document of ``llmflow.authz`` built from a principal (policies/opa/README.md).

Written against attributes, not a class, so that it takes any principal that has them
(``llmflow.auth.principal.Principal``, the API-key ``Principal`` of issue 2, test doubles):
a missing attribute gets the value that grants least.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llmflow.auth.policy.base import PolicyInput

ACTIONS = frozenset(
    {
        "kb.read",
        "kb.write",
        "kb.admin",
        "search",
        "ingest",
        "model.use",
        "training.submit",
        "tenant.admin",
        "audit.read",
        "pii.use",
    }
)
"""Actions the policy knows; any other action is denied by the policy itself."""

CLASSIFICATIONS = ("public", "internal", "confidential", "secret")
"""Data classifications, lowest first."""


def _strings(value: object) -> list[str]:
    if value is None or isinstance(value, str | bytes):
        return []
    if not isinstance(value, Iterable):
        return []
    return sorted({v for v in value if isinstance(v, str)})


def subject_document(principal: object) -> dict[str, Any]:
    """The ``subject`` object for ``principal``.

    ``kind`` defaults to ``api_key`` (the credential of issue 2, whose principal has no kind
    attribute), which limits the roles the policy honours to ``reader``/``editor``.
    """
    kind = getattr(principal, "kind", None)
    return {
        "id": str(getattr(principal, "subject", "") or ""),
        "tenant": str(getattr(principal, "tenant_id", "") or ""),
        "roles": _strings(getattr(principal, "roles", None)),
        "groups": _strings(getattr(principal, "groups", None)),
        "kind": kind if isinstance(kind, str) and kind else "api_key",
        "knowledge_bases": _strings(getattr(principal, "knowledge_bases", None)),
    }


def build_policy_input(
    principal: object,
    action: str,
    resource: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
) -> PolicyInput:
    """The full input document: who (``principal``) does ``action`` on ``resource``.

    ``resource`` must carry the tenant that owns it (``{"type", "tenant", "id", ...}``), taken
    from our own records (the KB row, the model registry), never from the request body.
    """
    return {
        "subject": subject_document(principal),
        "action": action,
        "resource": dict(resource),
        "context": dict(context or {}),
    }


def kb_resource(tenant: str, kb_name: str, classification: str | None = None) -> dict[str, Any]:
    """The resource document of a knowledge base."""
    doc: dict[str, Any] = {"type": "knowledge_base", "tenant": tenant, "id": kb_name}
    if classification is not None:
        doc["classification"] = classification
    return doc


def model_resource(tenant: str, model: str, provider: str) -> dict[str, Any]:
    """The resource document of a model used on behalf of ``tenant`` (internal|external)."""
    return {"type": "model", "tenant": tenant, "id": model, "provider": provider}
