"""The gateway: one OpenAI-compatible front for every model call on the platform.

Per request: routing table → policy (may this tenant use this model with this data
classification?) → quota → PII guard on the prompt (block, mask or pseudonymise) →
upstream with fallbacks → the answer's own PII masked, pseudonyms restored (streaming
too) → usage (ledger, metrics).

A route with ``provider: agent`` has no upstream: at the point of the upstream call it is
dispatched to an in-process model (:mod:`llmflow.gateway.inprocess`), so the same policy,
quota, PII guard and accounting apply to it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from llmflow.errors import LLMFlowError
from llmflow.gateway import calls, metrics, sse
from llmflow.gateway.config import GatewaySettings, ModelRoute
from llmflow.gateway.inprocess import InProcessCall, InProcessModel, InProcessModels, UnknownHandler
from llmflow.gateway.upstream import (
    Backend,
    BackendPool,
    JsonReply,
    StreamReply,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    error_type,
    normalise_error,
    openai_error,
)
from llmflow.gateway.usage import UsageLedger, UsageRecord
from llmflow.observability.metrics import child

if TYPE_CHECKING:
    from llmflow.auth.principal import Principal
    from llmflow.gateway.health import BackendHealth
    from llmflow.pii.anonymize import PiiGuard
    from llmflow.pii.pseudonyms import Pseudonymizer, StreamRestorer

log = logging.getLogger(__name__)

Authorizer = Callable[["Principal", ModelRoute, str], Awaitable[None]]
"""Raises (Forbidden) when the principal may not use the model for that classification."""


class GatewayRequestError(Exception):
    """A request the gateway refuses itself, answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}

    @property
    def body(self) -> dict[str, Any]:
        return openai_error(self.message, error_type(self.status), self.code)


@dataclass(slots=True)
class CallContext:
    """What one request carries through the gateway."""

    principal: Principal
    route: ModelRoute
    classification: str
    started: float = field(default_factory=time.perf_counter)
    pseudonymizer: Pseudonymizer | None = None
    backend: str = ""
    ttft_s: float | None = None
    chain: list[ModelRoute] = field(default_factory=list)
    """The requested model and the fallbacks this principal may use, in order."""
    request: dict[str, Any] | None = None
    """The body as the client sent it (for the call's trace; masked before export)."""
    answer: str = ""
    """The answer's text, kept only when observers want it (traces)."""
    pii: dict[str, int] = field(default_factory=dict)
    """Personal data found in the prompt: count per entity type."""
    settle_after_reply: bool = False
    """The caller writes the answer first and then calls :meth:`settle` (the API's proxy
    routes): a successful non-streaming call's accounting — metrics, usage row, audit event
    — then happens after the answer's bytes are on their way, not in front of them."""
    pending: Callable[[], None] | None = None
    """The accounting :meth:`settle` still owes."""

    def settle(self) -> None:
        """Account a call whose accounting was left for after the reply (once)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending()


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        authorize: Authorizer,
        ledger: UsageLedger | None,
        guard: Callable[[], Awaitable[PiiGuard]] | None,
        inprocess: InProcessModels | None = None,
    ) -> None:
        self.settings = settings
        self.inprocess = inprocess or InProcessModels()
        self.pool = BackendPool(settings)
        self.authorize = authorize
        self.ledger = ledger
        self._guard = guard
        self._lora_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.observers: list[calls.CallObserver] = []
        """Per-call audit events and traces, queued off the request path (gateway/calls.py)."""
        self.health: BackendHealth | None = None

    async def close(self) -> None:
        if self.health is not None:
            await self.health.aclose()
        for observer in self.observers:
            await observer.aclose()
        await self.pool.close()

    # -- models ---------------------------------------------------------------------
    def list_models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": m.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "external" if m.provider == "external" else "llmflow",
                    "kind": m.kind,
                    **({"parent": m.lora_base} if m.lora_base else {}),
                }
                for m in self.settings.models
            ],
        }

    # -- entry points ---------------------------------------------------------------
    async def prepare(
        self, principal: Principal, body: dict[str, Any], kind: str, classification: str
    ) -> CallContext:
        """Route, authorise and count the request; refuse with an OpenAI-shaped error."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayRequestError(400, "'model' is required", "invalid_request")
        route = self.settings.route(model)
        if route is None:
            raise GatewayRequestError(
                404, f"the model {model!r} does not exist; GET /v1/models lists them",
                "model_not_found",
            )  # fmt: skip
        if route.kind != kind:
            raise GatewayRequestError(
                400, f"{model!r} is a {route.kind} model, not a {kind} model", "wrong_model_kind"
            )
        await self.authorize(principal, route, classification)
        chain = [route]
        for name in route.fallbacks:  # a fallback is used only where policy allows it too
            fallback = self.settings.route(name)
            if fallback is None or fallback in chain or fallback.kind != kind:
                continue
            try:
                await self.authorize(principal, fallback, classification)
            except Exception:
                continue
            chain.append(fallback)
        if self.ledger is not None:
            from llmflow.gateway.usage import QuotaExceeded

            try:
                await self.ledger.check(
                    principal.tenant_id, self.settings.quota_for(principal.tenant_id)
                )
            except QuotaExceeded as exc:
                metrics.REQUESTS.labels(model, principal.tenant_id, "429").inc()
                if self.observers:
                    refused = CallContext(principal, route, classification, request=body)
                    calls.deny(self.observers, refused, 429, "quota_exceeded", exc.message)
                raise GatewayRequestError(
                    429, exc.message, "quota_exceeded", {"Retry-After": str(exc.retry_after_s)}
                ) from exc
        return CallContext(principal, route, classification, chain=chain, request=body)

    async def guard_prompt(self, ctx: CallContext, body: dict[str, Any]) -> dict[str, Any]:
        """The request body with the PII policy (surface ``prompt``) applied to every text
        the model will read; a ``block`` becomes a 422 naming the entity types."""
        if not self.settings.pii_guard or self._guard is None:
            return body
        if ctx.route.kind == "embedding" and ctx.route.provider == "internal":
            return body  # vectors of pseudonyms are useless, and nothing leaves the platform
        from llmflow.errors import PiiBlocked
        from llmflow.pii.config import Surface
        from llmflow.pii.pseudonyms import Pseudonymizer

        guard = await self._guard()
        ctx.pseudonymizer = Pseudonymizer(guard.config.pseudonym_format)
        tenant = ctx.principal.tenant_id

        def apply(text: str) -> str:
            found = guard.engine.analyze(text)
            for finding in found:  # the call's PII summary (audit), blocked prompts included
                ctx.pii[finding.entity_type] = ctx.pii.get(finding.entity_type, 0) + 1
            result = guard.apply(
                text,
                Surface.PROMPT,
                classification=ctx.classification,
                tenant=tenant,
                pseudonymizer=ctx.pseudonymizer,
                findings=found,
            )
            for action in set(result.actions.values()):
                metrics.PII_ACTIONS.labels(tenant, "prompt", action.value).inc()
            return result.text

        try:
            return await asyncio.to_thread(_map_prompt_texts, body, apply)
        except PiiBlocked as exc:
            metrics.REQUESTS.labels(ctx.route.name, tenant, "422").inc()
            if self.observers:
                calls.deny(self.observers, ctx, 422, "pii_blocked", exc.detail)
            raise GatewayRequestError(422, exc.detail, "pii_blocked") from exc

    async def call(self, ctx: CallContext, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming call with fallbacks; the answer guarded and accounted."""
        if ctx.route.provider == "agent":
            return await self._call_inprocess(ctx, body)
        status, code = 200, None
        prompt_tokens = completion_tokens = 0
        answered = False
        try:
            route, backend, response = await self._send(ctx, path, body)
            ctx.backend, ctx.route = backend.url, route  # a fallback answers as itself
            answer: dict[str, Any] = response
            answer["model"] = route.name
            await self._guard_answer(ctx, answer)
            if self.observers:
                ctx.answer = _answer_text(answer)
            usage = answer.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
            if not usage and route.kind in ("chat", "completion"):
                prompt_tokens, completion_tokens = await self._count_tokens(
                    backend, route, body, _answer_text(answer)
                )
                answer["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
            answered = True
            return answer
        except UpstreamError as exc:
            status, code = exc.status, exc.code
            raise
        finally:
            if answered and ctx.settle_after_reply:
                ctx.pending = functools.partial(
                    self._account, ctx, status, code, prompt_tokens, completion_tokens, False
                )
            else:
                self._account(ctx, status, code, prompt_tokens, completion_tokens, stream=False)

    async def stream(
        self, ctx: CallContext, path: str, body: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        """Open the upstream stream (fallbacks apply until the first byte), then pass the
        events through with pseudonyms restored and usage accounted."""
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if ctx.route.provider == "agent":
            return await self._stream_inprocess(ctx, body, client_wants_usage)
        upstream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        route, backend, response = await self._open_stream(ctx, path, upstream_body)
        ctx.backend, ctx.route = backend.url, route

        async def count(answer: str) -> tuple[int, int]:
            return await self._count_tokens(backend, route, body, answer)

        events = sse.events(response.lines())
        return self._relay(ctx, events, response.aclose, count, client_wants_usage)

    # -- in-process models ------------------------------------------------------------
    async def _inprocess_model(self, ctx: CallContext) -> InProcessModel:
        handler = ctx.route.handler or ctx.route.name
        ctx.backend = f"inprocess:{handler}"
        try:
            return await self.inprocess.get(handler)
        except UnknownHandler as exc:
            raise GatewayRequestError(
                503,
                f"the model {ctx.route.name!r} is answered by the in-process handler "
                f"{handler!r}, which this server does not provide",
                "no_backend",
            ) from exc

    @staticmethod
    def _inprocess_call(ctx: CallContext) -> InProcessCall:
        pseudonymizer = ctx.pseudonymizer
        if pseudonymizer is None:
            return InProcessCall(ctx.principal, ctx.route.name, ctx.classification)
        return InProcessCall(
            ctx.principal, ctx.route.name, ctx.classification, pseudonymizer.restore
        )

    async def _call_inprocess(self, ctx: CallContext, body: dict[str, Any]) -> dict[str, Any]:
        status, code = 200, None
        prompt_tokens = completion_tokens = 0
        try:
            model = await self._inprocess_model(ctx)
            answer = await model.complete(self._inprocess_call(ctx), body)
            answer["model"] = ctx.route.name
            await self._guard_answer(ctx, answer)
            if self.observers:
                ctx.answer = _answer_text(answer)
            usage = answer.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
            return answer
        except (GatewayRequestError, UpstreamError, LLMFlowError) as exc:
            status, code = exc.status, exc.code
            raise
        finally:
            self._account(ctx, status, code, prompt_tokens, completion_tokens, stream=False)

    async def _stream_inprocess(
        self, ctx: CallContext, body: dict[str, Any], client_wants_usage: bool
    ) -> AsyncIterator[bytes]:
        """Open the in-process stream (its errors are still HTTP errors), then relay it like
        an upstream's: pseudonyms restored, usage passed on when asked and accounted."""
        try:
            model = await self._inprocess_model(ctx)
            events = await model.stream(self._inprocess_call(ctx), body)
        except (GatewayRequestError, UpstreamError, LLMFlowError) as exc:
            self._account(ctx, exc.status, exc.code, 0, 0, stream=True)
            raise

        async def close() -> None:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

        async def uncounted(answer: str) -> tuple[int, int]:
            return 0, 0  # an in-process model reports its usage itself

        return self._relay(ctx, events, close, uncounted, client_wants_usage)

    # -- upstream -------------------------------------------------------------------
    async def _send(
        self, ctx: CallContext, path: str, body: dict[str, Any]
    ) -> tuple[ModelRoute, Backend, dict[str, Any]]:
        last: UpstreamError | None = None
        for route in ctx.chain or [ctx.route]:
            for backend in self.pool.candidates(route.name):
                tei = route.kind == "rerank" and backend.config.api == "tei"
                try:
                    await self._ensure_adapter(route, backend)
                    response = await backend.post_json(
                        "/rerank" if tei else path,
                        _tei_rerank_body(body) if tei else _for_backend(body, route, backend),
                    )
                except (httpx.HTTPError, UpstreamUnreachable) as exc:
                    last = self._failed(route, backend, exc)
                    continue
                if response.status_code >= 400:
                    error = normalise_error(response.status_code, _json_or_text(response))
                    if not error.retryable:
                        backend.breaker.success()  # it answered: the replica is fine
                        raise error
                    last = self._failed(route, backend, error)
                    continue
                backend.breaker.success()
                try:
                    payload = response.json()
                    if tei:
                        payload = _rerank_from_tei(payload, body)
                except (ValueError, KeyError, TypeError):
                    last = self._failed(route, backend, UpstreamError(502, "invalid JSON"))
                    continue
                return route, backend, payload
        raise last or UpstreamError(
            503, f"no backend of {ctx.route.name!r} is available", code="no_backend"
        )

    async def _open_stream(
        self, ctx: CallContext, path: str, body: dict[str, Any]
    ) -> tuple[ModelRoute, Backend, StreamReply]:
        last: UpstreamError | None = None
        for route in ctx.chain or [ctx.route]:
            for backend in self.pool.candidates(route.name):
                try:
                    await self._ensure_adapter(route, backend)
                    response = await backend.open_stream(path, _for_backend(body, route, backend))
                    if response.status_code >= 400:
                        error = normalise_error(
                            response.status_code, _json_or_text(await response.read())
                        )
                        if not error.retryable:
                            backend.breaker.success()
                            raise error
                        last = self._failed(route, backend, error)
                        continue
                except (httpx.HTTPError, UpstreamUnreachable) as exc:
                    last = self._failed(route, backend, exc)
                    continue
                backend.breaker.success()
                return route, backend, response
        raise last or UpstreamError(
            503, f"no backend of {ctx.route.name!r} is available", code="no_backend"
        )

    def _failed(self, route: ModelRoute, backend: Backend, exc: Exception) -> UpstreamError:
        backend.breaker.failure(time.monotonic())
        if isinstance(exc, UpstreamError):
            kind, error = f"http_{exc.status}", exc
        elif isinstance(exc, httpx.TimeoutException | UpstreamTimeout):
            kind, error = "timeout", UpstreamError(504, "upstream timed out", code="timeout")
        else:
            kind = "connect"
            error = UpstreamError(502, "upstream unreachable", code="upstream_unreachable")
        metrics.ERRORS.labels(route.name, backend.url, kind).inc()
        log.warning(
            "upstream attempt failed",
            extra={"model": route.name, "backend": backend.url, "kind": kind},
        )
        return error

    async def _ensure_adapter(self, route: ModelRoute, backend: Backend) -> None:
        """Before a LoRA adapter's first use, load it on every replica of the route (vLLM's
        runtime LoRA API; a replica that already has it answers 400 "already loaded"), so
        that any replica can serve it; a replica that fails is retried on the next call."""
        if route.lora_base is None or route.name in backend.loaded_adapters:
            return
        lock = self._lora_locks.setdefault(("*", route.name), asyncio.Lock())
        async with lock:
            missing = [
                b for b in self.pool.backends(route.name) if route.name not in b.loaded_adapters
            ]
            results = await asyncio.gather(
                *(self._load_adapter(route, b) for b in missing), return_exceptions=True
            )
        for b, result in zip(missing, results, strict=True):
            if b is backend and isinstance(result, BaseException):
                raise result

    async def _load_adapter(self, route: ModelRoute, backend: Backend) -> None:
        response = await backend.client.post(
            "/v1/load_lora_adapter",
            json={"lora_name": route.name, "lora_path": route.lora_path or route.name},
            headers=backend.headers(),
        )
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise normalise_error(response.status_code, _json_or_text(response))
        backend.loaded_adapters.add(route.name)

    async def _count_tokens(
        self, backend: Backend, route: ModelRoute, body: dict[str, Any], answer: str
    ) -> tuple[int, int]:
        """Token counts from the backend's ``/tokenize`` when it reported no usage."""
        model = backend.config.upstream_model or route.lora_base or route.name

        async def count(payload: dict[str, Any]) -> int:
            try:
                r = await backend.client.post("/tokenize", json={"model": model, **payload})
                return int(r.json().get("count", 0)) if r.status_code == 200 else 0
            except (httpx.HTTPError, ValueError):
                return 0

        if "messages" in body:
            prompt = await count({"messages": body["messages"]})
        else:
            prompt_value = body.get("prompt", "")
            text = prompt_value if isinstance(prompt_value, str) else json.dumps(prompt_value)
            prompt = await count({"prompt": text})
        completion = await count({"prompt": answer, "add_special_tokens": False}) if answer else 0
        return prompt, completion

    # -- answers --------------------------------------------------------------------
    async def _guard_answer(self, ctx: CallContext, answer: dict[str, Any]) -> None:
        """Mask personal data the model produced itself (surface ``response``), then put
        the prompt's pseudonymised values back."""
        guard = await self._guard() if (self._guard and self.settings.pii_guard) else None
        pseudonymizer = ctx.pseudonymizer
        for choice in answer.get("choices") or []:
            holder, key = _content_slot(choice)
            if holder is None or not isinstance(holder.get(key), str):
                continue
            text = holder[key]
            if guard is not None:
                from llmflow.pii.config import Surface

                result = await asyncio.to_thread(
                    guard.apply,
                    text,
                    Surface.RESPONSE,
                    classification=ctx.classification,
                    tenant=ctx.principal.tenant_id,
                )
                text = result.text
            if pseudonymizer is not None:
                text = pseudonymizer.restore(text)
            holder[key] = text

    async def _relay(
        self,
        ctx: CallContext,
        events: AsyncIterator[dict[str, Any] | None],
        close: Callable[[], Awaitable[None]],
        count: Callable[[str], Awaitable[tuple[int, int]]],
        client_wants_usage: bool,
    ) -> AsyncIterator[bytes]:
        """Pass stream events on (``None`` ends the stream): pseudonyms restored per choice,
        usage passed on only when asked, the request accounted when the stream ends;
        ``close`` releases the source, ``count`` counts tokens when no usage was reported."""
        restorers: dict[int, StreamRestorer] = {}
        usage: dict[str, Any] | None = None
        answer_parts: list[str] = []
        status, code = 200, None
        try:
            async for event in events:
                if event is None:
                    break
                if "error" in event and not event.get("choices"):
                    error = normalise_error(500, event)
                    status, code = 502, error.code
                    yield sse.encode(error.body)
                    break
                if event.get("usage") and not event.get("choices"):
                    usage = event["usage"]
                    if client_wants_usage:
                        yield sse.encode({**event, "model": ctx.route.name})
                    continue
                if event.get("usage"):
                    usage = event["usage"]
                    if not client_wants_usage:
                        event = {k: v for k, v in event.items() if k != "usage"}
                for choice in event.get("choices") or []:
                    holder, key = _content_slot(choice)
                    if holder is None or not isinstance(holder.get(key), str):
                        continue
                    piece = holder[key]
                    answer_parts.append(piece)
                    if ctx.pseudonymizer is not None:
                        restorer = restorers.get(choice.get("index", 0))
                        if restorer is None:
                            restorer = ctx.pseudonymizer.stream()
                            restorers[choice.get("index", 0)] = restorer
                        piece = restorer.feed(piece)
                        if choice.get("finish_reason"):
                            piece += restorer.flush()
                    holder[key] = piece
                    if ctx.ttft_s is None and piece:
                        ctx.ttft_s = time.perf_counter() - ctx.started
                        metrics.TTFT.labels(ctx.route.name).observe(ctx.ttft_s)
                event["model"] = ctx.route.name
                yield sse.encode(event)
            yield sse.DONE
        except GeneratorExit:  # closed by the response after a client disconnect
            status, code = 499, "client_closed"
            raise
        except asyncio.CancelledError:
            status, code = 499, "client_closed"
            raise
        except (UpstreamUnreachable, LLMFlowError) as exc:
            if isinstance(exc, LLMFlowError):  # an in-process model failed mid-stream
                status, code = exc.status, exc.code
                yield sse.encode(UpstreamError(exc.status, exc.detail, code=exc.code).body)
            else:
                status, code = 502, "upstream_stream_broken"
                broken = UpstreamError(502, "the upstream stream broke off", code=code)
                yield sse.encode(broken.body)
            yield sse.DONE
        finally:
            # On a client disconnect Starlette cancels this generator inside an anyio cancel
            # scope, where every further await is cancelled too: shield the close, or the
            # upstream connection stays open and the model keeps generating for nobody.
            with anyio.CancelScope(shield=True):
                await close()
            prompt_tokens = int((usage or {}).get("prompt_tokens") or 0)
            completion_tokens = int((usage or {}).get("completion_tokens") or 0)
            if usage is None and status == 200:
                try:
                    prompt_tokens, completion_tokens = await count("".join(answer_parts))
                except Exception:  # accounting must not turn a served answer into an error
                    log.exception("token counting fallback failed")
            if self.observers:
                ctx.answer = "".join(answer_parts)
            self._account(ctx, status, code, prompt_tokens, completion_tokens, stream=True)

    def _account(
        self,
        ctx: CallContext,
        status: int,
        code: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        stream: bool,
    ) -> None:
        tenant, model = ctx.principal.tenant_id, ctx.route.name
        elapsed = time.perf_counter() - ctx.started
        child(metrics.REQUESTS, model, tenant, str(status)).inc()
        child(metrics.LATENCY, model, "true" if stream else "false").observe(elapsed)
        if prompt_tokens:
            child(metrics.TOKENS, tenant, model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            child(metrics.TOKENS, tenant, model, "completion").inc(completion_tokens)
        if self.ledger is not None:
            self.ledger.record(
                UsageRecord(
                    tenant_id=tenant,
                    subject=ctx.principal.subject,
                    model=model,
                    backend=ctx.backend,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    latency_ms=elapsed * 1000,
                    ttft_ms=ctx.ttft_s * 1000 if ctx.ttft_s is not None else None,
                    status=status,
                    stream=stream,
                    error_code=code,
                )
            )
        if self.observers:
            calls.notify(
                self.observers, ctx, status, code, prompt_tokens, completion_tokens, stream
            )


# -- request/response helpers ------------------------------------------------------
def _for_backend(body: dict[str, Any], route: ModelRoute, backend: Backend) -> dict[str, Any]:
    """The body as this backend expects it: its own model name (an adapter keeps its name:
    vLLM serves LoRA adapters under the name they were loaded with)."""
    name = route.name if route.lora_base else (backend.config.upstream_model or route.name)
    return {**body, "model": name}


def _tei_rerank_body(body: dict[str, Any]) -> dict[str, Any]:
    """TEI's native ``/rerank`` request for an OpenAI/Jina-style rerank body."""
    return {"query": body.get("query", ""), "texts": body.get("documents", []), "truncate": True}


def _rerank_from_tei(payload: Any, body: dict[str, Any]) -> dict[str, Any]:
    """TEI's ``[{index, score}]`` as ``{results: [{index, relevance_score}]}``, best first,
    cut to ``top_n`` — what Dify's plugin, vLLM and Infinity clients read."""
    ranked = sorted(
        ({"index": int(r["index"]), "relevance_score": float(r["score"])} for r in payload),
        key=lambda r: -r["relevance_score"],
    )
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        ranked = ranked[:top_n]
    return {"object": "list", "results": ranked}


def _map_prompt_texts(body: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    """A copy of the body with ``fn`` applied to every text a model reads: chat messages
    (string or text parts), a completion prompt (string or list), embedding inputs, a
    rerank query and documents."""
    out = dict(body)
    if isinstance(body.get("messages"), list):
        messages = []
        for message in body["messages"]:
            if not isinstance(message, dict):
                messages.append(message)
                continue
            m = dict(message)
            content = m.get("content")
            if isinstance(content, str):
                m["content"] = fn(content)
            elif isinstance(content, list):
                m["content"] = [
                    {**part, "text": fn(part["text"])}
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                    else part
                    for part in content
                ]
            messages.append(m)
        out["messages"] = messages
    for key in ("prompt", "input", "query", "documents"):
        value = body.get(key)
        if isinstance(value, str):
            out[key] = fn(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = [fn(v) for v in value]
    return out


def _content_slot(choice: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Where a choice keeps its text: ``message.content``, ``delta.content`` or ``text``."""
    for holder_key in ("message", "delta"):
        holder = choice.get(holder_key)
        if isinstance(holder, dict):
            return holder, "content"
    return (choice, "text") if "text" in choice else (None, "")


def _answer_text(answer: dict[str, Any]) -> str:
    parts = []
    for choice in answer.get("choices") or []:
        holder, key = _content_slot(choice)
        if holder is not None and isinstance(holder.get(key), str):
            parts.append(holder[key])
    return "".join(parts)


def _json_or_text(response: httpx.Response | JsonReply) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def new_request_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]
