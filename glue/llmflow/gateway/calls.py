"""What the gateway tells its observers about each call: per-call audit events and traces.

The request path builds one :class:`CallEvent` when a call ends (or is refused by the quota
or the PII guard) and hands it to every :class:`CallObserver`, whose ``observe`` only queues
it: the audit writer (:mod:`llmflow.gateway.audit`) and the Langfuse tracer
(:mod:`llmflow.gateway.tracing`) do their work — masking, serialising, writing, exporting —
off the request path. :func:`attach_observability` wires them, and the active health checks
(:mod:`llmflow.gateway.health`), to a gateway from the settings.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from llmflow.gateway.service import CallContext, GatewayService
    from llmflow.runtime import Runtime

log = logging.getLogger(__name__)

ROUTES = {
    "chat": "/v1/chat/completions",
    "completion": "/v1/completions",
    "embedding": "/v1/embeddings",
    "rerank": "/v1/rerank",
}
"""The gateway route of each model kind (audit events name the route, not a raw path)."""


@dataclass(slots=True)
class CallEvent:
    """One gateway call as its observers see it (raw request and answer included: each
    observer masks or drops them before anything leaves the process)."""

    call_id: str
    """32 hex digits: the Langfuse trace id and the audit event's request id."""
    tenant: str
    subject: str
    subject_kind: str
    model: str
    kind: str
    provider: str
    backend: str
    classification: str
    decision: Literal["allow", "deny"]
    status: int
    error_code: str | None
    reason: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    started_at: float
    """Wall-clock start (seconds since the epoch)."""
    latency_s: float
    ttft_s: float | None
    request: dict[str, Any] | None
    answer: str
    pii: dict[str, int] = field(default_factory=dict)
    """Personal data found in the prompt: count per entity type (never values)."""


class CallObserver(Protocol):
    """Gets every call's event; ``observe`` must return at once (queue, never block)."""

    def observe(self, event: CallEvent) -> None: ...

    async def aclose(self) -> None:
        """Deliver what is queued and release resources."""
        ...


def notify(
    observers: Sequence[CallObserver],
    ctx: CallContext,
    status: int,
    code: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    stream: bool,
    *,
    decision: Literal["allow", "deny"] = "allow",
    reason: str = "",
) -> None:
    """Build the call's event and hand it to every observer; an observer that fails is
    logged and never fails the call."""
    latency = time.perf_counter() - ctx.started
    event = CallEvent(
        call_id=os.urandom(16).hex(),
        tenant=ctx.principal.tenant_id,
        subject=ctx.principal.subject,
        subject_kind=ctx.principal.kind,
        model=ctx.route.name,
        kind=ctx.route.kind,
        provider=ctx.route.provider,
        backend=ctx.backend,
        classification=ctx.classification,
        decision=decision,
        status=status,
        error_code=code,
        reason=reason,
        stream=stream,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        started_at=time.time() - latency,
        latency_s=latency,
        ttft_s=ctx.ttft_s,
        request=ctx.request,
        answer=ctx.answer,
        pii=dict(ctx.pii),
    )
    for observer in observers:
        try:
            observer.observe(event)
        except Exception:
            log.exception("gateway call observer %s failed", type(observer).__name__)


def deny(
    observers: Sequence[CallObserver], ctx: CallContext, status: int, code: str, reason: str
) -> None:
    """Tell the observers about a call the gateway refused (quota, PII block) after policy."""
    stream = bool(ctx.request and ctx.request.get("stream") is True)
    notify(observers, ctx, status, code, 0, 0, stream, decision="deny", reason=reason)


async def attach_observability(rt: Runtime, service: GatewayService) -> None:
    """Give ``service`` what the settings ask for: per-call audit events
    (``gateway.audit_calls``), Langfuse traces (``observability.langfuse.enabled``) and
    active health checks (``gateway.health_interval_s`` > 0)."""
    settings = rt.settings
    if settings.gateway.audit_calls:
        from llmflow.gateway.audit import CallAuditWriter

        writer = CallAuditWriter(await rt.audit())
        writer.start()
        service.observers.append(writer)
    if settings.observability.langfuse.enabled:
        from llmflow.gateway.tracing import LangfuseTracer
        from llmflow.pii.anonymize import mask_data

        await rt.pii_guard()  # registers the platform's guard as mask_data's masker
        service.observers.append(LangfuseTracer(settings.observability.langfuse, mask_data))
    if settings.gateway.health_interval_s > 0:
        from llmflow.gateway.health import BackendHealth

        service.health = BackendHealth(service.pool, settings.gateway)
        service.health.start()
