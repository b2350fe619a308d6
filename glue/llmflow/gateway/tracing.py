"""Langfuse traces of gateway calls, PII masked before export.

One trace per call (its id is the call's audit ``request_id``) with one ``generation``
observation: model, backend, tenant, input
messages (or prompt, embedding input, rerank query and documents), the answer text, token
usage, latency, time to first token (``completion_start_time``), status and error code.

Contract (Langfuse Python SDK 4.x, ``langfuse>=4,<5`` in glue/pyproject.toml: SDK 5 needs a
Langfuse server >= 4.59, platform/platform.yaml pins server 4.4.0): the SDK is an
OpenTelemetry exporter. Observations are OTel spans of the tracer ``langfuse-sdk``; their
``input``/``output``/``metadata`` go through the client's ``mask`` callable when they are set
(``langfuse/_client/span.py``, ``_process_media_and_apply_mask``), and a
``BatchSpanProcessor`` sends them in the background as OTLP/HTTP protobuf to
``<host>/api/public/otel/v1/traces`` with HTTP Basic ``public_key:secret_key``
(``langfuse/_client/span_processor.py``).

Off the request path: :meth:`LangfuseTracer.observe` only puts the call's event on a bounded
queue (a full queue drops the trace and counts it). One worker thread builds the
observations — that is where ``mask`` runs the platform's PII masking (the ``logs`` rules of
``policies/presidio/policy.yaml`` through :func:`llmflow.pii.anonymize.mask_data`) — and the
SDK's own thread exports them. A slow or dead Langfuse therefore never delays or fails a
call, streaming included: at worst spans are dropped when the SDK's queue is full.

Tenants: one platform Langfuse project; every trace carries the tenant as a tag
(``tenant:<id>``), in the trace metadata and in the observation's metadata, and the caller's
subject as the Langfuse user. The control plane (``llmflow.tenancy.langfuse``) creates a
project per tenant but no project API keys, so there are no per-tenant keys to export with.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmflow.gateway import metrics
from llmflow.gateway.calls import CallEvent

if TYPE_CHECKING:
    from langfuse import Langfuse
    from opentelemetry.trace import Tracer

    from llmflow.settings import LangfuseSettings

log = logging.getLogger(__name__)

Masker = Callable[[Any, str], Any]
"""``(JSON-like value, tenant) -> the value with personal data masked``."""

_MODEL_PARAMETERS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "seed")
_FULLY_MASKED = "<masked: the PII masker failed>"

_masking: contextvars.ContextVar[tuple[Masker, str] | None] = contextvars.ContextVar(
    "llmflow_langfuse_masking", default=None
)


def _mask(*, data: Any, **_: Any) -> Any:
    """The SDK's ``mask`` callable: the platform's masking for the tenant of the call being
    exported. Nothing unmasked leaves: without a masker, or when it fails, the value is
    replaced whole."""
    current = _masking.get()
    if current is None:
        return None if data is None else _FULLY_MASKED
    masker, tenant = current
    try:
        return masker(data, tenant)
    except Exception:
        log.exception("masking a trace attribute failed; the attribute is dropped")
        return _FULLY_MASKED


# The SDK keeps one resource manager (span processor, exporter thread) per public key for
# the life of the process and hands it to every later client with that key. A gateway that
# is rebuilt (routing table reloaded) must reuse the same client and tracer, or its spans
# would go to a provider the SDK never wired to Langfuse.
_clients: dict[tuple[str, str], tuple[Langfuse, Tracer]] = {}
_clients_lock = threading.Lock()


def _client(settings: LangfuseSettings) -> tuple[Langfuse, Tracer]:
    from langfuse import Langfuse
    from langfuse import __version__ as sdk_version
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    assert settings.host and settings.public_key and settings.secret_key
    host = settings.host.rstrip("/")
    key = (host, settings.public_key)
    with _clients_lock:
        found = _clients.get(key)
        if found is not None:
            return found
        # Our own provider, not the process-global one the SDK would otherwise install.
        provider = TracerProvider(
            resource=Resource.create({"service.name": "llmflow-gateway"}),
            sampler=TraceIdRatioBased(settings.sample_rate) if settings.sample_rate < 1 else None,
        )
        client = Langfuse(
            public_key=settings.public_key,
            secret_key=settings.secret_key.get_secret_value(),
            base_url=host,
            timeout=settings.timeout_s,
            flush_at=settings.flush_at,
            flush_interval=settings.flush_interval_s,
            environment=settings.environment,
            tracing_enabled=True,
            mask=_mask,
            tracer_provider=provider,
        )
        # The SDK exports only spans of its own tracer name scoped to this public key.
        tracer = provider.get_tracer(
            "langfuse-sdk", sdk_version, attributes={"public_key": settings.public_key}
        )
        _clients[key] = (client, tracer)
        return client, tracer


def trace_input(kind: str, request: dict[str, Any] | None) -> Any:
    """What the model was asked, as the caller sent it (masked later by ``mask``)."""
    if not request:
        return None
    if kind == "chat":
        return request.get("messages")
    if kind == "completion":
        return request.get("prompt")
    if kind == "embedding":
        return request.get("input")
    return {"query": request.get("query"), "documents": request.get("documents")}


def model_parameters(request: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sampling parameters of the request (numbers only: nothing to mask)."""
    if not request:
        return None
    params = {
        k: request[k]
        for k in _MODEL_PARAMETERS
        if isinstance(request.get(k), int | float) and not isinstance(request.get(k), bool)
    }
    return params or None


class LangfuseTracer:
    """Exports each call's event as a Langfuse trace from a worker thread."""

    def __init__(self, settings: LangfuseSettings, masker: Masker) -> None:
        self.settings = settings
        self.masker = masker
        self._client, self._tracer = _client(settings)
        self._queue: queue.Queue[CallEvent | None] = queue.Queue(maxsize=settings.queue_size)
        self._thread = threading.Thread(
            target=self._run, name="gateway-langfuse-tracer", daemon=True
        )
        self._thread.start()

    def observe(self, event: CallEvent) -> None:
        """Queue the call's trace (never blocks; a full queue drops it)."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            metrics.OBSERVER_DROPPED.labels("langfuse").inc()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self.export(event)
            except Exception:  # one bad trace never stops the exporter
                log.exception("building a Langfuse trace failed")
            finally:
                self._queue.task_done()

    def export(self, event: CallEvent) -> None:
        """Build the call's trace (masking its input, output and metadata) and hand it to the
        SDK's batch exporter."""
        from langfuse import LangfuseGeneration, LangfuseOtelSpanAttributes, propagate_attributes
        from opentelemetry import trace

        start_ns = int(event.started_at * 1e9)
        end_ns = start_ns + int(event.latency_s * 1e9)
        first_token = (
            datetime.fromtimestamp(event.started_at + event.ttft_s, UTC)
            if event.ttft_s is not None
            else None
        )
        failed = event.status >= 400
        metadata = {
            "tenant": event.tenant,
            "backend": event.backend,
            "provider": event.provider,
            "classification": event.classification,
            "status": event.status,
            "error_code": event.error_code,
            "stream": event.stream,
            "latency_ms": round(event.latency_s * 1000, 2),
            "ttft_ms": round(event.ttft_s * 1000, 2) if event.ttft_s is not None else None,
            "pii": event.pii,
            "decision": event.decision,
        }
        token = _masking.set((self.masker, event.tenant))
        try:
            with propagate_attributes(
                user_id=event.subject,
                tags=["llmflow-gateway", f"tenant:{event.tenant}"],
                metadata={"tenant": event.tenant, "model": event.model},
                trace_name=f"gateway {event.kind}",
            ):
                # The trace id is the call id, which the call's audit event carries as its
                # request id; a remote parent sets it, and Langfuse is told this is the root
                # (what the SDK does for ``trace_context``).
                parent = trace.NonRecordingSpan(
                    trace.SpanContext(
                        int(event.call_id, 16),
                        random.getrandbits(64) or 1,
                        is_remote=True,
                        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                    )
                )
                span = self._tracer.start_span(
                    f"{event.kind} {event.model}",
                    context=trace.set_span_in_context(parent),
                    start_time=start_ns,
                    attributes={LangfuseOtelSpanAttributes.AS_ROOT: True},
                )
                generation = LangfuseGeneration(
                    otel_span=span,
                    langfuse_client=self._client,
                    input=trace_input(event.kind, event.request),
                    output=event.answer or None,
                    metadata=metadata,
                    level=("ERROR" if event.status >= 500 else "WARNING") if failed else None,
                    status_message=(
                        f"{event.error_code or 'error'} (HTTP {event.status})" if failed else None
                    ),
                    completion_start_time=first_token,
                    model=event.model,
                    model_parameters=model_parameters(event.request),
                    usage_details={
                        "input": event.prompt_tokens,
                        "output": event.completion_tokens,
                        "total": event.prompt_tokens + event.completion_tokens,
                    },
                )
                generation.end(end_time=end_ns)
        finally:
            _masking.reset(token)

    def flush(self) -> None:
        """Build every queued trace and export them now (blocking: tests, shutdown)."""
        self._queue.join()
        self._client.flush()

    async def aclose(self) -> None:
        """Stop the worker and flush, bounded by the export timeout (a dead Langfuse must
        not hold up shutdown; what it could not take is lost)."""
        import asyncio

        def finish() -> None:
            self._queue.put(None)  # after what is queued: those traces are still built
            self._thread.join()
            self._client.flush()

        try:
            await asyncio.wait_for(asyncio.to_thread(finish), self.settings.timeout_s + 1)
        except TimeoutError:
            log.warning("Langfuse did not take the last traces within %ss", self.settings.timeout_s)
