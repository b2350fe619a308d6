"""The audit log: every policy decision and every administrative change (ARCHITECTURE §10).

PostgreSQL is the record: table ``audit_events``, range-partitioned by month on
``created_at`` (migration 0003). :class:`AuditLog` creates a month's partition
(``audit_events_YYYY_MM``) the first time it writes into that month; the table's ``DEFAULT``
partition takes the rows when that fails (a race lost to another replica is retried by
checking the catalogue). Optional sinks (OpenSearch, :mod:`llmflow.observability.opensearch`)
get a copy after the row is committed; a sink failure is logged and never fails the request.

What an event may hold:

* ``details`` go through :func:`scrub_details` (credentials removed: keys named like
  ``token``/``secret``/``password``/``api_key``, values shaped like an LLMFlow key or a JWT)
  and then through the masker (``llmflow.pii.anonymize.mask_data``, wired by the runtime) for
  every string not listed in :data:`STRUCTURAL_KEYS`. When masking fails the strings are
  dropped, never stored in clear.
* Failure semantics (``audit.fail_closed``, default on): :meth:`AuditLog.record` raises
  :class:`AuditUnavailable` (503) when the row cannot be written. The API turns that into a
  refusal of an *allowed* request (no unaudited access); a *denied* request stays denied
  (403) and the failure is logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import and_, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from llmflow.errors import InvalidRequest, ServiceUnavailable
from llmflow.settings import Settings
from llmflow.storage.bulk import copy_rows, jsonb
from llmflow.storage.models import AuditEvent, new_id, utcnow

log = logging.getLogger(__name__)

AuditDecision = Literal["allow", "deny"]

TABLE = "audit_events"
DEFAULT_PARTITION = "audit_events_default"

STRUCTURAL_KEYS = frozenset(
    {
        "method",
        "route",
        "classification",
        "exists",
        "outcome",
        "roles",
        "knowledge_base",
        "knowledge_bases",
        "key_id",
        "run_id",
        "response_mode",
    }
)
"""Detail keys whose string values our code writes or validates (HTTP method, route template,
values from a fixed vocabulary, ids and ``[a-z0-9_-]`` names): never free text, so not sent
to the masker (which would load Presidio for every decision). Free text (a description, a
key's name) is masked."""

_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|authorization|credential|api[_-]?key|^key$|cookie)", re.I
)
_SECRET_VALUE = re.compile(
    r"(llmf_[A-Za-z0-9_-]+|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|Bearer\s+\S+)"
)
REDACTED = "[redacted]"

Masker = Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]
"""``(details, tenant) -> masked details``: PII masking of the string values."""


class AuditUnavailable(ServiceUnavailable):
    """The audit event could not be written; an allowed request is refused (fail closed)."""

    code = "audit_unavailable"
    title = "Audit log unavailable"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit event as written: who (``actor``), in which tenant, did what, and the
    decision with its reason."""

    tenant_id: str
    actor: str
    actor_kind: str
    action: str
    resource_type: str
    resource_id: str
    decision: AuditDecision
    reason: str
    request_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    id: str = field(default_factory=new_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /v1/audit`` and of the OpenSearch documents."""
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "tenant_id": self.tenant_id,
            "actor": self.actor,
            "actor_kind": self.actor_kind,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "decision": self.decision,
            "reason": self.reason,
            "request_id": self.request_id,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of events, newest first; ``next_cursor`` is None on the last page."""

    events: list[AuditEntry]
    next_cursor: str | None


class AuditSink(Protocol):
    """A secondary destination of audit events (the PostgreSQL row is the record)."""

    async def send(self, entries: Sequence[AuditEntry]) -> None:
        """Deliver ``entries``; raise on failure (the caller logs it)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


# ---------------------------------------------------------------- details


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Whether a details key names a credential (keys repeat: every gateway call's event has
    the same dozen)."""
    return _SECRET_KEY.search(key) is not None


def scrub_details(value: Any) -> Any:
    """``value`` without credentials: secret-named keys dropped, key/JWT-shaped strings
    redacted. Applied before masking, to every event."""
    if isinstance(value, Mapping):
        return {str(k): scrub_details(v) for k, v in value.items() if not _secret_key(str(k))}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [scrub_details(v) for v in items]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def _has_text(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, dict):
        return any(_has_text(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_text(v) for v in value)
    return False


def _drop_text(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTED
    if isinstance(value, dict):
        return {k: _drop_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_text(v) for v in value]
    return value


# ---------------------------------------------------------------- partitions


def partition_name(when: datetime) -> str:
    """``audit_events_YYYY_MM`` for the UTC month of ``when``."""
    when = when.astimezone(UTC)
    return f"{TABLE}_{when.year:04d}_{when.month:02d}"


def month_bounds(when: datetime) -> tuple[datetime, datetime]:
    """The UTC month containing ``when``: ``[first instant, first instant of next month)``."""
    when = when.astimezone(UTC)
    start = datetime(when.year, when.month, 1, tzinfo=UTC)
    end = datetime(when.year + when.month // 12, when.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def partition_ddl(when: datetime) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the month's partition (only digits are
    interpolated: the name and bounds come from a datetime)."""
    start, end = month_bounds(when)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(when)} PARTITION OF {TABLE} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


# ---------------------------------------------------------------- cursors


def encode_cursor(entry: AuditEntry) -> str:
    """An opaque cursor after ``entry`` (its time and id)."""
    raw = json.dumps([entry.created_at.isoformat(), entry.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (time, id) a cursor points after; :class:`InvalidRequest` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, event_id = json.loads(raw)
        parsed = datetime.fromisoformat(when)
        if not isinstance(event_id, str) or parsed.tzinfo is None:
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidRequest("invalid cursor: pass next_cursor of a previous page") from exc
    return parsed, event_id


# ---------------------------------------------------------------- the log


class AuditLog:
    """Writes audit events to PostgreSQL (and sinks) and reads them back per tenant."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        masker: Masker | None = None,
        sinks: Sequence[AuditSink] = (),
        fail_closed: bool = True,
    ) -> None:
        """``masker`` masks PII in string details; without one, string details are dropped."""
        self.sessions = sessions
        self.masker = masker
        self.sinks = list(sinks)
        self.fail_closed = fail_closed
        self._partitions: set[str] = set()
        self._lock = asyncio.Lock()

    async def record(self, entry: AuditEntry) -> AuditEntry:
        """Write one event; raises :class:`AuditUnavailable` when it cannot be stored."""
        (written,) = await self.record_all([entry])
        return written

    async def record_all(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
        """Write events in one transaction (creating month partitions first); returns them
        as stored (details scrubbed and masked)."""
        if not entries:
            return []
        prepared = [await self._prepare(e) for e in entries]
        try:
            for month in {partition_name(e.created_at): e.created_at for e in prepared}.values():
                await self.ensure_partition(month)
            async with self.sessions() as session, session.begin():
                # COPY: the gateway writes an event per call, from batches on the event loop
                await copy_rows(session, TABLE, _COLUMNS, [_values(e) for e in prepared])
        except (SQLAlchemyError, OSError) as exc:
            log.error(
                "audit events not written (%d, first action %s): %s",
                len(prepared),
                prepared[0].action,
                exc.__class__.__name__,
            )
            raise AuditUnavailable(
                "the audit log cannot be written: the request is refused because it could not "
                "be recorded; retry later or ask an operator to check PostgreSQL"
            ) from exc
        for sink in self.sinks:
            try:
                await sink.send(prepared)
            except Exception as exc:  # a secondary copy never fails the request
                log.error("audit sink %s failed: %s", type(sink).__name__, exc)
        return prepared

    async def _prepare(self, entry: AuditEntry) -> AuditEntry:
        details: dict[str, Any] = scrub_details(dict(entry.details))
        free = {k: v for k, v in details.items() if k not in STRUCTURAL_KEYS}
        if _has_text(free):
            if self.masker is None:
                free = _drop_text(free)
            else:
                try:
                    free = await self.masker(free, entry.tenant_id)
                except Exception:  # never store unmasked text: drop it instead
                    log.exception("audit details could not be masked; their text is dropped")
                    free = _drop_text(free)
            details = {**details, **free}
        return AuditEntry(
            tenant_id=entry.tenant_id[:64],
            actor=entry.actor[:255],
            actor_kind=entry.actor_kind[:16],
            action=entry.action[:64],
            resource_type=entry.resource_type[:64],
            resource_id=entry.resource_id[:255],
            decision=entry.decision,
            reason=_SECRET_VALUE.sub(REDACTED, entry.reason),
            request_id=entry.request_id[:64] if entry.request_id else None,
            details=details,
            created_at=entry.created_at.astimezone(UTC),
            id=entry.id,
        )

    async def ensure_partition(self, when: datetime) -> str:
        """The partition that takes rows of ``when``'s month, created if missing.

        Returns its name, or :data:`DEFAULT_PARTITION` when it cannot be created (e.g. the
        default partition already holds rows of that month: PostgreSQL then refuses the new
        partition until they are moved).
        """
        name = partition_name(when)
        if name in self._partitions:
            return name
        async with self._lock:
            if name in self._partitions:
                return name
            try:
                async with self.sessions() as session, session.begin():
                    await session.execute(text(partition_ddl(when)))
            except SQLAlchemyError as exc:
                # Another replica may have created it between our check and our DDL.
                if not await self._exists(name):
                    log.warning(
                        "audit partition %s not created, rows go to %s: %s",
                        name,
                        DEFAULT_PARTITION,
                        str(exc).splitlines()[0][:300],
                    )
                    return DEFAULT_PARTITION
            self._partitions.add(name)
            return name

    async def _exists(self, name: str) -> bool:
        async with self.sessions() as session:
            found = await session.execute(text("SELECT to_regclass(:n)"), {"n": name})
            return found.scalar_one_or_none() is not None

    async def query(
        self,
        tenant_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        action: str | None = None,
        decision: AuditDecision | None = None,
        actor: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AuditPage:
        """Events of ``tenant_id`` newest first, filtered; ``until`` is exclusive."""
        stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        if since is not None:
            stmt = stmt.where(AuditEvent.created_at >= since)
        if until is not None:
            stmt = stmt.where(AuditEvent.created_at < until)
        if action:
            stmt = stmt.where(AuditEvent.action == action)
        if decision:
            stmt = stmt.where(AuditEvent.decision == decision)
        if actor:
            stmt = stmt.where(AuditEvent.actor == actor)
        if cursor:
            when, event_id = decode_cursor(cursor)
            stmt = stmt.where(
                or_(
                    AuditEvent.created_at < when,
                    and_(AuditEvent.created_at == when, AuditEvent.id < event_id),
                )
            )
        stmt = stmt.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit + 1)
        async with self.sessions() as session:
            rows = list((await session.execute(stmt)).scalars())
        events = [_entry(r) for r in rows[:limit]]
        more = len(rows) > limit
        return AuditPage(events, encode_cursor(events[-1]) if more and events else None)

    async def aclose(self) -> None:
        """Close the sinks."""
        for sink in self.sinks:
            await sink.aclose()


_COLUMNS = (
    "id", "created_at", "tenant_id", "actor", "actor_kind", "action", "resource_type",
    "resource_id", "decision", "reason", "request_id", "details",
)  # fmt: skip


def _values(entry: AuditEntry) -> tuple[Any, ...]:
    """The row of ``entry`` in :data:`_COLUMNS` order."""
    return (
        entry.id, entry.created_at, entry.tenant_id, entry.actor, entry.actor_kind,
        entry.action, entry.resource_type, entry.resource_id, entry.decision, entry.reason,
        entry.request_id, jsonb(dict(entry.details)),
    )  # fmt: skip


def _entry(row: AuditEvent) -> AuditEntry:
    decision: AuditDecision = "allow" if row.decision == "allow" else "deny"
    return AuditEntry(
        tenant_id=row.tenant_id,
        actor=row.actor,
        actor_kind=row.actor_kind,
        action=row.action,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        decision=decision,
        reason=row.reason,
        request_id=row.request_id,
        details=row.details or {},
        created_at=row.created_at,
        id=row.id,
    )


def build_audit_log(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], masker: Masker | None
) -> AuditLog:
    """The audit log that ``settings.audit`` asks for (OpenSearch sink when a URL is set)."""
    audit = settings.audit
    sinks: list[AuditSink] = []
    if audit.opensearch_url:
        from llmflow.observability.opensearch import OpenSearchSink

        password = audit.opensearch_password
        sinks.append(
            OpenSearchSink(
                audit.opensearch_url,
                audit.opensearch_index,
                timeout_s=audit.opensearch_timeout_s,
                username=audit.opensearch_username,
                password=password.get_secret_value() if password else None,
                verify=audit.opensearch_verify_tls,
            )
        )
    return AuditLog(sessions, masker=masker, sinks=sinks, fail_closed=audit.fail_closed)
