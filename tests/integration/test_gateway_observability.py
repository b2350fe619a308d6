"""The gateway's observability against real local servers: Langfuse traces (the SDK's OTLP
exports received and decoded by a replay of Langfuse's ingestion endpoint), per-call audit
events in PostgreSQL, and active health checks of scripted upstreams that stop and start.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from clock import same_minute_ahead
from langfuse_otlp_fake import Blackhole, ExportedSpan, LangfuseOtlpFake
from prometheus_client import REGISTRY

from llmflow.gateway import metrics
from llmflow.gateway.audit import CallAuditWriter
from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.inprocess import InProcessCall
from llmflow.gateway.scripted import ScriptedUpstream, free_port, serve
from llmflow.gateway.tracing import LangfuseTracer
from llmflow.settings import LangfuseSettings

pytestmark = pytest.mark.integration

NAME, PHONE, RRN = "김도현", "010-4582-7104", "880101-1234568"
PROMPT = f"{NAME} 과장({PHONE}, 주민번호 {RRN})에게 회신해 줘"
SECRETS = (NAME, "-4582-", "1234568")  # "-4582-": a bare 4582 can be part of a port


class RestartableUpstream:
    """A scripted upstream on a fixed port that can be stopped and started again."""

    def __init__(self, upstream: ScriptedUpstream) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(self.upstream.app(), host="127.0.0.1", port=self.port,
                                log_level="error", lifespan="off")  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "upstream did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Any]]:
    restartable = RestartableUpstream(ScriptedUpstream("r"))
    restartable.start()
    with serve(ScriptedUpstream("a")) as a, serve(ScriptedUpstream("b")) as b:
        yield {"a": a, "b": b, "r": restartable}
    restartable.stop()


@pytest.fixture(scope="module")
def langfuse() -> Iterator[LangfuseOtlpFake]:
    fake = LangfuseOtlpFake(f"pk-lf-{uuid.uuid4().hex[:8]}", "sk-lf-gateway-test")
    fake.start()
    yield fake
    fake.stop()


def _langfuse_settings(host: str, public_key: str, secret_key: str) -> LangfuseSettings:
    return LangfuseSettings(enabled=True, host=host, public_key=public_key,
                            secret_key=secret_key, flush_interval_s=0.2, timeout_s=3)  # fmt: skip


async def _rebuild(runtime: Any) -> None:
    gateway = runtime._cache.pop("gateway", None)
    if gateway is not None:
        await gateway.close()


@pytest.fixture(scope="module")
async def api(
    runtime: Any, upstreams: dict[str, Any], langfuse: LangfuseOtlpFake
) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    a, b, r = (upstreams[k].url for k in "abr")
    saved = runtime.settings.gateway, runtime.settings.observability.langfuse
    runtime.settings.gateway = GatewaySettings.model_validate(
        {
            "models": [
                {"name": "obs-chat", "backends": [{"url": a}]},
                {"name": "obs-complete", "kind": "completion", "backends": [{"url": a}]},
                {"name": "obs-embed", "kind": "embedding", "backends": [{"url": a}]},
                {"name": "obs-rerank", "kind": "rerank", "backends": [{"url": a}]},
                {"name": "ha-chat", "backends": [{"url": r, "weight": 1000}, {"url": b}]},
                {"name": "ext-chat", "provider": "external", "backends": [{"url": b}]},
                {"name": "obs-agent", "provider": "agent", "handler": "obs-echo"},
            ],
            "quotas": {"obs-quota": {"requests_per_minute": 1, "tokens_per_day": 100000}},
            "breaker_failures": 2,
            "breaker_reset_s": 60,
            "health_interval_s": 0.2,
            "health_timeout_s": 0.5,
        }
    )  # fmt: skip
    runtime.settings.observability.langfuse = _langfuse_settings(
        langfuse.url, langfuse.public_key, langfuse.secret_key
    )
    await _rebuild(runtime)
    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
        yield client
    await _rebuild(runtime)
    runtime.settings.gateway, runtime.settings.observability.langfuse = saved


async def _key(runtime: Any, tenant: str) -> dict[str, str]:
    issued = await runtime.api_keys.create(tenant, roles=["model", "reader"], name="obs")
    return {"Authorization": f"Bearer {issued.key}"}


def chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _observer(gateway: Any, kind: type) -> Any:
    (found,) = [o for o in gateway.observers if isinstance(o, kind)]
    return found


async def _flush_traces(runtime: Any) -> None:
    tracer = _observer(await runtime.gateway(), LangfuseTracer)
    await asyncio.to_thread(tracer.flush)


def _spans_of(fake: LangfuseOtlpFake, tenant: str) -> list[ExportedSpan]:
    return [
        s for s in fake.spans if f"tenant:{tenant}" in s.attributes.get("langfuse.trace.tags", [])
    ]


# ---------------------------------------------------------------- traces


async def test_every_call_is_traced_with_pii_masked(
    api: httpx.AsyncClient, runtime: Any, langfuse: LangfuseOtlpFake
) -> None:
    h = await _key(runtime, "obs-trace")
    r = await api.post("/v1/chat/completions", json=chat("obs-chat", PROMPT, temperature=0.3),
                       headers=h)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == f"echo: {PROMPT}"  # the caller's
    body = chat("obs-chat", PROMPT, stream=True)
    async with api.stream("POST", "/v1/chat/completions", json=body, headers=h) as resp:
        assert resp.status_code == 200
        await resp.aread()
    r = await api.post("/v1/completions", json={"model": "obs-complete", "prompt": PROMPT},
                       headers=h)  # fmt: skip
    assert r.status_code == 200, r.text
    r = await api.post("/v1/embeddings", json={"model": "obs-embed", "input": [PROMPT]}, headers=h)
    assert r.status_code == 200, r.text
    rerank = {"model": "obs-rerank", "query": PROMPT, "documents": [PROMPT, "x"]}
    r = await api.post("/v1/rerank", json=rerank, headers=h)
    assert r.status_code == 200, r.text
    await _flush_traces(runtime)

    spans = _spans_of(langfuse, "obs-trace")
    assert sorted(s.name for s in spans) == [
        "chat obs-chat", "chat obs-chat", "completion obs-complete",
        "embedding obs-embed", "rerank obs-rerank",
    ]  # fmt: skip
    assert set(langfuse.authorizations) == {langfuse.expected}  # Basic public:secret
    assert all(c == "application/x-protobuf" for c in langfuse.content_types)
    for span in spans:  # no exported attribute holds the name, the phone or the RRN
        dumped = json.dumps(span.attributes, ensure_ascii=False)
        assert not [s for s in SECRETS if s in dumped], dumped
        a = span.attributes
        assert span.scope == "langfuse-sdk"
        assert a["langfuse.observation.type"] == "generation"
        assert a["langfuse.trace.metadata.tenant"] == "obs-trace"
        assert a["langfuse.observation.metadata.tenant"] == "obs-trace"
        assert a["langfuse.observation.metadata.backend"] == runtime.settings.gateway.models[
            0
        ].backends[0].url.rstrip("/")
        assert a["langfuse.observation.metadata.status"] == 200
        assert a["user.id"]  # the API key's subject
        assert span.end_ns > span.start_ns
    chats = [s.attributes for s in spans if s.name == "chat obs-chat"]
    for a in chats:
        assert a["langfuse.observation.model.name"] == "obs-chat"
        usage = json.loads(a["langfuse.observation.usage_details"])
        assert usage["input"] > 0 and usage["output"] > 0
        assert usage["total"] == usage["input"] + usage["output"]
        messages = json.loads(a["langfuse.observation.input"])
        assert messages[0]["role"] == "user" and "과장" in messages[0]["content"]  # masked text
        assert "회신해 줘" in a["langfuse.observation.output"]
    streamed = [a for a in chats if a["langfuse.observation.metadata.stream"] is True]
    assert len(streamed) == 1 and "langfuse.observation.completion_start_time" in streamed[0]
    (plain,) = [a for a in chats if a["langfuse.observation.metadata.stream"] is False]
    assert json.loads(plain["langfuse.observation.model.parameters"]) == {"temperature": 0.3}


async def test_a_refused_call_is_traced_as_a_warning(
    api: httpx.AsyncClient, runtime: Any, langfuse: LangfuseOtlpFake
) -> None:
    h = await _key(runtime, "project-ai")  # its policy blocks RRNs in prompts
    r = await api.post("/v1/chat/completions", json=chat("obs-chat", PROMPT), headers=h)
    assert r.status_code == 422
    await _flush_traces(runtime)
    (span,) = _spans_of(langfuse, "project-ai")
    a = span.attributes
    assert a["langfuse.observation.level"] == "WARNING"
    assert a["langfuse.observation.status_message"] == "pii_blocked (HTTP 422)"
    assert not [s for s in SECRETS if s in json.dumps(a, ensure_ascii=False)]


async def test_a_dead_langfuse_neither_fails_nor_holds_up_calls(
    runtime: Any, upstreams: dict[str, Any]
) -> None:
    from llmflow.api.app import create_app

    saved = runtime.settings.observability.langfuse
    hung, refused = Blackhole(), f"http://127.0.0.1:{free_port()}"
    try:
        for host in (hung.url, refused):
            runtime.settings.observability.langfuse = _langfuse_settings(
                host, f"pk-lf-{uuid.uuid4().hex[:8]}", "sk-lf-dead"
            )
            await _rebuild(runtime)
            app = create_app(runtime.settings, runtime=runtime)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
                h = await _key(runtime, "obs-dead")
                await runtime.gateway()  # built (Langfuse client included) before timing
                slowest = 0.0
                for i in range(30):
                    stream = i % 2 == 1
                    started = time.perf_counter()
                    body = chat("obs-chat", PROMPT, stream=stream)
                    r = await api.post("/v1/chat/completions", json=body, headers=h)
                    slowest = max(slowest, time.perf_counter() - started)
                    assert r.status_code == 200, r.text
                    await asyncio.sleep(0.05)  # let the exporter try (and hang) meanwhile
            # An export to this host blocks for up to timeout_s (3 s) per attempt: a call
            # that waited on it would take that long.
            assert slowest < 1.0, f"a call took {slowest:.2f}s with Langfuse at {host}"
            started = time.perf_counter()
            await _rebuild(runtime)  # shutdown is bounded too
            assert time.perf_counter() - started < 3 + 2
    finally:
        hung.close()
        runtime.settings.observability.langfuse = saved


class EchoAgent:
    """An in-process model: answers with what it was asked (pseudonyms, restored by the
    gateway on the way out)."""

    async def complete(self, call: InProcessCall, body: dict[str, Any]) -> dict[str, Any]:
        text = body["messages"][-1]["content"]
        return {
            "id": "agent-1", "object": "chat.completion", "created": 0, "model": call.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"검토함: {text}"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        }  # fmt: skip

    async def stream(self, call: InProcessCall, body: dict[str, Any]) -> Any:
        raise AssertionError("not streamed in this test")


async def test_in_process_models_are_traced_and_audited_too(
    api: httpx.AsyncClient, runtime: Any, langfuse: LangfuseOtlpFake
) -> None:
    gateway = await runtime.gateway()

    async def echo() -> EchoAgent:
        return EchoAgent()

    gateway.inprocess.provide("obs-echo", echo)
    h = await _key(runtime, "obs-agent")
    r = await api.post("/v1/chat/completions", json=chat("obs-agent", PROMPT), headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == f"검토함: {PROMPT}"
    await _flush_traces(runtime)
    (span,) = _spans_of(langfuse, "obs-agent")
    a = span.attributes
    assert a["langfuse.observation.metadata.backend"] == "inprocess:obs-echo"
    assert json.loads(a["langfuse.observation.usage_details"])["total"] == 13
    assert "검토함" in a["langfuse.observation.output"]
    assert not [s for s in SECRETS if s in json.dumps(a, ensure_ascii=False)]
    (event,) = await _call_events(runtime, "obs-agent")
    assert event.decision == "allow" and event.resource_id == "obs-agent"
    assert event.reason == "backend inprocess:obs-echo: HTTP 200"
    assert event.request_id == span.trace_id  # the audit event names the trace


# ---------------------------------------------------------------- audit


async def _call_events(runtime: Any, tenant: str) -> list[Any]:
    await _observer(await runtime.gateway(), CallAuditWriter).flush()
    audit = await runtime.audit()
    page = await audit.query(tenant, action="model.use", limit=500)
    return [e for e in page.events if e.details.get("route")]  # per call, not per decision


async def test_every_call_writes_an_audit_event(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "obs-audit")
    n = 5
    for i in range(n):
        body = chat("obs-chat", PROMPT, stream=i % 2 == 1)
        r = await api.post("/v1/chat/completions", json=body, headers=h)
        assert r.status_code == 200, r.text
    r = await api.post("/v1/embeddings", json={"model": "obs-embed", "input": ["가"]}, headers=h)
    assert r.status_code == 200
    events = await _call_events(runtime, "obs-audit")
    assert len(events) == n + 1
    chats = [e for e in events if e.resource_id == "obs-chat"]
    assert len(chats) == n
    for e in chats:
        assert e.decision == "allow" and e.action == "model.use"
        assert e.resource_type == "model" and e.actor_kind == "api_key" and e.actor
        assert e.details["route"] == "/v1/chat/completions" and e.details["status"] == 200
        assert e.details["outcome"] == "ok" and e.details["classification"] == "internal"
        assert e.details["usage"]["prompt"] > 0 and e.details["usage"]["completion"] > 0
        assert e.details["pii"].get("PERSON") == 1 and e.details["pii"].get("KR_RRN") == 1
        assert e.reason.startswith("backend http://127.0.0.1:") and e.reason.endswith("HTTP 200")
        assert len(e.request_id) == 32
        assert not [s for s in SECRETS if s in json.dumps(e.to_dict(), ensure_ascii=False)]
    assert sorted(e.details["stream"] for e in chats) == [False, False, False, True, True]
    (embed,) = [e for e in events if e.resource_id == "obs-embed"]
    assert embed.details["route"] == "/v1/embeddings" and embed.details["pii"] == {}


async def test_refused_calls_are_audited_as_denied(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "project-ai")  # its policy blocks RRNs in prompts
    before = {e.id for e in await _call_events(runtime, "project-ai")}
    r = await api.post("/v1/chat/completions", json=chat("obs-chat", PROMPT), headers=h)
    assert r.status_code == 422
    (blocked,) = [e for e in await _call_events(runtime, "project-ai") if e.id not in before]
    assert blocked.details["status"] == 422
    assert blocked.decision == "deny" and blocked.details["outcome"] == "pii_blocked"
    assert blocked.details["pii"]["KR_RRN"] == 1 and blocked.details["pii"]["PERSON"] == 1
    assert "KR_RRN" in blocked.reason
    assert not [s for s in SECRETS if s in json.dumps(blocked.to_dict(), ensure_ascii=False)]

    h = await _key(runtime, "obs-quota")
    await same_minute_ahead()
    codes = []
    for _ in range(2):
        r = await api.post("/v1/chat/completions", json=chat("obs-chat", "x"), headers=h)
        codes.append(r.status_code)
    assert codes == [200, 429]
    events = await _call_events(runtime, "obs-quota")
    assert sorted((e.decision, e.details["outcome"]) for e in events) == [
        ("allow", "ok"), ("deny", "quota_exceeded"),
    ]  # fmt: skip


# ---------------------------------------------------------------- health checks


def _up(backend: str) -> float | None:
    return REGISTRY.get_sample_value("llmflow_gateway_backend_up", {"backend": backend})


def _attempt_errors(backend: str) -> float:
    return sum(
        s.value
        for m in metrics.ERRORS.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("backend") == backend
    )


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the health checks did not notice in time"
        await asyncio.sleep(0.05)


async def test_health_checks_take_a_stopped_replica_out_and_back(
    api: httpx.AsyncClient, runtime: Any, upstreams: dict[str, Any]
) -> None:
    h = await _key(runtime, "obs-health")
    restartable, other = upstreams["r"], upstreams["b"]
    r = await api.post("/v1/chat/completions", json=chat("ha-chat", "x"), headers=h)
    assert r.status_code == 200
    gateway = await runtime.gateway()
    assert gateway.health is not None
    probed = gateway.health.snapshot()
    assert set(probed) == {upstreams[k].url for k in "abr"}  # external providers: skipped
    breaker = next(b for b in gateway.pool.backends("ha-chat") if b.url == restartable.url).breaker
    await _until(lambda: _up(restartable.url) == 1)

    restartable.stop()
    try:
        await _until(lambda: breaker.state == "open" and _up(restartable.url) == 0)
        errors_before = _attempt_errors(restartable.url)
        served_before = len(other.requests)
        for _ in range(10):  # no request tries the stopped replica, none fails
            r = await api.post("/v1/chat/completions", json=chat("ha-chat", "x"), headers=h)
            assert r.status_code == 200, r.text
        assert _attempt_errors(restartable.url) == errors_before
        assert len(other.requests) == served_before + 10
        assert gateway.health.snapshot()[restartable.url]["up"] is False
    finally:
        restartable.start()
    await _until(lambda: breaker.state == "closed" and _up(restartable.url) == 1)
    served_before = len(restartable.upstream.requests)
    for _ in range(5):  # weight 1000: traffic is back on the restarted replica
        r = await api.post("/v1/chat/completions", json=chat("ha-chat", "x"), headers=h)
        assert r.status_code == 200, r.text
    assert len(restartable.upstream.requests) > served_before
