"""Authorization at the HTTP edge: every allow/deny asks the policy engine and is audited.

The policy (``policies/opa``, :meth:`Runtime.policy`) is the single place of decision; this
module builds its input from the verified principal and our own records, records the decision
(:meth:`Runtime.audit`) and turns a deny into :class:`~llmflow.errors.Forbidden` (403) with
the policy's reason.

Existence is never leaked across tenants: the tenant of every resource is the principal's own
(never one from the body, path, query or headers), so a knowledge base of another tenant is
never looked up. Inside its own tenant a caller learns that a name is unknown (404) only when
the policy would have let it act on that name; otherwise the answer is 403 whether the
knowledge base exists or not.

Audit failure (``audit.fail_closed``, default on): a deny stays a 403 and the failure is
logged; an allow that cannot be recorded is refused with 503 (no unaudited access).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request

from llmflow.auth.policy.base import Decision
from llmflow.auth.policy.inputs import build_policy_input, kb_resource
from llmflow.auth.principal import Principal
from llmflow.errors import Forbidden, NotFound
from llmflow.knowledge import KnowledgeBaseInfo
from llmflow.observability.audit import AuditEntry, AuditUnavailable
from llmflow.runtime import Runtime

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(request: Request | None) -> str | None:
    """The request's id: a well-formed ``X-Request-Id`` from the gateway, else a new one
    (kept on the request so every event of one request shares it)."""
    if request is None:
        return None
    existing = getattr(request.state, "request_id", None)
    if isinstance(existing, str):
        return existing
    given = request.headers.get("x-request-id", "")
    rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request.state.request_id = rid
    return rid


def _where(request: Request | None) -> dict[str, Any]:
    """Method and route template (not the raw path: that may hold user text)."""
    if request is None:
        return {}
    route = request.scope.get("route")
    return {"method": request.method, "route": str(getattr(route, "path", "unmatched"))}


def _entry(
    principal: Principal,
    action: str,
    resource: Mapping[str, Any],
    decision: Decision,
    request: Request | None,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    classification = resource.get("classification")
    extra: dict[str, Any] = {**_where(request), **(details or {})}
    if isinstance(classification, str):
        extra["classification"] = classification
    return AuditEntry(
        tenant_id=str(resource.get("tenant") or principal.tenant_id or ""),
        actor=principal.subject,
        actor_kind=principal.kind,
        action=action,
        resource_type=str(resource.get("type", "")),
        resource_id=str(resource.get("id", "")),
        decision="allow" if decision.allow else "deny",
        reason=decision.reason,
        request_id=request_id(request),
        details=extra,
    )


async def _record(rt: Runtime, entries: Sequence[AuditEntry]) -> None:
    """Write decisions; an allow that cannot be recorded is refused when fail-closed."""
    audit = await rt.audit()
    try:
        await audit.record_all(entries)
    except AuditUnavailable:
        if any(e.decision == "allow" for e in entries) and audit.fail_closed:
            raise
        log.error("audit of %d decision(s) failed; the request goes on as decided", len(entries))


async def decide(
    rt: Runtime,
    principal: Principal,
    action: str,
    resource: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """The policy's decision, not audited (callers record it: :func:`authorize` does)."""
    engine = await rt.policy()
    return await engine.decide(build_policy_input(principal, action, resource, context))


async def authorize(
    rt: Runtime,
    principal: Principal,
    action: str,
    resource: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    *,
    request: Request | None = None,
    details: Mapping[str, Any] | None = None,
) -> Decision:
    """Ask the policy whether ``principal`` may do ``action`` on ``resource``; record it.

    ``resource`` must name the owning tenant from our records (the principal's tenant for
    everything in the data plane). Raises :class:`Forbidden` with the policy's reason on deny,
    :class:`AuditUnavailable` (503) when an allow cannot be recorded.
    """
    decision = await decide(rt, principal, action, resource, context)
    entry = _entry(principal, action, resource, decision, request, details)
    try:
        await _record(rt, [entry])
    except AuditUnavailable:
        log.error("refusing %s on %s: the allow could not be audited", action, entry.resource_id)
        raise
    if not decision.allow:
        raise Forbidden(
            f"{action} on {entry.resource_type} {entry.resource_id!r} denied: {decision.reason}"
        )
    return decision


async def authorize_kb(
    rt: Runtime,
    principal: Principal,
    action: str,
    kb_name: str,
    *,
    request: Request | None = None,
) -> KnowledgeBaseInfo:
    """Authorize ``action`` on the principal's knowledge base ``kb_name`` and return it.

    The knowledge base is looked up in the principal's tenant only, and its classification
    goes into the decision. 403 on deny (whether the name exists or not); 404 only when the
    policy allows the action and the name does not exist in the caller's tenant.
    """
    try:
        kb: KnowledgeBaseInfo | None = await rt.knowledge_bases.get(principal.tenant_id, kb_name)
    except NotFound:
        kb = None
    resource = kb_resource(principal.tenant_id, kb_name, kb.classification if kb else None)
    await authorize(
        rt, principal, action, resource, request=request, details={"exists": "yes" if kb else "no"}
    )
    if kb is None:
        raise NotFound(f"knowledge base {kb_name!r} does not exist")
    return kb


async def allowed_kbs(
    rt: Runtime,
    principal: Principal,
    action: str,
    kbs: Sequence[KnowledgeBaseInfo],
    *,
    request: Request | None = None,
) -> list[KnowledgeBaseInfo]:
    """The knowledge bases (of the principal's tenant) the policy allows ``action`` on; one
    decision each, recorded in one write."""
    entries: list[AuditEntry] = []
    kept: list[KnowledgeBaseInfo] = []
    for kb in kbs:
        resource = kb_resource(principal.tenant_id, kb.name, kb.classification)
        decision = await decide(rt, principal, action, resource)
        entries.append(_entry(principal, action, resource, decision, request))
        if decision.allow:
            kept.append(kb)
    await _record(rt, entries)
    return kept


async def record_change(
    rt: Runtime,
    principal: Principal,
    action: str,
    resource_type: str,
    resource_id: str,
    *,
    request: Request | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Record an administrative change that has been applied (``kb.create``, ``kb.delete``,
    ``document.delete`` …).

    Its authorization was recorded before the change (fail closed); a failure to record the
    change itself is logged and does not undo or hide the change from the caller.
    """
    entry = AuditEntry(
        tenant_id=principal.tenant_id,
        actor=principal.subject,
        actor_kind=principal.kind,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        decision="allow",
        reason="change applied",
        request_id=request_id(request),
        details={**_where(request), "outcome": "applied", **(details or {})},
    )
    audit = await rt.audit()
    try:
        await audit.record(entry)
    except AuditUnavailable:
        log.error("applied change %s on %s %s was not audited", action, resource_type, resource_id)
