"""Audit log pieces that need no database: credential scrubbing, monthly partition names and
bounds, cursors, and the OpenSearch ``_bulk`` sink against a local server that replays the
``_bulk`` contract (OpenSearch cannot run here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from opensearch_fake import FakeOpenSearch, serve_opensearch

from llmflow.errors import InvalidRequest
from llmflow.observability.audit import (
    REDACTED,
    AuditEntry,
    decode_cursor,
    encode_cursor,
    month_bounds,
    partition_ddl,
    partition_name,
    scrub_details,
)
from llmflow.observability.opensearch import AuditSinkError, OpenSearchSink, bulk_body


def entry(i: int = 0, **kw: Any) -> AuditEntry:
    base: dict[str, Any] = {
        "tenant_id": "dept-hr",
        "actor": "apikey:k1",
        "actor_kind": "api_key",
        "action": "search",
        "resource_type": "knowledge_base",
        "resource_id": f"kb-{i}",
        "decision": "allow",
        "reason": "role reader grants search",
        "details": {"method": "POST", "route": "/v1/search"},
    }
    base.update(kw)
    return AuditEntry(**base)


# ---------------------------------------------------------------- details


def test_scrub_drops_credentials_and_keeps_the_rest() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    details = {
        "token": "abc",
        "Authorization": "Bearer xyz",
        "api_key": "llmf_1_2",
        "client_secret": "s",
        "password": "p",
        "note": f"called with llmf_3c4f5470_AbC-dEf and {jwt}",
        "nested": {"refresh_token": "r", "count": 3, "items": ["Bearer abc.def", 1, None]},
        "roles": {"reader", "editor"},
        "when": datetime(2026, 11, 1, tzinfo=UTC),
    }
    scrubbed = scrub_details(details)
    assert set(scrubbed) == {"note", "nested", "roles", "when"}
    assert scrubbed["note"] == f"called with {REDACTED} and {REDACTED}"
    assert scrubbed["nested"] == {"count": 3, "items": [REDACTED, 1, None]}
    assert scrubbed["roles"] == ["editor", "reader"]
    assert scrubbed["when"] == "2026-11-01 00:00:00+00:00"
    assert "llmf_" not in json.dumps(scrubbed) and "eyJ" not in json.dumps(scrubbed)


# ---------------------------------------------------------------- partitions


@pytest.mark.parametrize(
    ("when", "name", "start", "end"),
    [
        (datetime(2026, 11, 22, 13, 0, tzinfo=UTC), "audit_events_2026_11", (2026, 11), (2026, 12)),
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "audit_events_2026_12", (2026, 12), (2027, 1)),
        (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), "audit_events_2027_01", (2027, 1), (2027, 2)),
        # 08:30 on 1 December in Seoul is still 30 November in UTC: partitions follow UTC
        (
            datetime(2026, 12, 1, 8, 30, tzinfo=timezone(timedelta(hours=9))),
            "audit_events_2026_11",
            (2026, 11),
            (2026, 12),
        ),
    ],
)
def test_monthly_partitions_follow_utc(
    when: datetime, name: str, start: tuple[int, int], end: tuple[int, int]
) -> None:
    assert partition_name(when) == name
    lo, hi = month_bounds(when)
    assert (lo.year, lo.month, lo.day, lo.tzinfo) == (*start, 1, UTC)
    assert (hi.year, hi.month, hi.day) == (*end, 1)
    assert lo <= when < hi
    ddl = partition_ddl(when)
    assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF audit_events ")
    assert f"FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')" in ddl


# ---------------------------------------------------------------- cursors


def test_cursor_round_trip_and_garbage() -> None:
    e = entry(created_at=datetime(2026, 11, 22, 1, 2, 3, 456789, tzinfo=UTC))
    assert decode_cursor(encode_cursor(e)) == (e.created_at, e.id)
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor(e)[:-3], "WyIyMDI2LTExLTIyIiwgMV0"):
        with pytest.raises(InvalidRequest):
            decode_cursor(bad)


# ---------------------------------------------------------------- OpenSearch _bulk


@pytest.fixture
def opensearch() -> Iterator[FakeOpenSearch]:
    yield from serve_opensearch()


def test_bulk_body_is_ndjson_with_one_action_per_event() -> None:
    body = bulk_body("llmflow-audit", [entry(0), entry(1, details={"note": "연차"})])
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 4
    lines = [json.loads(x) for x in text.splitlines()]
    assert lines[0] == {"create": {"_index": "llmflow-audit", "_id": lines[1]["id"]}}
    assert lines[1]["@timestamp"] == lines[1]["created_at"]
    assert lines[3]["details"] == {"note": "연차"}


async def test_sink_indexes_events(opensearch: FakeOpenSearch) -> None:
    sink = OpenSearchSink(opensearch.url, "audit-x", timeout_s=2)
    try:
        events = [entry(i) for i in range(3)]
        await sink.send(events)
        assert set(opensearch.docs) == {e.id for e in events}
        assert opensearch.docs[events[0].id]["_index"] == "audit-x"
        assert opensearch.docs[events[0].id]["decision"] == "allow"
        assert opensearch.requests[0]["content_type"] == "application/x-ndjson"
        # a retried batch: the events are already there (409 per item), which is success
        await sink.send(events)
        assert len(opensearch.docs) == 3
    finally:
        await sink.aclose()


async def test_sink_reports_item_errors_and_server_errors(opensearch: FakeOpenSearch) -> None:
    sink = OpenSearchSink(opensearch.url, timeout_s=2)
    try:
        with pytest.raises(AuditSinkError, match=r"refused 1 of 2 .*400 mapper_parsing_exception"):
            await sink.send([entry(0), entry(1, details={"reject": True})])
        opensearch.status = 503
        with pytest.raises(AuditSinkError, match="answered 503"):
            await sink.send([entry(2)])
    finally:
        await sink.aclose()


async def test_sink_reports_an_unreachable_server() -> None:
    server = FakeOpenSearch()
    url = server.url
    server.server_close()  # nothing listens there any more
    sink = OpenSearchSink(url, timeout_s=1)
    try:
        with pytest.raises(AuditSinkError, match="unreachable"):
            await sink.send([entry(0)])
    finally:
        await sink.aclose()


async def test_ids_in_details_are_not_sent_to_the_masker() -> None:
    """A run id is hex from our code; the PII engine masked digit runs inside ~2% of them
    (``d5c0041e2c99495b*********e4179ea``), and the audit trail lost the id it points to."""
    from llmflow.observability.audit import AuditEntry, AuditLog

    seen: list[dict[str, object]] = []

    async def digits_are_pii(details: dict[str, object], tenant: str) -> dict[str, object]:
        seen.append(dict(details))
        return {k: "*" * 9 if isinstance(v, str) else v for k, v in details.items()}

    log = AuditLog(None, masker=digits_are_pii)  # type: ignore[arg-type]
    entry = AuditEntry(
        tenant_id="t", actor="erp", actor_kind="service", action="app.run.finished",
        resource_type="app", resource_id="po-summary", decision="allow", reason="",
        request_id=None, created_at=datetime.now(UTC),
        details={"run_id": "d5c0041e2c99495bab4555530e4179ea", "response_mode": "blocking",
                 "note": "김도현 010-4582-7104"},
    )  # fmt: skip
    prepared = await log._prepare(entry)
    assert prepared.details["run_id"] == "d5c0041e2c99495bab4555530e4179ea"
    assert prepared.details["response_mode"] == "blocking"
    assert prepared.details["note"] == "*********"  # free text is still masked
    assert seen == [{"note": "김도현 010-4582-7104"}]
