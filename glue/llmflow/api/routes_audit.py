"""The audit log over HTTP: ``GET /v1/audit`` for the principals the policy allows
``audit.read`` (operator and platform-admin, policies/opa/README.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from llmflow.api.authz import authorize
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.errors import InvalidRequest

router = APIRouter(prefix="/v1", tags=["audit"])


class AuditEventOut(BaseModel):
    id: str
    created_at: str
    tenant_id: str
    actor: str
    actor_kind: str
    action: str
    resource_type: str
    resource_id: str
    decision: Literal["allow", "deny"]
    reason: str
    request_id: str | None
    details: dict[str, Any]


class AuditPageOut(BaseModel):
    events: list[AuditEventOut]
    next_cursor: str | None


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone, e.g. 2026-11-01T00:00:00Z")
    return value


@router.get("/audit", response_model=AuditPageOut, responses=problem_responses(401, 403, 422, 503))
async def read_audit(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    tenant: Annotated[
        str | None,
        Query(max_length=64, description="platform-admin only: another tenant's events"),
    ] = None,
    since: Annotated[datetime | None, Query(description="inclusive, ISO 8601 with zone")] = None,
    until: Annotated[datetime | None, Query(description="exclusive, ISO 8601 with zone")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    decision: Literal["allow", "deny"] | None = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    """Audit events of a tenant, newest first, ``limit`` per page; pass ``next_cursor`` back
    as ``cursor`` for the next page.

    The tenant is the caller's own. ``tenant=`` names another one, which the policy allows
    to a platform-admin only (``audit.read`` is administrative); anyone else gets 403.
    """
    target = tenant or principal.tenant_id
    if not target:
        raise InvalidRequest("name the tenant whose audit events to read: ?tenant=<tenant>")
    await authorize(
        rt,
        principal,
        "audit.read",
        {"type": "audit", "tenant": target, "id": target},
        request=request,
    )
    page = await (await rt.audit()).query(
        target,
        since=_aware(since, "since"),
        until=_aware(until, "until"),
        action=action,
        decision=decision,
        actor=actor,
        limit=limit,
        cursor=cursor,
    )
    return {"events": [e.to_dict() for e in page.events], "next_cursor": page.next_cursor}
