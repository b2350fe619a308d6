"""The audit log in the real embedded PostgreSQL: monthly partitions created on demand, the
default partition as safety net, filters and pagination, PII masked and credentials dropped
from details, and fail-closed authorization when the log cannot be written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from llmflow.api.authz import authorize, authorize_kb
from llmflow.auth.principal import Principal
from llmflow.errors import Forbidden, NotFound
from llmflow.observability.audit import (
    DEFAULT_PARTITION,
    AuditEntry,
    AuditLog,
    AuditUnavailable,
)
from llmflow.storage.database import session_factory

pytestmark = pytest.mark.integration


def event(tenant: str, when: datetime, **kw: Any) -> AuditEntry:
    base: dict[str, Any] = {
        "tenant_id": tenant,
        "actor": "u-1",
        "actor_kind": "user",
        "action": "kb.read",
        "resource_type": "knowledge_base",
        "resource_id": "handbook",
        "decision": "allow",
        "reason": "role viewer grants kb.read",
        "created_at": when,
    }
    base.update(kw)
    return AuditEntry(**base)


async def partition_of(runtime: Any, event_id: str) -> str:
    async with runtime.sessions() as session:
        found = await session.execute(
            text("SELECT tableoid::regclass::text FROM audit_events WHERE id = :i"), {"i": event_id}
        )
        return str(found.scalar_one())


async def partitions(runtime: Any) -> set[str]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'audit_events'::regclass"
            )
        )
        return {r[0] for r in rows}


async def test_table_is_partitioned_by_month_with_a_default(runtime: Any) -> None:
    async with runtime.sessions() as session:
        strategy = await session.execute(
            text(
                "SELECT partstrat, pg_get_partkeydef('audit_events'::regclass) "
                "FROM pg_partitioned_table WHERE partrelid = 'audit_events'::regclass"
            )
        )
        assert strategy.one() == ("r", "RANGE (created_at)")
    assert DEFAULT_PARTITION in await partitions(runtime)


async def test_partitions_are_created_on_demand(runtime: Any) -> None:
    audit: AuditLog = await runtime.audit()
    march = datetime(2031, 3, 31, 23, 59, 59, tzinfo=UTC)
    april = datetime(2031, 4, 1, 0, 0, 0, tzinfo=UTC)
    assert "audit_events_2031_03" not in await partitions(runtime)
    written = await audit.record_all([event("t-part", march), event("t-part", april)])
    assert {"audit_events_2031_03", "audit_events_2031_04"} <= await partitions(runtime)
    assert await partition_of(runtime, written[0].id) == "audit_events_2031_03"
    assert await partition_of(runtime, written[1].id) == "audit_events_2031_04"
    # another process (a fresh log) finds the partition there and writes into it
    again = await AuditLog(runtime.sessions).record(event("t-part", march - timedelta(days=3)))
    assert await partition_of(runtime, again.id) == "audit_events_2031_03"


async def test_default_partition_takes_a_month_it_cannot_partition(runtime: Any) -> None:
    """Rows of May 2032 already sit in the default partition (written before any partition
    existed): PostgreSQL refuses the new partition, and the log still writes."""
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO audit_events_default (id, created_at, tenant_id, actor, actor_kind,"
                " action, resource_type, decision) VALUES ('legacy-1', '2032-05-10T00:00:00Z',"
                " 't-default', 'u', 'user', 'kb.read', 'knowledge_base', 'allow')"
            )
        )
    audit = AuditLog(runtime.sessions)
    written = await audit.record(event("t-default", datetime(2032, 5, 11, tzinfo=UTC)))
    assert "audit_events_2032_05" not in await partitions(runtime)
    assert await partition_of(runtime, written.id) == DEFAULT_PARTITION
    page = await audit.query("t-default")
    assert [e.id for e in page.events] == [written.id, "legacy-1"]


async def test_query_filters_and_pages_within_one_tenant(runtime: Any) -> None:
    audit: AuditLog = await runtime.audit()
    t0 = datetime(2031, 6, 1, tzinfo=UTC)
    events = [
        event(
            "t-query",
            t0 + timedelta(minutes=i),
            decision="deny" if i % 3 == 0 else "allow",
            actor=f"u-{i % 2}",
        )
        for i in range(12)
    ]
    await audit.record_all(events)
    await audit.record(event("t-other", t0 + timedelta(minutes=5)))

    seen: list[str] = []
    cursor = None
    while True:
        page = await audit.query("t-query", limit=5, cursor=cursor)
        seen += [e.id for e in page.events]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [e.id for e in reversed(events)]  # newest first, nothing twice or lost

    denies = await audit.query("t-query", decision="deny")
    assert {e.id for e in denies.events} == {e.id for e in events if e.decision == "deny"}
    window = await audit.query(
        "t-query", since=t0 + timedelta(minutes=2), until=t0 + timedelta(minutes=5), actor="u-1"
    )
    assert [e.created_at for e in window.events] == [t0 + timedelta(minutes=3)]
    assert (await audit.query("t-query", action="kb.admin")).events == []


async def test_details_are_masked_and_credentials_never_stored(runtime: Any) -> None:
    audit: AuditLog = await runtime.audit()
    written = await audit.record(
        event(
            "t-mask",
            datetime(2031, 7, 1, tzinfo=UTC),
            action="apikey.create",
            details={
                "name": "강민서 주민등록번호 880101-1234568 연락처 010-2345-6789",
                "token": "llmf_abc_def",
                "roles": ["reader"],
                "route": "/v1/kb",
            },
        )
    )
    (stored,) = (await audit.query("t-mask")).events
    assert stored.details == written.details
    assert "token" not in stored.details and stored.details["roles"] == ["reader"]
    assert stored.details["route"] == "/v1/kb"
    assert "1234568" not in stored.details["name"] and "2345-6789" not in stored.details["name"]


async def _dead_audit() -> AuditLog:
    engine = create_async_engine("postgresql+psycopg://audit@127.0.0.1:1/audit")
    return AuditLog(session_factory(engine))


async def test_unwritable_log_refuses_allows_and_keeps_denies(runtime: Any) -> None:
    dead = await _dead_audit()
    with pytest.raises(AuditUnavailable):
        await dead.record(event("t-dead", datetime.now(UTC)))

    await runtime.knowledge_bases.create("t-dead", "handbook", exist_ok=True)
    viewer = Principal("t-dead", "u-viewer", roles=frozenset({"viewer"}), kind="user")
    nobody = Principal("t-dead", "u-nobody", kind="user")
    live = runtime._cache["audit"]
    runtime._cache["audit"] = dead
    try:
        with pytest.raises(AuditUnavailable):  # allowed, but it could not be recorded
            await authorize_kb(runtime, viewer, "kb.read", "handbook")
        with pytest.raises(Forbidden):  # denied, recorded or not
            await authorize_kb(runtime, nobody, "kb.read", "handbook")
        dead.fail_closed = False  # audit.fail_closed=false: an allow goes on, logged
        assert (await authorize_kb(runtime, viewer, "kb.read", "handbook")).name == "handbook"
    finally:
        runtime._cache["audit"] = live


async def test_authorize_records_every_decision_and_hides_existence(runtime: Any) -> None:
    audit: AuditLog = await runtime.audit()
    await runtime.knowledge_bases.create("t-authz", "payroll", classification="secret")
    await runtime.knowledge_bases.create("t-authz", "handbook", exist_ok=True)
    reader = Principal(
        "t-authz", "apikey:r1", knowledge_bases=frozenset({"handbook"}), roles=frozenset({"reader"})
    )
    developer = Principal("t-authz", "u-dev", roles=frozenset({"developer"}), kind="user")
    since = datetime.now(UTC) - timedelta(seconds=1)

    assert (await authorize_kb(runtime, reader, "search", "handbook")).name == "handbook"
    # outside the key's grant: 403 whether the knowledge base exists or not
    for name in ("payroll", "no-such-kb"):
        with pytest.raises(Forbidden, match="outside the subject's knowledge-base grant"):
            await authorize_kb(runtime, reader, "search", name)
    # allowed to search, unknown name: 404
    with pytest.raises(NotFound):
        await authorize_kb(runtime, developer, "search", "no-such-kb")
    # secret is above the default ceiling (confidential) of an undeclared tenant
    with pytest.raises(Forbidden, match=r"classification secret is above the ceiling"):
        await authorize_kb(runtime, developer, "kb.read", "payroll")
    with pytest.raises(Forbidden, match=r"no role of the subject grants kb\.write"):
        await authorize(
            runtime,
            reader,
            "kb.write",
            {"type": "knowledge_base", "tenant": "t-authz", "id": "handbook"},
        )

    events = (await audit.query("t-authz", since=since)).events
    got = sorted((e.actor, e.action, e.resource_id, e.decision) for e in events)
    assert got == sorted(
        [
            ("apikey:r1", "search", "handbook", "allow"),
            ("apikey:r1", "search", "payroll", "deny"),
            ("apikey:r1", "search", "no-such-kb", "deny"),
            ("u-dev", "search", "no-such-kb", "allow"),
            ("u-dev", "kb.read", "payroll", "deny"),
            ("apikey:r1", "kb.write", "handbook", "deny"),
        ]
    )
    secret = next(e for e in events if e.resource_id == "payroll" and e.actor == "u-dev")
    assert secret.details["classification"] == "secret" and "ceiling" in secret.reason


async def test_opensearch_sink_gets_a_copy_and_never_fails_the_write(runtime: Any) -> None:
    from opensearch_fake import serve_opensearch

    from llmflow.observability.opensearch import OpenSearchSink

    fakes = serve_opensearch()
    fake = next(fakes)
    sink = OpenSearchSink(fake.url, "llmflow-audit", timeout_s=2)
    audit = AuditLog(runtime.sessions, sinks=[sink])
    try:
        written = await audit.record(
            event("t-sink", datetime(2031, 8, 1, tzinfo=UTC), details={"token": "llmf_a_b"})
        )
        doc = fake.docs[written.id]
        assert doc["_index"] == "llmflow-audit" and doc["tenant_id"] == "t-sink"
        assert doc["details"] == {}  # the credential never leaves either
        fake.status = 503  # OpenSearch down: PostgreSQL still has the event
        again = await audit.record(event("t-sink", datetime(2031, 8, 2, tzinfo=UTC)))
        assert again.id not in fake.docs
        assert [e.id for e in (await audit.query("t-sink")).events] == [again.id, written.id]
    finally:
        await audit.aclose()
        next(fakes, None)


def test_settings_turn_the_sink_on(tmp_path: Any) -> None:
    from llmflow.observability.audit import build_audit_log
    from llmflow.observability.opensearch import OpenSearchSink
    from llmflow.settings import AuditSettings, Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        audit=AuditSettings(opensearch_url="http://127.0.0.1:9", fail_closed=False),
    )
    engine = create_async_engine("postgresql+psycopg://audit@127.0.0.1:1/audit")
    log = build_audit_log(settings, session_factory(engine), None)
    assert [type(s) for s in log.sinks] == [OpenSearchSink] and not log.fail_closed
    assert build_audit_log(Settings(_env_file=None), session_factory(engine), None).sinks == []  # type: ignore[call-arg]
