"""An audit event per gateway call, written in batches off the request path.

The policy decision behind ``model.use`` is audited by the policy layer once per cache window
(:mod:`llmflow.gateway.authorize`); this writer adds one event per call — who, tenant,
``model.use`` on the model, allow or deny (a PII block or a quota refusal is a deny),
backend, status, tokens, latency and the prompt's PII summary (a count per entity type, never
a value) — through the platform's audit log (:class:`~llmflow.observability.audit.AuditLog`,
PostgreSQL and its sinks).

Batching is the usage ledger's (:class:`llmflow.gateway.backlog.Backlog`): the request path
only puts the event on a bounded queue; a background task writes what is queued every
``flush_interval_s``, one transaction per batch. A batch that cannot be written is kept and
retried with the next round (bounded: the oldest are dropped, and logged, past
``max_queued``). The call itself has been answered by then, so a failed write cannot refuse
it: per-call events are the record of what happened, the fail-closed gate stays with the
policy decision.

Every string in ``details`` sits under a key of
:data:`~llmflow.observability.audit.STRUCTURAL_KEYS` (method, route, classification,
outcome), so no event needs the PII masker; the backend goes into ``reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmflow.gateway.backlog import Backlog
from llmflow.gateway.calls import ROUTES, CallEvent
from llmflow.observability.audit import AuditEntry, AuditLog

log = logging.getLogger(__name__)

ACTION = "model.use"
_CODE = re.compile(r"[a-z0-9_.-]{1,64}")


def call_entry(event: CallEvent) -> AuditEntry:
    """The audit event of one gateway call."""
    details: dict[str, Any] = {
        "method": "POST",
        "route": ROUTES.get(event.kind, ""),
        "classification": event.classification,
        "outcome": _outcome(event),
        "status": event.status,
        "stream": event.stream,
        # token counts under "usage": scrub_details drops every key that names a "token"
        "usage": {"prompt": event.prompt_tokens, "completion": event.completion_tokens},
        "latency_ms": round(event.latency_s * 1000, 1),
        "pii": dict(sorted(event.pii.items())),
    }
    if event.decision == "deny":
        reason = event.reason or (event.error_code or "refused")
    else:
        backend = _public_url(event.backend) if event.backend else "none"
        reason = f"backend {backend}: HTTP {event.status}"
    return AuditEntry(
        tenant_id=event.tenant,
        actor=event.subject,
        actor_kind=event.subject_kind,
        action=ACTION,
        resource_type="model",
        resource_id=event.model,
        decision=event.decision,
        reason=reason,
        request_id=event.call_id,
        details=details,
        created_at=datetime.fromtimestamp(event.started_at, UTC),
    )


def _outcome(event: CallEvent) -> str:
    """``ok``, or the error code when it is one of ours or an upstream's identifier (an
    upstream's free-form code is reported as ``upstream_error``: outcome is not masked)."""
    if event.status < 400 and event.error_code is None:
        return "ok"
    code = (event.error_code or f"http_{event.status}").lower()
    return code if _CODE.fullmatch(code) else "upstream_error"


def _public_url(url: str) -> str:
    """``url`` without user info (a backend URL may carry credentials)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class CallAuditWriter:
    """Queues call events and writes them to the audit log in batches (``start()`` the
    writer; ``aclose()`` writes what is left)."""

    def __init__(
        self,
        audit: AuditLog,
        flush_interval_s: float = 0.5,
        batch_size: int = 25,
        max_queued: int = 100_000,
    ) -> None:
        self.audit = audit
        self.flush_interval_s = flush_interval_s
        self._backlog: Backlog[CallEvent] = Backlog("audit", batch_size, max_queued)
        self._writer: asyncio.Task[None] | None = None

    def observe(self, event: CallEvent) -> None:
        """Queue the call's event (never blocks the request)."""
        self._backlog.put(event)

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._run(), name="gateway-audit-writer")

    async def flush(self) -> None:
        """Write everything queued now (and what a failed round left), in batches."""
        await self._backlog.drain(self._write)

    async def _write(self, events: list[CallEvent]) -> None:
        await self.audit.record_all([call_entry(e) for e in events])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # kept for the next round; AuditLog has logged the cause
                log.warning("gateway call audit events not written yet; retrying")

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        try:
            await self.flush()
        except Exception:
            log.error("gateway call audit events lost at shutdown: %d", len(self._backlog))
