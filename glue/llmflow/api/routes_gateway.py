"""OpenAI-compatible gateway routes (``/v1/chat/completions`` …) and ``GET /v1/usage``.

Errors on these routes use OpenAI's ``{"error": {...}}`` shape, which OpenAI clients (Dify's
OpenAI-API-compatible provider, the openai SDK) parse; credential errors keep the platform's
problem details.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, get_args

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from llmflow.api.deps import PrincipalDep, RuntimeDep, get_principal, get_runtime
from llmflow.api.http_metrics import observe
from llmflow.api.problems import domain_problem, problem_responses
from llmflow.errors import LLMFlowError
from llmflow.gateway.inprocess import InProcessModel
from llmflow.gateway.service import GatewayRequestError, GatewayService
from llmflow.gateway.upstream import UpstreamError, error_type, openai_error
from llmflow.runtime import Runtime

router = APIRouter(tags=["gateway"])

Classification = Literal["public", "internal", "confidential", "secret"]
CLASSIFICATIONS = frozenset(get_args(Classification))
ClassificationHeader = Annotated[
    Classification,
    Header(
        alias="X-Data-Classification",
        description="classification of the data in this request; the policy decides which "
        "models may see it (confidential and secret never reach an external model)",
    ),
]

_OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": "OpenAI error document {error: {message, type, param, code}}"}
    for s in (400, 404, 413, 422, 429, 502, 503, 504)
}


async def _body(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object of the request; 413 as soon as the body passes ``limit`` bytes (by its
    ``Content-Length`` before reading, or while reading a chunked one)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise GatewayRequestError(413, f"request body over {limit:,} bytes", "body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayRequestError(413, f"request body over {limit:,} bytes", "body_too_large")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise GatewayRequestError(400, "the body is not valid JSON", "invalid_json") from exc
    if not isinstance(body, dict):
        raise GatewayRequestError(400, "the body must be a JSON object", "invalid_request")
    return body


class _UpstreamStream(StreamingResponse):
    """A streaming response that always closes its event generator.

    When a client disconnects while the response is writing (not waiting on the generator),
    Starlette's cancellation lands in ``send`` and leaves the generator suspended: its
    cleanup — closing the upstream request so the model stops generating, and the usage
    record — would wait for garbage collection. Closing it here, shielded, runs it at once.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            iterator = self.body_iterator
            if hasattr(iterator, "aclose"):
                with anyio.CancelScope(shield=True):
                    await iterator.aclose()


class _AnswerThenAccount(JSONResponse):
    """A call's answer, whose accounting (:meth:`CallContext.settle`) runs once the answer
    is written — also when writing it fails or is cancelled. Metrics, the usage row and the
    audit event took ~0.1 ms in front of every answer (docs/gateway.md, "Measuring")."""

    def __init__(self, content: Any, settle: Callable[[], None]) -> None:
        super().__init__(content)
        self._settle = settle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._settle()


def _error(exc: GatewayRequestError | UpstreamError) -> JSONResponse:
    headers = exc.headers if isinstance(exc, GatewayRequestError) else None
    return JSONResponse(exc.body, status_code=exc.status, headers=headers)


def provide_inprocess_models(rt: Runtime, gateway: GatewayService) -> None:
    """The in-process models this process can answer with (routes with ``provider: agent``
    and ``handler: research``); each is built on its first request."""
    if gateway.inprocess.provides("research"):
        return

    async def research() -> InProcessModel:
        from llmflow.agents.openai_model import ResearchAgentModel

        return ResearchAgentModel(rt.agents)

    gateway.inprocess.provide("research", research)


async def _proxy(
    request: Request,
    rt: Any,
    principal: Any,
    classification: str,
    kind: str,
    path: str,
    streamable: bool,
) -> Response:
    gateway = await rt.gateway()
    provide_inprocess_models(rt, gateway)
    try:
        body = await _body(request, gateway.settings.max_body_bytes)
        ctx = await gateway.prepare(principal, body, kind, classification)
        body = await gateway.guard_prompt(ctx, body)
        if streamable and body.get("stream") is True:
            events = await gateway.stream(ctx, path, body)
            return _UpstreamStream(
                events,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        ctx.settle_after_reply = True
        return _AnswerThenAccount(await gateway.call(ctx, path, body), ctx.settle)
    except (GatewayRequestError, UpstreamError) as exc:
        return _error(exc)
    except LLMFlowError as exc:  # policy (403), audit (503): still in OpenAI's shape
        return JSONResponse(
            openai_error(exc.detail, error_type(exc.status), exc.code), status_code=exc.status
        )


class ProxyRoute(NamedTuple):
    path: str
    kind: str
    streamable: bool
    name: str
    doc: str


PROXY_ROUTES = {
    r.path: r
    for r in (
        ProxyRoute("/v1/chat/completions", "chat", True, "chat_completions",
                   'OpenAI chat completions (streaming with ``"stream": true``).'),
        ProxyRoute("/v1/completions", "completion", True, "completions",
                   "OpenAI (legacy) completions."),
        ProxyRoute("/v1/embeddings", "embedding", False, "embeddings", "OpenAI embeddings."),
        ProxyRoute("/v1/rerank", "rerank", False, "rerank",
                   "Rerank (``{model, query, documents, top_n}`` as vLLM and Infinity accept "
                   "it), passed to the backend's ``/v1/rerank``."),
    )
}  # fmt: skip


def _add_proxy_route(spec: ProxyRoute) -> None:
    """One POST route that proxies ``spec.kind`` requests to the backends' ``spec.path``."""

    async def endpoint(
        request: Request, rt: RuntimeDep, principal: PrincipalDep,
        classification: ClassificationHeader = "internal",
    ) -> Response:  # fmt: skip
        return await _proxy(
            request, rt, principal, classification, spec.kind, spec.path, spec.streamable
        )

    endpoint.__name__ = endpoint.__qualname__ = spec.name
    endpoint.__doc__ = spec.doc
    router.add_api_route(spec.path, endpoint, methods=["POST"], responses=_OPENAI_ERRORS)


for _spec in PROXY_ROUTES.values():
    _add_proxy_route(_spec)

_ROUTE_OBJECTS = {
    r.path: r for r in router.routes if isinstance(r, APIRoute) and r.path in PROXY_ROUTES
}


def fast_route(scope: Scope) -> ProxyRoute | None:
    """The proxy route to answer ``scope`` with ahead of FastAPI (see :func:`answer`), or
    ``None`` to leave the request to FastAPI: anything but a POST to one of
    :data:`PROXY_ROUTES`, and a classification header outside the four values (FastAPI's
    validation problem answers that one)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path, root = scope["path"], scope.get("root_path", "")
    spec = PROXY_ROUTES.get(path[len(root) :] if root and path.startswith(root) else path)
    if spec is None:
        return None
    for name, value in scope["headers"]:
        if name == b"x-data-classification":  # the first one, as Request.headers.get reads
            return spec if value.decode("latin-1") in CLASSIFICATIONS else None
    return spec


async def answer(spec: ProxyRoute, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request :func:`fast_route` picked, without FastAPI's routing, dependency
    resolution and middleware stack.

    The proxy routes are the platform's hottest path. Through FastAPI each call paid for
    route matching across every router of the app, dependency resolution and six layers of
    app and middleware calls, and at 200 calls in flight their coroutines and closures were
    part of what the garbage collector walked (docs/gateway.md, "Measuring"). This is the
    same :func:`_proxy` after the same credential check
    (:func:`~llmflow.api.deps.get_principal`), with the same error shapes and the same
    request metrics; the FastAPI routes stay for the OpenAPI document and for what this
    passes on. An unexpected error is answered with a 500 in OpenAI's shape and raised on to
    the server, which logs it, as Starlette's ``ServerErrorMiddleware`` does.
    """
    start = time.perf_counter()
    scope["route"] = _ROUTE_OBJECTS[spec.path]
    request = Request(scope, receive)
    status = 500
    try:
        response: Response
        try:
            rt = await get_runtime(request)
            principal = await get_principal(request, rt)
            response = await _proxy(
                request,
                rt,
                principal,
                request.headers.get("x-data-classification", "internal"),
                spec.kind,
                spec.path,
                spec.streamable,
            )
        except LLMFlowError as exc:  # credentials (401) and anything _proxy passes on
            response = domain_problem(request, exc)
        except Exception:
            body = openai_error("internal server error", "server_error", "internal_error")
            await JSONResponse(body, status_code=500)(scope, receive, send)
            raise
        status = response.status_code
        await response(scope, receive, send)
    finally:
        observe(spec.path, "POST", status, start)


@router.get("/v1/models")
async def list_models(rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The models of the routing table (OpenAI's list shape)."""
    gateway = await rt.gateway()
    result: dict[str, Any] = gateway.list_models()
    return result


@router.get("/v1/usage", responses=problem_responses(401, 422))
async def usage(
    rt: RuntimeDep,
    principal: PrincipalDep,
    since: Annotated[datetime | None, Query(description="default: 7 days ago")] = None,
    until: datetime | None = None,
    model: str | None = None,
    group_by: Literal["day", "hour"] = "day",
    fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Response:
    """Token usage of the caller's tenant by period and model."""
    gateway = await rt.gateway()
    if gateway.ledger is None:
        return JSONResponse([])
    await gateway.ledger.flush()
    rows = await gateway.ledger.report(
        principal.tenant_id,
        since or datetime.now(UTC) - timedelta(days=7),
        until,
        model,
        group_by,
    )
    if fmt == "csv":
        return Response(rows_to_csv(rows), media_type="text/csv")
    return JSONResponse(rows)


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    fields = ["period", "tenant", "model", "requests", "prompt_tokens", "completion_tokens",
              "errors", "latency_p50_ms", "latency_p95_ms"]  # fmt: skip
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
