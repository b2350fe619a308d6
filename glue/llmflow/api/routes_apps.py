"""ERP / intranet REST facade: run a tenant's registered Dify apps (docs/erp-facade.md).

``POST /v1/apps/{app}/run`` (blocking, streaming or async) and ``GET /v1/runs/{id}``.
Callers are machine identities (Keycloak client-credentials tokens, ``kind == "service"``);
every decision goes through the policy (action ``app.run``) and into the audit log.
Async runs are leased to the accepting process and taken over by another one if it dies
(:meth:`llmflow.dify.facade.FacadeService.recover`); their outcome is audited by whichever
process finishes them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from llmflow.api.authz import authorize, record_change
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.auth.principal import Principal
from llmflow.dify.facade import RegisteredApp, RunRecord, RunRequest, facade
from llmflow.errors import Conflict, Forbidden, InvalidRequest, NotFound
from llmflow.knowledge import validate_name
from llmflow.runtime import Runtime

router = APIRouter(tags=["apps"])

ACTION = "app.run"
"""Running a tenant's Dify app (and reading its runs); policies/opa decides who may."""
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _check_kind(rt: Runtime, principal: Principal) -> None:
    allowed = rt.settings.facade.allowed_kinds
    if principal.kind not in allowed:
        raise Forbidden(
            f"the app facade is for machine clients ({', '.join(allowed)}): use a Keycloak "
            "client-credentials token of the tenant's service account"
        )


async def _authorized_app(
    rt: Runtime, principal: Principal, name: str, request: Request
) -> RegisteredApp:
    """The caller's own tenant's app ``name``: 403 on deny, 404 when it does not exist."""
    _check_kind(rt, principal)
    try:
        validate_name("app", name)
    except InvalidRequest:
        raise NotFound(f"app {name!r} does not exist") from None
    app = await facade(rt).apps.get(principal.tenant_id, name)
    resource = {"type": "app", "tenant": principal.tenant_id, "id": name}
    await authorize(
        rt,
        principal,
        ACTION,
        resource,
        request=request,
        details={"exists": "yes" if app else "no"},
    )
    if app is None:
        raise NotFound(f"app {name!r} does not exist")
    return app


async def _audit_done(rt: Runtime, principal: Principal, request: Request, run: RunRecord) -> None:
    await record_change(
        rt,
        principal,
        "app.run.finished",
        "app",
        run.app,
        request=request,
        details={
            "run_id": run.id,
            "outcome": run.status,
            "response_mode": run.delivery,
            "error_code": (run.error or {}).get("code", ""),
        },
    )


@router.post(
    "/v1/apps/{app}/run",
    responses={
        **problem_responses(401, 403, 404, 409, 422, 503),
        200: {"description": "blocking: the finished run; streaming: text/event-stream"},
        202: {
            "description": "async: accepted; the result goes to callback_url (signed). The run "
            "survives a restart of this process (docs/erp-facade.md, 'Restarts')"
        },
    },
)
async def run_app(
    app: str,
    body: RunRequest,
    rt: RuntimeDep,
    principal: PrincipalDep,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(description="same key + same body → the same run; another body → 422"),
    ] = None,
) -> Any:
    """Run the Dify app ``app`` of the caller's tenant."""
    registered = await _authorized_app(rt, principal, app, request)
    service = facade(rt)
    if idempotency_key is not None and not _KEY.fullmatch(idempotency_key):
        raise InvalidRequest("Idempotency-Key must be 1-255 visible ASCII characters")
    if registered.mode == "chat" and not (body.query or "").strip():
        raise InvalidRequest("a chat app needs 'query'")
    size = len(body.model_dump_json())
    if size > rt.settings.facade.max_input_chars:
        raise InvalidRequest(f"request of {size} characters is above the facade limit")
    if body.response_mode == "async":
        service.check_callback(body.callback_url)
    start = await service.start(principal, registered, body, idempotency_key)
    location = f"/v1/runs/{start.record.id}"
    if not start.fresh:
        record = start.record
        if record.status == "running" and record.delivery != "async":
            raise Conflict("a run with this Idempotency-Key is still in progress; retry later")
        headers = {"Location": location, "Idempotent-Replayed": "true"}
        code = 202 if record.delivery == "async" and record.status == "running" else 200
        return JSONResponse(record.to_dict(), status_code=code, headers=headers)
    if body.response_mode == "streaming":

        async def events() -> AsyncIterator[bytes]:
            async for chunk in service.run_streaming(principal, start, body):
                yield chunk
            await _audit_done(rt, principal, request, start.record)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Location": location},
        )
    if body.response_mode == "async":

        async def done(run: RunRecord) -> None:
            await _audit_done(rt, principal, request, run)

        service.run_async(principal, start, body, on_done=done)
        return JSONResponse(start.record.to_dict(), status_code=202, headers={"Location": location})
    record = await service.run_blocking(principal, start, body)
    # The outcome is recorded after the answer is sent (the decision was recorded before).
    outcome = BackgroundTask(_audit_done, rt, principal, request, record)
    return JSONResponse(record.to_dict(), headers={"Location": location}, background=outcome)


@router.get("/v1/runs/{run_id}", responses=problem_responses(401, 403, 404, 503))
async def get_run(run_id: str, rt: RuntimeDep, principal: PrincipalDep, request: Request) -> Any:
    """A run of the caller's tenant: our record, plus Dify's live view of a workflow run."""
    _check_kind(rt, principal)
    if not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise NotFound(f"run {run_id!r} does not exist")
    service = facade(rt)
    record = await service.get(principal.tenant_id, run_id)
    resource = {"type": "app", "tenant": principal.tenant_id, "id": record.app}
    await authorize(rt, principal, ACTION, resource, request=request, details={"run_id": run_id})
    body = record.to_dict()
    body["dify"] = await service.dify_detail(record)
    return body
