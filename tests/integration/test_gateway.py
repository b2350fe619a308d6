"""The LLM gateway against scripted OpenAI-compatible upstreams on real local ports.

Routing, fallbacks and the circuit breaker, streaming with usage, the PII guard with
restore, quotas, policy, LoRA loading and the error shapes. The real-vLLM contract is in
test_gateway_vllm.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from clock import same_minute_ahead

from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.scripted import ScriptedUpstream, free_port, serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, ScriptedUpstream]]:
    with (
        serve(ScriptedUpstream("a")) as a,
        serve(ScriptedUpstream("b")) as b,
        serve(ScriptedUpstream("c")) as c,
    ):
        yield {"a": a, "b": b, "c": c}


@pytest.fixture(scope="module")
async def api(runtime: Any, upstreams: dict[str, ScriptedUpstream]) -> AsyncIterator[Any]:
    from llmflow.api.app import create_app

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    a, b, c = (upstreams[k].url for k in "abc")
    runtime.settings.gateway = GatewaySettings.model_validate(
        {
            "models": [
                {"name": "tiny-chat", "backends": [{"url": a}], "fallbacks": ["backup-chat"]},
                {"name": "backup-chat", "backends": [{"url": c}]},
                {"name": "flaky-chat", "backends": [{"url": dead, "weight": 1000}, {"url": b}]},
                {"name": "tiny-lora", "lora_base": "tiny-chat", "lora_path": "/adapters/x",
                 "backends": [{"url": a}, {"url": b}]},
                {"name": "tiny-embed", "kind": "embedding", "backends": [{"url": a}]},
                {"name": "tiny-rerank", "kind": "rerank", "backends": [{"url": a}]},
                {"name": "tei-rerank", "kind": "rerank", "backends": [{"url": b, "api": "tei"}]},
                {"name": "tiny-complete", "kind": "completion", "backends": [{"url": b}]},
                {"name": "gpt-external", "provider": "external", "backends": [{"url": c}]},
            ],
            "quotas": {"gw-quota": {"requests_per_minute": 2, "tokens_per_day": 100000}},
            "breaker_failures": 2,
            "breaker_reset_s": 60,
        }
    )  # fmt: skip
    runtime._cache.pop("gateway", None)
    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
        yield client
    gateway = runtime._cache.pop("gateway", None)
    if gateway is not None:
        await gateway.close()


async def _key(runtime: Any, tenant: str) -> dict[str, str]:
    issued = await runtime.api_keys.create(tenant, roles=["model", "reader"], name="gateway")
    return {"Authorization": f"Bearer {issued.key}"}


def chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_chat_usage_and_models(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "gw-basic")
    r = await api.get("/v1/models", headers=h)
    assert {m["id"] for m in r.json()["data"]} >= {"tiny-chat", "tiny-lora", "tiny-embed"}
    r = await api.post("/v1/chat/completions", json=chat("tiny-chat", "안녕 세상"), headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-chat"
    assert body["choices"][0]["message"]["content"] == "echo: 안녕 세상"
    assert body["usage"]["completion_tokens"] == 3
    r = await api.get("/v1/usage", headers=h)
    (row,) = r.json()
    assert row["model"] == "tiny-chat" and row["requests"] == 1
    assert row["completion_tokens"] == 3 and row["tenant"] == "gw-basic"
    csv = await api.get("/v1/usage", params={"format": "csv"}, headers=h)
    assert csv.text.splitlines()[0].startswith("period,tenant,model,requests")


async def _sse(response: httpx.Response) -> list[Any]:
    out: list[Any] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            payload = line[6:]
            out.append(None if payload == "[DONE]" else json.loads(payload))
    return out


async def test_streaming_passes_usage_only_when_asked(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "gw-stream")
    for include in (True, False):
        body = chat("tiny-chat", "하나 둘 셋", stream=True)
        if include:
            body["stream_options"] = {"include_usage": True}
        async with api.stream("POST", "/v1/chat/completions", json=body, headers=h) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = await _sse(r)
        assert events[-1] is None  # [DONE]
        text = "".join(
            c["delta"].get("content", "") for e in events[:-1] if e for c in e["choices"]
        )
        assert text == "echo: 하나 둘 셋"
        usage_events = [e for e in events if e and e.get("usage")]
        assert bool(usage_events) is include
    rows = (await api.get("/v1/usage", headers=h)).json()
    assert rows[0]["requests"] == 2 and rows[0]["completion_tokens"] == 8  # both accounted


async def test_pii_is_pseudonymised_upstream_and_restored(
    api: httpx.AsyncClient, runtime: Any, upstreams: dict[str, ScriptedUpstream]
) -> None:
    h = await _key(runtime, "gw-pii")
    prompt = "김도현 과장(010-4582-7104)에게 회신해 줘"
    r = await api.post("/v1/chat/completions", json=chat("tiny-chat", prompt), headers=h)
    assert r.status_code == 200, r.text
    _, sent = upstreams["a"].requests[-1]
    seen_by_model = sent["messages"][0]["content"]
    assert "김도현" not in seen_by_model and "010-4582-7104" not in seen_by_model
    assert "<PERSON_1>" in seen_by_model and "<PHONE_NUMBER_1>" in seen_by_model
    assert r.json()["choices"][0]["message"]["content"] == f"echo: {prompt}"

    body = chat("tiny-chat", prompt, stream=True)
    async with api.stream("POST", "/v1/chat/completions", json=body, headers=h) as resp:
        events = await _sse(resp)
    text = "".join(c["delta"].get("content", "") for e in events if e for c in e["choices"])
    assert text == f"echo: {prompt}"  # restored across word-sized chunks


async def test_pii_block_is_an_openai_error(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "project-ai")  # its policy blocks RRNs in prompts
    r = await api.post(
        "/v1/chat/completions", json=chat("tiny-chat", "주민번호 880101-1234568 확인"), headers=h
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "pii_blocked" and "KR_RRN" in error["message"]
    assert "880101" not in r.text


async def test_backend_failover_and_model_fallback(
    api: httpx.AsyncClient, runtime: Any, upstreams: dict[str, ScriptedUpstream]
) -> None:
    h = await _key(runtime, "gw-fail")
    for _ in range(4):  # the dead replica is skipped; its circuit opens
        r = await api.post("/v1/chat/completions", json=chat("flaky-chat", "x"), headers=h)
        assert r.status_code == 200, r.text
    gateway = await runtime.gateway()
    states = {b.url: b.breaker.state for b in gateway.pool.backends("flaky-chat")}
    assert sorted(states.values()) == ["closed", "open"]

    upstreams["a"].fail_with = 500
    try:
        r = await api.post("/v1/chat/completions", json=chat("tiny-chat", "폴백"), headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "backup-chat"  # answered by the fallback model
    finally:
        upstreams["a"].fail_with = None
        for b in gateway.pool.backends("tiny-chat"):
            b.breaker.success()


async def test_upstream_client_errors_pass_through_normalised(
    api: httpx.AsyncClient, runtime: Any, upstreams: dict[str, ScriptedUpstream]
) -> None:
    h = await _key(runtime, "gw-errors")
    upstreams["b"].fail_with, upstreams["b"].flat_errors = 400, True
    try:
        r = await api.post(
            "/v1/completions", json={"model": "tiny-complete", "prompt": "x"}, headers=h
        )
    finally:
        upstreams["b"].fail_with, upstreams["b"].flat_errors = None, False
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "b is failing on purpose"  # flat shape → nested
    r = await api.post("/v1/chat/completions", json=chat("no-such-model", "x"), headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = await api.post("/v1/chat/completions", content=b"{not json", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await api.post("/v1/embeddings", json=chat("tiny-chat", "x"), headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_model_kind"


async def test_quota_per_minute(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "gw-quota")
    await same_minute_ahead()  # the quota counts per clock minute
    codes = []
    for _ in range(3):
        r = await api.post("/v1/chat/completions", json=chat("tiny-chat", "x"), headers=h)
        codes.append(r.status_code)
    assert codes == [200, 200, 429]
    assert int(r.headers["Retry-After"]) > 0
    assert r.json()["error"]["type"] == "rate_limit_error"


async def test_confidential_data_never_reaches_an_external_model(
    api: httpx.AsyncClient, runtime: Any
) -> None:
    h = await _key(runtime, "gw-policy")
    headers = {**h, "X-Data-Classification": "confidential"}
    r = await api.post("/v1/chat/completions", json=chat("gpt-external", "x"), headers=headers)
    assert r.status_code == 403
    assert "external" in r.json()["error"]["message"]


async def test_lora_adapter_is_loaded_once_per_replica(
    api: httpx.AsyncClient, runtime: Any, upstreams: dict[str, ScriptedUpstream]
) -> None:
    h = await _key(runtime, "gw-lora")
    for _ in range(4):
        r = await api.post("/v1/chat/completions", json=chat("tiny-lora", "어댑터"), headers=h)
        assert r.status_code == 200, r.text
    served = []
    for name in ("a", "b"):  # loaded on every replica, once, before the first use
        loads = [b for p, b in upstreams[name].requests if p == "/v1/load_lora_adapter"]
        assert loads == [{"lora_name": "tiny-lora", "lora_path": "/adapters/x"}]
        served += [b["model"] for p, b in upstreams[name].requests if p == "/v1/chat/completions"]
    assert served.count("tiny-lora") == 4  # the adapter is asked for by its own name


async def test_tokenize_fallback_when_upstream_reports_no_usage(
    api: httpx.AsyncClient, runtime: Any, upstreams: dict[str, ScriptedUpstream]
) -> None:
    h = await _key(runtime, "gw-tokenize")
    upstreams["b"].report_usage = False
    try:
        r = await api.post(
            "/v1/completions", json={"model": "tiny-complete", "prompt": "one two"}, headers=h
        )
    finally:
        upstreams["b"].report_usage = True
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 3  # "echo: one two" by /tokenize
    assert any(p == "/tokenize" for p, _ in upstreams["b"].requests)


async def test_embeddings_and_rerank_pass_through(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "gw-embed")
    r = await api.post("/v1/embeddings", json={"model": "tiny-embed", "input": ["가", "나다"]},
                       headers=h)  # fmt: skip
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    r = await api.post(
        "/v1/rerank",
        json={
            "model": "tiny-rerank",
            "query": "연차 휴가",
            "documents": ["연차 휴가 규정", "출장"],
        },
        headers=h,
    )
    assert r.status_code == 200 and r.json()["results"][0]["index"] == 0


async def test_tei_native_rerank_is_translated(
    api: httpx.AsyncClient, runtime: Any, upstreams: dict[str, ScriptedUpstream]
) -> None:
    h = await _key(runtime, "gw-tei")
    body = {"model": "tei-rerank", "query": "연차 휴가", "top_n": 2,
            "documents": ["출장 규정", "연차 휴가 일수", "휴가 신청"]}  # fmt: skip
    r = await api.post("/v1/rerank", json=body, headers=h)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [1, 2] and results[0]["relevance_score"] == 1.0
    path, sent = upstreams["b"].requests[-1]
    assert path == "/rerank" and sent["texts"] == body["documents"]  # TEI's own shape


async def test_replicas_share_the_minute_quota(runtime: Any) -> None:
    """Two gateway replicas (two ledgers on one database): each counts in memory and the
    sync brings back the other's requests, so together they respect the limit."""
    from llmflow.gateway.config import Quota
    from llmflow.gateway.usage import QuotaExceeded, UsageLedger

    quota = Quota(requests_per_minute=5, tokens_per_day=None)
    a = UsageLedger(runtime.sessions, sync_interval_s=3600)  # syncs only when told to
    b = UsageLedger(runtime.sessions, sync_interval_s=3600)
    a.start()
    b.start()
    await same_minute_ahead()
    try:
        for _ in range(3):
            await a.check("gw-replicas", quota)
        await a.sync_minutes()
        await b.check("gw-replicas", quota)  # b has not heard of a yet: admitted (4 in all)
        await b.sync_minutes()  # b learns the total
        await b.check("gw-replicas", quota)  # 5
        with pytest.raises(QuotaExceeded):
            await b.check("gw-replicas", quota)
        await b.sync_minutes()
        await a.sync_minutes()
        with pytest.raises(QuotaExceeded):
            await a.check("gw-replicas", quota)  # a now knows about b's requests too
    finally:
        await a.close()
        await b.close()


async def test_requests_during_a_sync_still_count(runtime: Any) -> None:
    """A sync takes the pending counts before its database round trip; requests checked
    while it waits must still see them (found when faster calls fitted three requests into
    one round trip and a limit of 2 admitted all three)."""
    from llmflow.gateway.config import Quota
    from llmflow.gateway.usage import QuotaExceeded, UsageLedger

    quota = Quota(requests_per_minute=2, tokens_per_day=None)
    ledger = UsageLedger(runtime.sessions, sync_interval_s=3600)
    ledger.start()
    await same_minute_ahead()
    try:
        await ledger.check("gw-sync-race", quota)
        syncing = asyncio.create_task(ledger.sync_minutes())
        await asyncio.sleep(0)  # the sync has taken the pending count and awaits PostgreSQL
        assert not syncing.done()
        await ledger.check("gw-sync-race", quota)  # 2
        with pytest.raises(QuotaExceeded):
            await ledger.check("gw-sync-race", quota)
        await syncing
        with pytest.raises(QuotaExceeded):  # and after it, from the shared counter
            await ledger.check("gw-sync-race", quota)
    finally:
        await ledger.close()


async def test_fast_path_keeps_the_api_contract(api: httpx.AsyncClient, runtime: Any) -> None:
    """The proxy routes skip FastAPI's routing (GatewayFastPath); what FastAPI did for them
    still holds: credential problems, the classification header's validation, the body
    limit, the route's metrics label and the OpenAPI document."""
    from prometheus_client import REGISTRY

    r = await api.post("/v1/chat/completions", json=chat("tiny-chat", "x"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["instance"] == "/v1/chat/completions"
    r = await api.post(
        "/v1/chat/completions", json=chat("tiny-chat", "x"), headers={"Authorization": "Basic x"}
    )
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]

    h = await _key(runtime, "gw-fast")
    bad = {**h, "X-Data-Classification": "top-secret"}
    r = await api.post("/v1/chat/completions", json=chat("tiny-chat", "x"), headers=bad)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == [
        "header",
        "X-Data-Classification",
    ]

    limit = runtime.settings.gateway.max_body_bytes
    big = {**h, "Content-Type": "application/json", "Content-Length": str(limit + 1)}
    r = await api.post("/v1/chat/completions", content=b"{}".ljust(limit + 1), headers=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def served() -> float:
        value = REGISTRY.get_sample_value(
            "llmflow_http_requests_total",
            {"route": "/v1/chat/completions", "method": "POST", "status": "200"},
        )
        return value or 0.0

    before = served()
    r = await api.post("/v1/chat/completions", json=chat("tiny-chat", "x"), headers=h)
    assert r.status_code == 200 and served() == before + 1

    paths = (await api.get("/openapi.json")).json()["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank"):
        assert "post" in paths[path]


async def test_fast_path_answers_an_unexpected_error_with_a_500(
    api: httpx.AsyncClient, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug behind the proxy routes gets a 500 in OpenAI's shape, counted in the request
    metrics, without its message; the error still reaches the server, which logs it."""
    from prometheus_client import REGISTRY

    h = await _key(runtime, "gw-fast-500")
    gateway = await runtime.gateway()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug with a secret in its message")

    monkeypatch.setattr(gateway, "prepare", broken)
    labels = {"route": "/v1/embeddings", "method": "POST", "status": "500"}
    before = REGISTRY.get_sample_value("llmflow_http_requests_total", labels) or 0.0
    app = api._transport.app  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="a bug"):
        await api.post("/v1/embeddings", json={"model": "tiny-embed", "input": "x"}, headers=h)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as c:
        r = await c.post("/v1/embeddings", json={"model": "tiny-embed", "input": "x"}, headers=h)
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error" and "secret" not in r.text
    after = REGISTRY.get_sample_value("llmflow_http_requests_total", labels)
    assert after == before + 2


@pytest.mark.parametrize("client_gone", [False, True], ids=["written", "write failed"])
async def test_a_call_is_accounted_once_its_answer_is_written(
    api: httpx.AsyncClient, runtime: Any, client_gone: bool
) -> None:
    """The request counter, the usage row and the audit event of a successful call come
    after the answer's last byte went out, and still come when writing it failed."""
    from prometheus_client import REGISTRY

    tenant = f"gw-settle-{int(client_gone)}"
    h = await _key(runtime, tenant)
    labels = {"model": "tiny-chat", "tenant": tenant, "status": "200"}

    def counted() -> float:
        return REGISTRY.get_sample_value("llmflow_gateway_requests_total", labels) or 0.0

    body = json.dumps(chat("tiny-chat", "정산 순서")).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "root_path": "", "query_string": b"", "server": ("llmflow.test", 80),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"host", b"llmflow.test"), (b"content-type", b"application/json"),
                    (b"authorization", h["Authorization"].encode())],
    }  # fmt: skip
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    seen: list[tuple[str, float]] = []

    async def receive() -> dict[str, Any]:
        return requests.pop(0) if requests else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        seen.append((message["type"], counted()))
        if client_gone and message["type"] == "http.response.body":
            raise OSError("the client went away")

    app = api._transport.app  # type: ignore[attr-defined]
    if client_gone:
        with pytest.raises(OSError):
            await app(scope, receive, send)
    else:
        await app(scope, receive, send)
    assert [t for t, _ in seen] == ["http.response.start", "http.response.body"]
    assert all(n == 0 for _, n in seen)  # nothing was accounted before the answer went out
    assert counted() == 1
    gateway = await runtime.gateway()
    await gateway.ledger.flush()
    rows = await gateway.ledger.report(tenant, datetime.now(UTC) - timedelta(hours=1))
    assert sum(r["requests"] for r in rows) == 1


def test_fast_route_picks_only_the_proxy_posts() -> None:
    from llmflow.api.routes_gateway import fast_route

    def scope(method: str, path: str, root: str = "", **headers: str) -> dict[str, Any]:
        raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        return {"type": "http", "method": method, "path": path, "root_path": root,
                "headers": raw}  # fmt: skip

    spec = fast_route(scope("POST", "/v1/chat/completions"))
    assert spec is not None and spec.kind == "chat"
    assert fast_route(scope("POST", "/llm/v1/embeddings", "/llm")).kind == "embedding"  # type: ignore[union-attr]
    assert fast_route(scope("GET", "/v1/chat/completions")) is None
    assert fast_route(scope("POST", "/v1/models")) is None
    assert fast_route(scope("POST", "/v1/chat/completions/x")) is None
    ok = scope("POST", "/v1/rerank", x_data_classification="secret")
    assert fast_route(ok) is not None
    # a value outside the four goes to FastAPI, whose validation problem answers it
    assert fast_route(scope("POST", "/v1/rerank", x_data_classification="top-secret")) is None
    assert fast_route({"type": "websocket", "path": "/v1/rerank", "headers": []}) is None


async def test_day_tokens_are_read_in_the_background_once_known(runtime: Any) -> None:
    """Only a tenant's first request waits for the day's counter; later ones go on with the
    last value while an expired one is read again, and the limit follows the new value."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from llmflow.gateway.config import Quota
    from llmflow.gateway.usage import QuotaExceeded, UsageLedger, _day_key

    tenant = "gw-day-tokens"
    quota = Quota(requests_per_minute=None, tokens_per_day=1000)

    async def other_replica_used(n: int) -> None:
        async with runtime.sessions() as session:
            await session.execute(
                text(
                    "INSERT INTO gateway_quota_counters (tenant_id, window_key, value) "
                    "VALUES (:t, :w, :n) ON CONFLICT (tenant_id, window_key) "
                    "DO UPDATE SET value = EXCLUDED.value"
                ),
                {"t": tenant, "w": _day_key(datetime.now(UTC)), "n": n},
            )
            await session.commit()

    await other_replica_used(400)
    ledger = UsageLedger(runtime.sessions, cache_ttl_s=0.2)
    try:
        assert await ledger.tokens_today(tenant) == 400  # the first request reads
        await other_replica_used(1200)
        await ledger.check(tenant, quota)  # cached 400: admitted
        await asyncio.sleep(0.25)  # expired
        assert await ledger.tokens_today(tenant) == 400  # served at once; the read starts
        deadline = asyncio.get_running_loop().time() + 10
        while await ledger.tokens_today(tenant) != 1200:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        with pytest.raises(QuotaExceeded):
            await ledger.check(tenant, quota)
    finally:
        await ledger.close()
