"""Keycloak sign-on for the Dify console: ``/sso/dify/login`` and ``/sso/dify/callback``.

Served on the Dify console's own host (APISIX routes ``/sso/dify/*`` there to the glue), so
that the session cookies Dify issues land on the host the console reads them from. Errors
are RFC 9457 problem details; every login, allowed or refused, is an audit event
(``dify.login``).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from llmflow.api.authz import request_id
from llmflow.api.deps import RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.dify.secrets import runtime_box
from llmflow.dify.sso import (
    STATE_COOKIE,
    DifySsoBridge,
    begin_login,
    check_state,
    exchange_code,
    login_details,
)
from llmflow.errors import ConfigurationError, Forbidden, LLMFlowError, Unauthorized
from llmflow.observability.audit import AuditEntry, AuditUnavailable
from llmflow.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sso/dify", tags=["dify-sso"])

CALLBACK_PATH = "/sso/dify/callback"


def _redirect_uri(rt: Runtime, request: Request) -> str:
    configured = rt.settings.dify_sso.redirect_uri
    return configured or str(request.url_for("dify_sso_callback"))


async def _audit(
    rt: Runtime,
    request: Request,
    tenant: str,
    actor: str,
    kind: str,
    allow: bool,
    reason: str,
    details: dict[str, object] | None = None,
) -> None:
    audit = await rt.audit()
    entry = AuditEntry(
        tenant_id=tenant,
        actor=actor,
        actor_kind=kind,
        action="dify.login",
        resource_type="dify_workspace",
        resource_id=tenant,
        decision="allow" if allow else "deny",
        reason=reason,
        request_id=request_id(request),
        details={"method": request.method, "route": CALLBACK_PATH, **(details or {})},
    )
    try:
        await audit.record(entry)
    except AuditUnavailable:
        if allow and audit.fail_closed:
            raise
        log.error("Dify SSO login event was not audited")


@router.get(
    "/login",
    status_code=302,
    responses={**problem_responses(500), 302: {"description": "to Keycloak's sign-in"}},
)
async def dify_sso_login(
    rt: RuntimeDep,
    request: Request,
    tenant: Annotated[
        str | None,
        Query(description="expected tenant (a hint only: the tenant is the token's claim)"),
    ] = None,
) -> RedirectResponse:
    """Start the Keycloak authorization-code flow with PKCE for the Dify console."""
    issuer = rt.settings.auth.issuer
    if not issuer:
        raise ConfigurationError("auth.issuer must be set for Keycloak SSO")
    redirect_uri = _redirect_uri(rt, request)
    url, sealed = begin_login(rt.settings.dify_sso, issuer, runtime_box(rt), redirect_uri, tenant)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        STATE_COOKIE,
        sealed,
        max_age=rt.settings.dify_sso.state_ttl_s,
        path="/sso/dify",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="lax",
    )
    return response


@router.get(
    "/callback",
    name="dify_sso_callback",
    status_code=302,
    responses={
        **problem_responses(401, 403, 409, 503),
        302: {"description": "to the Dify console, with its session cookies"},
    },
)
async def dify_sso_callback(
    rt: RuntimeDep,
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    """Finish the flow: verify Keycloak's tokens, provision the Dify account, hand over
    Dify's session cookies and send the browser to the console."""
    if error:
        raise Unauthorized(f"Keycloak did not sign you in: {error}")
    if not code or not state:
        raise Unauthorized("the callback needs 'code' and 'state' from Keycloak")
    sso = rt.settings.dify_sso
    box = runtime_box(rt)
    login = check_state(box, request.cookies.get(STATE_COOKIE), state)
    try:
        verified = await exchange_code(rt, sso, login, code)
    except (Unauthorized, Forbidden) as exc:
        # Who it was is not verified (or not admitted): recorded without a tenant.
        await _audit(rt, request, "", "anonymous", "user", False, exc.detail)
        raise
    principal = verified.principal
    bridge = DifySsoBridge(rt, sso, box)
    try:
        result = await bridge.provision(verified)
    except LLMFlowError as exc:
        await _audit(
            rt, request, principal.tenant_id, principal.subject, principal.kind, False, exc.detail
        )
        raise
    await _audit(
        rt,
        request,
        principal.tenant_id,
        principal.subject,
        principal.kind,
        True,
        f"Dify role {result.role}",
        login_details(result, verified),
    )
    response = RedirectResponse(result.web_url.rstrip("/") + "/apps", status_code=302)
    for c in result.session.cookies:
        response.set_cookie(
            c.name,
            c.value,
            max_age=c.max_age,
            path=c.path,
            domain=c.domain,
            secure=c.secure,
            httponly=c.httponly,
            samesite=c.samesite.lower(),  # type: ignore[arg-type]
        )
    response.delete_cookie(STATE_COOKIE, path="/sso/dify")
    return response
