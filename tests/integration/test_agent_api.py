"""The research agent on the real embedded platform: PostgreSQL checkpoints, Milvus Lite
hybrid search, the policy and audit, the gateway's model route (non-streaming and
streaming, parsed by the official openai SDK) and the approval REST API.

The agent's own LLM is ``ScriptedUpstream`` replaying OpenAI's tool-calling contract (no
LLM weights exist on this machine); everything else is the real engine.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from llmflow.agents.config import AgentSettings
from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.scripted import ScriptedUpstream, serve
from llmflow.ingest.pipeline import Upload

pytestmark = pytest.mark.integration

A, B = "agent-a", "agent-b"
MODEL = "llmflow-agent-research"
REGS_A = (
    "# 취업규칙\n\n## 제3조(휴가)\n\n휴가의 종류와 일수는 제5조에 따른다.\n\n"
    "## 제5조(연차휴가)\n\n1년간 80퍼센트 이상 출근한 직원에게 연차휴가 15일을 준다.\n"
)
SECRET_A = "# 임원보수규정\n\n## 제1조(기준)\n\n임원 보수 기준표는 이사회가 매년 정한다.\n"
REGS_B = "# 복무규정\n\n## 제7조(연차휴가)\n\n연차휴가는 입사 첫해 11일로 한다. 비밀표식 BRAVO.\n"


def call(name: str, args: dict[str, Any], cid: str) -> dict[str, Any]:
    arguments = json.dumps(args, ensure_ascii=False)
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedUpstream]:
    with serve(ScriptedUpstream("agent-llm")) as upstream:
        yield upstream


def script(upstream: ScriptedUpstream, *turns: dict[str, Any]) -> None:
    queue = list(turns)
    upstream.requests.clear()
    upstream.chat_script = lambda body: queue.pop(0)


async def _ingest(rt: Any, tenant: str, kb: str, name: str, text: str, cls: str) -> None:
    await rt.knowledge_bases.create(tenant, kb, exist_ok=True, classification=cls)
    jobs = await rt.ingest.submit(tenant, kb, [Upload(name, text.encode())])
    await rt.jobs.drain()
    (job,) = await rt.ingest.jobs(tenant, [jobs[0]["job_id"]])
    assert job["status"] == "succeeded", job


@pytest.fixture(scope="module")
async def api(runtime: Any, llm: ScriptedUpstream) -> AsyncIterator[httpx.AsyncClient]:
    from llmflow.api.app import create_app

    saved = runtime.settings.gateway, runtime.settings.agents
    runtime.settings.gateway = GatewaySettings.model_validate(
        {"models": [{"name": MODEL, "provider": "agent", "handler": "research"}]}
    )
    runtime.settings.agents = AgentSettings(
        llm_base_url=llm.url + "/v1",
        llm_model="tiny-chat",
        tools_public_url="https://llmflow.corp.example/api",
        sensitive_tools=[{"name": "hybrid_search", "classifications": ["confidential"]}],
    )
    for name in ("gateway", "agents"):
        old = runtime._cache.pop(name, None)
        if old is not None:
            await old.close()
    await _ingest(runtime, A, "regs", "rules.md", REGS_A, "internal")
    await _ingest(runtime, A, "hr-secret", "pay.md", SECRET_A, "confidential")
    await _ingest(runtime, B, "regs", "duty.md", REGS_B, "internal")
    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as c:
            yield c
    finally:
        for name in ("gateway", "agents"):
            old = runtime._cache.pop(name, None)
            if old is not None:
                await old.close()
        runtime.settings.gateway, runtime.settings.agents = saved


async def _key(runtime: Any, tenant: str, kbs: list[str] | None = None) -> str:
    issued = await runtime.api_keys.create(tenant, kbs, name="agent", roles=["model", "reader"])
    return str(issued.key)


def _sdk(api: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    """The official client over the app in-process: it parses what Dify's provider parses."""
    return openai.AsyncOpenAI(base_url="http://llmflow.test/v1", api_key=key, http_client=api)


def _tool_results(upstream: ScriptedUpstream) -> list[dict[str, Any]]:
    bodies = [b for p, b in upstream.requests if p == "/v1/chat/completions"]
    return [json.loads(m["content"]) for b in bodies for m in b["messages"] if m["role"] == "tool"]


async def test_agent_model_answers_with_citations(
    api: httpx.AsyncClient, runtime: Any, llm: ScriptedUpstream
) -> None:
    key = await _key(runtime, A, ["regs"])
    script(
        llm,
        {"content": None, "tool_calls": [call("hybrid_search", {"query": "연차휴가 일수"}, "c1")]},
        {"content": "연차휴가는 15일입니다 (취업규칙 제5조)."},
    )
    completion = await _sdk(api, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "연차휴가는 며칠인가요?"}]
    )
    assert completion.object == "chat.completion" and completion.model == MODEL
    assert completion.choices[0].message.content == "연차휴가는 15일입니다 (취업규칙 제5조)."
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extras = (completion.model_extra or {})["llmflow"]
    assert extras["status"] == "completed" and extras["knowledge_bases"] == ["regs"]
    assert extras["citations"] and {c["knowledge_base"] for c in extras["citations"]} == {"regs"}
    assert all(c["document_id"] and c["chunk_id"] for c in extras["citations"])
    (result,) = _tool_results(llm)
    texts = " ".join(r["text"] for r in result["results"])
    assert "15일" in texts and "BRAVO" not in texts  # the caller's tenant only
    usage = (await api.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})).json()
    assert [(r["model"], r["requests"]) for r in usage] == [(MODEL, 1)]  # the gateway's ledger


async def test_agent_model_streams(
    api: httpx.AsyncClient, runtime: Any, llm: ScriptedUpstream
) -> None:
    key = await _key(runtime, A, ["regs"])
    answer = "제3조는 휴가 일수를 제5조에 맡기고, 제5조는 연차휴가 15일을 정합니다."
    script(
        llm,
        {"content": None, "tool_calls": [call("hybrid_search", {"query": "제3조 휴가"}, "s1")]},
        {"content": answer},
    )
    stream = await _sdk(api, key).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "휴가 규정을 설명해 줘"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    (final,) = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert (final.model_extra or {})["llmflow"]["citations"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


async def test_approval_pauses_and_resumes_from_postgres(
    api: httpx.AsyncClient, runtime: Any, llm: ScriptedUpstream
) -> None:
    key = await _key(runtime, A)  # every KB of the tenant, hr-secret (confidential) included
    h = {"Authorization": f"Bearer {key}"}
    script(
        llm,
        {"content": None, "tool_calls": [call(
            "hybrid_search", {"query": "임원 보수", "knowledge_bases": ["hr-secret"]}, "p1")]},
        {"content": "임원 보수 기준표는 이사회가 매년 정합니다."},
    )  # fmt: skip
    r = await api.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "임원 보수 기준은?"}]},
        headers=h,
    )
    assert r.status_code == 200, r.text
    extras = r.json()["llmflow"]
    thread = extras["thread_id"]
    assert extras["status"] == "awaiting_approval"
    assert extras["pending"][0]["tool"] == "hybrid_search"
    assert thread in r.json()["choices"][0]["message"]["content"]
    assert _tool_results(llm) == []  # nothing was searched before the decision

    # a fresh agent (new pool, new AsyncPostgresSaver) picks the thread up from PostgreSQL
    await _drop_agents(runtime)

    other = {"Authorization": f"Bearer {await _key(runtime, B)}"}
    path = f"/v1/agents/research/threads/{thread}"
    assert (await api.get(path, headers=other)).status_code == 404  # not another tenant's
    r = await api.post(path + "/resume", json={"approve": True}, headers=other)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"

    waiting = (await api.get(path, headers=h)).json()
    assert waiting["status"] == "awaiting_approval"
    r = await api.post(path + "/resume", json={"approve": True, "comment": "ok"}, headers=h)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "completed"
    assert done["answer"] == "임원 보수 기준표는 이사회가 매년 정합니다."
    assert {c["knowledge_base"] for c in done["citations"]} == {"hr-secret"}
    (result,) = _tool_results(llm)
    assert "이사회" in result["results"][0]["text"]
    r = await api.post(path + "/resume", json={"approve": True}, headers=h)
    assert r.status_code == 409  # nothing waits any more
    assert (await api.get(path, headers=h)).json()["status"] == "completed"
    assert (await api.delete(path, headers=other)).status_code == 404
    assert (await api.delete(path, headers=h)).status_code == 204
    assert (await api.get(path, headers=h)).status_code == 404  # gone from PostgreSQL


async def test_agent_tools_never_cross_tenants(
    api: httpx.AsyncClient, runtime: Any, llm: ScriptedUpstream
) -> None:
    key_b = await _key(runtime, B)
    script(
        llm,
        {"content": None, "tool_calls": [
            call("hybrid_search", {"query": "연차휴가"}, "x1"),
            call("hybrid_search", {"query": "임원 보수", "knowledge_bases": ["hr-secret"]}, "x2"),
        ]},
        {"content": "입사 첫해 연차휴가는 11일입니다."},
    )  # fmt: skip
    r = await api.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "연차휴가?"}]},
        headers={"Authorization": f"Bearer {key_b}"},
    )
    assert r.status_code == 200, r.text
    found, refused = _tool_results(llm)
    texts = " ".join(x["text"] for x in found["results"])
    assert "BRAVO" in texts and "15일" not in texts
    assert "not available to this run" in refused["error"]  # agent-a's KB is no KB of agent-b
    r = await api.post(
        "/v1/chat/completions",
        json={"model": MODEL, "knowledge_bases": ["hr-secret"],
              "messages": [{"role": "user", "content": "q"}]},
        headers={"Authorization": f"Bearer {key_b}"},
    )  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = await api.post(  # streaming too: refused before the stream starts, as JSON
        "/v1/chat/completions",
        json={"model": MODEL, "knowledge_bases": ["hr-secret"], "stream": True,
              "messages": [{"role": "user", "content": "q"}]},
        headers={"Authorization": f"Bearer {key_b}"},
    )  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


async def _drop_agents(runtime: Any) -> None:
    old = runtime._cache.pop("agents", None)
    if old is not None:
        await old.close()


async def test_agent_without_llm_is_an_explicit_503(api: httpx.AsyncClient, runtime: Any) -> None:
    saved = runtime.settings.agents
    runtime.settings.agents = saved.model_copy(update={"llm_base_url": None})
    await _drop_agents(runtime)
    try:
        r = await api.post(
            "/v1/agents/research/runs",
            json={"messages": [{"role": "user", "content": "q"}]},
            headers={"Authorization": f"Bearer {await _key(runtime, A)}"},
        )
        assert r.status_code == 503, r.text
        assert "llm_base_url" in r.json()["detail"]
    finally:
        runtime.settings.agents = saved
        await _drop_agents(runtime)


async def test_pii_guard_applies_to_the_agent_model(
    api: httpx.AsyncClient, runtime: Any, llm: ScriptedUpstream
) -> None:
    """The question reaches the agent pseudonymised (as it would reach any model), and the
    answer comes back with the name restored."""
    key = await _key(runtime, A, ["regs"])
    script(
        llm,
        {"content": None, "tool_calls": [call("hybrid_search", {"query": "연차휴가"}, "p1")]},
        {"content": "<PERSON_1> 과장의 연차휴가는 15일입니다."},
    )
    r = await api.post(
        "/v1/chat/completions",
        json={"model": MODEL,
              "messages": [{"role": "user", "content": "김도현 과장의 연차휴가는 며칠이야?"}]},
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    first = next(b for p, b in llm.requests if p == "/v1/chat/completions")
    seen = first["messages"][-1]["content"]
    assert "김도현" not in seen and "<PERSON_1>" in seen
    assert r.json()["choices"][0]["message"]["content"] == "김도현 과장의 연차휴가는 15일입니다."
