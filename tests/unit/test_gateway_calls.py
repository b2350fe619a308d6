"""The gateway's per-call audit events, trace shaping and health-check bookkeeping, without
engines (end to end: tests/integration/test_gateway_observability.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from llmflow.gateway.audit import CallAuditWriter, call_entry
from llmflow.gateway.calls import CallEvent
from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.health import probe_targets
from llmflow.gateway.tracing import _mask, _masking, model_parameters, trace_input
from llmflow.gateway.upstream import BackendPool, CircuitBreaker
from llmflow.observability.audit import STRUCTURAL_KEYS, AuditEntry, AuditUnavailable
from llmflow.settings import LangfuseSettings


def event(**overrides: Any) -> CallEvent:
    fields: dict[str, Any] = {
        "call_id": "ab" * 16, "tenant": "dept-hr", "subject": "key-1",
        "subject_kind": "api_key", "model": "exaone", "kind": "chat", "provider": "internal",
        "backend": "http://vllm-0:8000", "classification": "internal", "decision": "allow",
        "status": 200, "error_code": None, "reason": "", "stream": False,
        "prompt_tokens": 12, "completion_tokens": 30, "started_at": time.time(),
        "latency_s": 0.25, "ttft_s": None,
        "request": {"messages": [{"role": "user", "content": "김도현 010-4582-7104"}]},
        "answer": "김도현님께 전달했습니다", "pii": {"PHONE_NUMBER": 1, "PERSON": 1},
    }  # fmt: skip
    fields.update(overrides)
    return CallEvent(**fields)


def test_a_call_entry_names_who_what_and_the_outcome_without_free_text() -> None:
    entry = call_entry(event())
    assert (entry.action, entry.resource_type, entry.resource_id) == (
        "model.use",
        "model",
        "exaone",
    )
    assert (entry.tenant_id, entry.actor, entry.actor_kind) == ("dept-hr", "key-1", "api_key")
    assert entry.decision == "allow" and entry.request_id == "ab" * 16
    assert entry.reason == "backend http://vllm-0:8000: HTTP 200"
    d = entry.details
    assert d["route"] == "/v1/chat/completions" and d["outcome"] == "ok"
    assert d["usage"] == {"prompt": 12, "completion": 30}
    assert d["pii"] == {"PERSON": 1, "PHONE_NUMBER": 1}
    # every string sits under a structural key: the audit log never needs the PII masker
    assert {k for k, v in d.items() if isinstance(v, str)} <= STRUCTURAL_KEYS
    assert "김도현" not in str(entry.to_dict()) and "4582" not in str(entry.to_dict())


def test_call_entry_outcomes_and_backend_credentials() -> None:
    reason = "the PII policy for prompt (internal) blocks KR_RRN"
    denied = call_entry(event(decision="deny", status=422, error_code="pii_blocked", reason=reason))
    assert denied.decision == "deny" and denied.details["outcome"] == "pii_blocked"
    assert denied.reason.endswith("blocks KR_RRN")
    odd = call_entry(event(status=400, error_code="Bad request: 김도현"))
    assert odd.details["outcome"] == "upstream_error"  # an upstream's free text is not kept
    assert call_entry(event(status=502, error_code=None)).details["outcome"] == "http_502"
    secret = call_entry(event(backend="https://user:s3cret@api.example.com:8443"))
    assert secret.reason == "backend https://api.example.com:8443: HTTP 200"


class FlakyAudit:
    """The audit log's write interface; fails the first ``failures`` writes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[AuditEntry] = []

    async def record_all(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
        if self.failures:
            self.failures -= 1
            raise AuditUnavailable("database down")
        self.written.extend(entries)
        return list(entries)


async def test_audit_writer_keeps_a_failed_batch_for_the_next_round() -> None:
    audit = FlakyAudit(failures=1)
    writer = CallAuditWriter(audit, batch_size=2)  # type: ignore[arg-type]
    for i in range(5):
        writer.observe(event(call_id=f"{i:032x}"))
    with pytest.raises(AuditUnavailable):
        await writer.flush()
    assert audit.written == []
    await writer.flush()
    assert [e.request_id for e in audit.written] == [f"{i:032x}" for i in range(5)]
    await writer.aclose()


def test_breaker_trip_and_probe_now() -> None:
    breaker = CircuitBreaker(failures_to_open=3, reset_s=60)
    breaker.trip(100.0)
    assert breaker.state == "open" and not breaker.available(101.0)
    breaker.probe_now(102.0)  # its health check passed: one request may probe at once
    assert breaker.available(102.0) and breaker.state == "half_open"
    assert not breaker.available(102.0)  # exactly one
    breaker.success()
    assert breaker.state == "closed"


def test_probe_targets_one_per_url_external_only_when_asked() -> None:
    routes = {
        "models": [
            {"name": "base",
             "backends": [{"url": "http://vllm-0:8000/"}, {"url": "http://v1:8000"}]},
            {"name": "lora", "lora_base": "base", "backends": [{"url": "http://vllm-0:8000"}]},
            {"name": "emb", "kind": "embedding",
             "backends": [{"url": "http://tei:80", "api": "tei"}]},
            {"name": "gpt", "provider": "external", "backends": [{"url": "https://api.x.com"}]},
        ]
    }  # fmt: skip
    skip = GatewaySettings.model_validate(routes)
    targets = probe_targets(BackendPool(skip), skip)
    assert sorted((t.backend.url, t.path) for t in targets) == [
        ("http://tei:80", "/health"), ("http://v1:8000", "/health"),
        ("http://vllm-0:8000", "/health"),
    ]  # fmt: skip
    models = GatewaySettings.model_validate({**routes, "health_external": "models"})
    paths = {t.backend.url: t.path for t in probe_targets(BackendPool(models), models)}
    assert paths["https://api.x.com"] == "/v1/models"


def test_langfuse_settings_need_host_and_keys_when_enabled() -> None:
    assert not LangfuseSettings().enabled
    with pytest.raises(ValidationError, match="public_key"):
        LangfuseSettings(enabled=True, host="http://langfuse:3000")
    ok = LangfuseSettings(enabled=True, host="http://lf:3000", public_key="pk", secret_key="sk")
    assert ok.secret_key is not None and ok.secret_key.get_secret_value() == "sk"


def test_trace_mask_never_lets_unmasked_data_out() -> None:
    assert _mask(data="김도현") == "<masked: the PII masker failed>"  # no call being exported
    assert _mask(data=None) is None

    def broken(value: Any, tenant: str) -> Any:
        raise RuntimeError("presidio crashed")

    token = _masking.set((broken, "t"))
    try:
        assert _mask(data={"x": "김도현"}) == "<masked: the PII masker failed>"
    finally:
        _masking.reset(token)
    token = _masking.set((lambda value, tenant: f"{tenant}:{value}", "dept-hr"))
    try:
        assert _mask(data="x") == "dept-hr:x"
    finally:
        _masking.reset(token)


def test_trace_input_and_parameters_by_kind() -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert trace_input("chat", {"messages": messages}) == messages
    assert trace_input("completion", {"prompt": "p"}) == "p"
    assert trace_input("embedding", {"input": ["a"]}) == ["a"]
    assert trace_input("rerank", {"query": "q", "documents": ["d"]}) == {
        "query": "q",
        "documents": ["d"],
    }
    assert trace_input("chat", None) is None
    params = {"temperature": 0.2, "max_tokens": 64, "stream": True, "seed": True, "stop": "x"}
    assert model_parameters(params) == {"temperature": 0.2, "max_tokens": 64}
    assert model_parameters({"stream": True}) is None


async def test_audit_writer_writes_in_batches_and_keeps_order_past_a_failed_one() -> None:
    class FailSecond(FlakyAudit):
        def __init__(self) -> None:
            super().__init__(failures=0)
            self.calls = 0
            self.sizes: list[int] = []

        async def record_all(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
            self.calls += 1
            self.sizes.append(len(entries))
            if self.calls == 2:
                writer.observe(event(call_id=f"{99:032x}"))  # arrives during the flush
                raise AuditUnavailable("database down")
            return await super().record_all(entries)

    audit = FailSecond()
    writer = CallAuditWriter(audit, batch_size=2)  # type: ignore[arg-type]
    for i in range(5):
        writer.observe(event(call_id=f"{i:032x}"))
    with pytest.raises(AuditUnavailable):
        await writer.flush()
    assert [e.request_id for e in audit.written] == [f"{i:032x}" for i in range(2)]
    await writer.flush()
    assert [e.request_id for e in audit.written] == [f"{i:032x}" for i in (0, 1, 2, 3, 4, 99)]
    assert max(audit.sizes) == 2
    await writer.aclose()


async def test_backlog_batches_grow_when_the_writer_falls_behind() -> None:
    from llmflow.gateway.backlog import Backlog

    sizes: list[int] = []

    async def write(batch: list[int]) -> None:
        sizes.append(len(batch))

    backlog: Backlog[int] = Backlog("test", batch_size=2, max_batch=10)
    for i in range(6):
        backlog.put(i)
    await backlog.drain(write)
    assert sizes == [2, 2, 2]  # a short queue: small steps on the event loop
    sizes.clear()
    for i in range(100):
        backlog.put(i)
    await backlog.drain(write)
    # a deep one: a quarter of what is left per batch, bounded by max_batch
    assert sizes[:3] == [10, 10, 10] and sum(sizes) == 100 and len(backlog) == 0
    assert sizes[-1] <= 2
