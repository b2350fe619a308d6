"""The calling principal: one type for API keys, Keycloak users and Keycloak service accounts.

A principal carries what an authorization policy needs (subject, tenant, roles, groups, kind,
client id, knowledge-base grant) and nothing the caller controls: it is built only from a
verified credential.

Roles hold two vocabularies side by side:

* the **data-plane roles** ``reader`` and ``editor``, which :meth:`Principal.may_read` and
  :meth:`Principal.may_edit` check. API keys carry them directly (issue 2).
* the **Keycloak realm roles** ``platform-admin``, ``operator``, ``developer``, ``viewer``
  (seed 003 §10.1), copied verbatim for the policy engine. A JWT principal gets its data-plane
  roles from them through :data:`REALM_TO_DATA_ROLES`:

  ==================  ==================  ===============================================
  realm role          data-plane roles    why (seed 003 §10.1)
  ==================  ==================  ===============================================
  ``platform-admin``  reader, editor      manages every resource
  ``developer``       reader, editor      uploads models and data, runs training
  ``operator``        reader              runs GPUs, the cluster and deployments, not data
  ``viewer``          reader              read-only access
  ==================  ==================  ===============================================

  A realm role literally named ``reader`` or ``editor`` is dropped, so that a Keycloak admin
  cannot grant data-plane rights by accident with a role of that name. A user with none of
  the four realm roles reads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["api_key", "user", "service"]

READER = "reader"
EDITOR = "editor"
MODEL = "model"
DATA_ROLES = frozenset({READER, EDITOR})
API_KEY_ROLES = frozenset({READER, EDITOR, MODEL})
"""Roles an API key can hold: reader/editor on knowledge bases, model for the LLM gateway."""

PLATFORM_ADMIN = "platform-admin"
OPERATOR = "operator"
DEVELOPER = "developer"
VIEWER = "viewer"
REALM_ROLES = frozenset({PLATFORM_ADMIN, OPERATOR, DEVELOPER, VIEWER})

REALM_TO_DATA_ROLES: dict[str, frozenset[str]] = {
    PLATFORM_ADMIN: frozenset({READER, EDITOR}),
    DEVELOPER: frozenset({READER, EDITOR}),
    OPERATOR: frozenset({READER}),
    VIEWER: frozenset({READER}),
}


def roles_from_realm_roles(realm_roles: Iterable[str]) -> frozenset[str]:
    """Realm roles as issued (minus ``reader``/``editor``) plus the data-plane roles they imply.

    Keycloak's own default roles (``offline_access``, ``default-roles-<realm>`` …) are kept: they
    grant nothing here, and a policy may still want to see them.
    """
    kept = frozenset(r for r in realm_roles if r not in API_KEY_ROLES)
    implied = frozenset(d for r in kept for d in REALM_TO_DATA_ROLES.get(r, frozenset()))
    return kept | implied


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, built only from a verified credential.

    ``kind`` says which credential: ``api_key`` (an LLMFlow API key, and the in-process callers
    such as the CLI and evaluation that use the API-key vocabulary), ``user`` (a Keycloak user's
    access token) or ``service`` (a Keycloak service account, i.e. a client-credentials token
    of a machine client such as an ERP).
    """

    tenant_id: str
    subject: str
    knowledge_bases: frozenset[str] = field(default_factory=frozenset)
    """KB names this principal may read; empty = every KB of the tenant."""
    roles: frozenset[str] = field(default_factory=frozenset)
    """Data-plane roles (reader, editor) and, for JWTs, the Keycloak realm roles."""
    groups: frozenset[str] = field(default_factory=frozenset)
    """Keycloak group full paths, e.g. ``/tenants/dept-hr``; empty for API keys."""
    kind: PrincipalKind = "api_key"
    client_id: str | None = None
    """The OAuth client the token was issued to (``azp``); None for API keys."""
    username: str | None = None
    """Keycloak ``preferred_username``, for audit records; None for API keys."""

    def may_read(self, kb_name: str) -> bool:
        """Readers and editors read the KBs of their grant (every KB of the tenant if none)."""
        if not self.roles & DATA_ROLES:
            return False
        return not self.knowledge_bases or kb_name in self.knowledge_bases

    def may_edit(self, kb_name: str | None = None) -> bool:
        """Editors manage documents; creating KBs needs an editor key not limited to KBs."""
        if EDITOR not in self.roles:
            return False
        if kb_name is None:
            return not self.knowledge_bases
        return not self.knowledge_bases or kb_name in self.knowledge_bases
